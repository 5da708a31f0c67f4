"""The Gaussian mixture: TraceEnum_ELBO sums the assignment out exactly, log p stays the summed-out
density, every guide kind leaves the enumerated site alone, training finds the clusters."""

from __future__ import annotations

import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

from lightning_svi.core.estimators import build_estimator, summed_out_log_density
from lightning_svi.models.gmm import GaussianMixture
from tests.conftest import guide_of_kind, read_histogram_tags, read_scalars

NUM_POINTS = 7


@pytest.fixture
def tiny() -> tuple[GaussianMixture, dict[str, torch.Tensor]]:
    pyro.settings.set(module_local_params=True)
    pyro.set_rng_seed(0)
    data = GaussianMixture.synthetic_data(seed=0, num_points=NUM_POINTS)
    return GaussianMixture(NUM_POINTS), {"index": torch.arange(NUM_POINTS), **data}


def hand_summed_elbo(model: GaussianMixture, guide, batch: dict, weights, locs, scale) -> torch.Tensor:
    """log p(w, μ, σ) + Σ_i logsumexp_k [log w_k + log N(x_i; μ_k, σ)] − log q(w, μ, σ), written out."""
    log_prior = (
        dist.Dirichlet(torch.ones(3)).log_prob(weights)
        + dist.Normal(0.0, model.prior_scale).log_prob(locs).sum()
        + dist.LogNormal(0.0, 2.0).log_prob(scale)
    )
    per_component = weights.log() + dist.Normal(locs, scale).log_prob(batch["x"][:, None])
    log_likelihood = torch.logsumexp(per_component, dim=-1).sum()
    log_q = (
        dist.Dirichlet(guide.weights_concentration).log_prob(weights)
        + dist.Normal(guide.locs_loc, guide.locs_scale).log_prob(locs).sum()
        + dist.LogNormal(guide.scale_loc, guide.scale_scale).log_prob(scale)
    )
    return log_prior + log_likelihood - log_q


def test_trace_enum_loss_equals_the_assignment_summed_out_by_hand(tiny: tuple) -> None:
    model, batch = tiny
    guide = model.full_guide()
    estimator = build_estimator("TraceEnum_ELBO", num_particles=1)
    loss = estimator(model, guide)(batch)
    guide_trace = estimator.last_traces.pairs[0][1]
    weights, locs, scale = (guide_trace.nodes[name]["value"] for name in ("weights", "locs", "scale"))
    expected = hand_summed_elbo(model, guide, batch, weights, locs, scale)
    assert (-loss).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(("num_particles", "vectorize"), [(1, False), (3, False), (3, True)])
def test_log_p_is_the_summed_out_density_so_the_elbo_identity_holds(
    tiny: tuple, num_particles: int, vectorize: bool
) -> None:
    model, batch = tiny
    estimator = build_estimator("TraceEnum_ELBO", num_particles=num_particles, vectorize_particles=vectorize)
    loss = estimator(model, model.full_guide())(batch)
    traces = estimator.last_traces
    assert (-loss).item() == pytest.approx((traces.log_p - traces.log_q).item(), rel=1e-5)
    assert set(traces.log_p_sites) == {"weights", "locs", "scale", "marginal(assignment,x)"}
    # The naive log_prob_sum of the enumerated trace sums over all 3 values of every assignment.
    naive = sum(pair[0].log_prob_sum().item() for pair in traces.pairs) / num_particles
    assert naive < traces.log_p.item() - 10
    # One posterior sample of the assignments: log p(x, a) per site, finite and below log p(x).
    sampled = traces.log_p_sampled_sites
    assert set(sampled) == {"assignment", "x"}
    assert all(math.isfinite(value.item()) for value in sampled.values())
    assert (sampled["assignment"] + sampled["x"]).item() <= traces.log_p_sites["marginal(assignment,x)"].item() + 1e-4


def test_marginal_term_is_the_summed_out_likelihood_with_or_without_the_loss_cache(tiny: tuple) -> None:
    """The summed-out term reuses the loss's contraction cache; it is Σ_i logsumexp_k [log w_k + log N(x_i; μ_k, σ)]
    at the step's guide sample, the same number when contracted afresh."""
    model, batch = tiny
    estimator = build_estimator("TraceEnum_ELBO", num_particles=1)
    estimator(model, model.full_guide())(batch)
    model_trace, guide_trace = estimator.last_traces.pairs[0]
    weights, locs, scale = (guide_trace.nodes[name]["value"] for name in ("weights", "locs", "scale"))
    by_hand = torch.logsumexp(weights.log() + dist.Normal(locs, scale).log_prob(batch["x"][:, None]), dim=-1).sum()
    cached = estimator.last_traces.log_p_sites["marginal(assignment,x)"]
    assert cached.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert not cached.requires_grad
    del model_trace._sharing_cache
    names, afresh = summed_out_log_density(model_trace, guide_trace)
    assert names == ["assignment", "x"]
    assert afresh.item() == pytest.approx(cached.item(), rel=1e-6)


@pytest.mark.parametrize(("num_particles", "vectorize"), [(1, False), (3, False), (3, True)])
def test_the_marginal_term_is_what_the_loss_leaves_the_contraction_s_number_uncontracted(
    tiny: tuple, num_particles: int, vectorize: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a minibatch (scaled by 7/4) and over particles, −loss + log q − the other sites' terms is the
    contraction's number, with the same sites named, and logging contracts nothing."""
    import lightning_svi.core.estimators as estimators

    model, batch = tiny
    minibatch = {name: column[:4] for name, column in batch.items()}
    estimator = build_estimator("TraceEnum_ELBO", num_particles=num_particles, vectorize_particles=vectorize)
    estimator(model, guide_of_kind("normal", model))(minibatch)
    traces = estimator.last_traces
    contracted = estimators.StepTraces(traces.pairs, num_particles).log_p_sites  # without the loss: contracted
    monkeypatch.setattr(estimators, "summed_out_log_density", None)  # any contraction now fails
    assert list(traces.log_p_sites) == list(contracted) == ["marginal(assignment,x)", "weights", "locs", "scale"]
    for site, value in contracted.items():
        assert traces.log_p_sites[site].item() == pytest.approx(value.item(), rel=1e-5), site
    assert set(traces.log_p_sampled_sites) == {"assignment", "x"}


@pytest.mark.parametrize("kind", ["full", "delta", "normal", "diag_normal"])
def test_every_guide_leaves_the_enumerated_site_out(tiny: tuple, kind: str) -> None:
    model, batch = tiny
    guide = guide_of_kind(kind, model)
    estimator = build_estimator("TraceEnum_ELBO")
    loss = estimator(model, guide)(batch)
    assert math.isfinite(loss.item())
    guide_sites = set(estimator.last_traces.log_q_sites)
    assert {"weights", "locs", "scale"} <= guide_sites  # autoguides add auxiliary sites beside these
    assert "assignment" not in guide_sites


def test_the_posterior_draw_is_logged_past_each_multiple_of_its_interval_and_at_the_end(
    train_in_process, tmp_path: Path
) -> None:
    run = ["model=gmm", "data.synthetic={num_points: 20}", "trainer.max_steps=47", "trainer.log_every_n_steps=3"]
    train_in_process(*run, "tensorboard.sampled_every_n_steps=10", run_dir=tmp_path / "run")
    scalars = read_scalars(tmp_path / "run")
    assert [step for step, _ in scalars["trace/log_p/marginal(assignment,x)"]] == [1, *range(3, 46, 3), 47]
    for tag in ("trace/log_p_sampled/assignment", "trace/log_p_sampled/x"):
        assert [step for step, _ in scalars[tag]] == [1, 12, 21, 30, 42, 47], tag


@pytest.mark.slow
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_training_recovers_the_clusters_and_saves_assignment_probabilities(
    train_in_process, tmp_path: Path, compiled: bool
) -> None:
    # Compiled, the enumerated sum over assignments is part of the inductor graph (see graph_passes).
    compile_option = ["compile.enabled=true"] if compiled else []
    summary = train_in_process(
        "model=gmm",
        "trainer.max_steps=600",
        "data.synthetic={num_points: 150}",
        "tensorboard.sampled_every_n_steps=1",  # a posterior draw on every logging step
        *compile_option,
    )
    assert summary["status"] == "completed"
    locs = sorted(summary["posterior"]["locs"]["mean"])
    assert locs == pytest.approx([-5.0, 0.0, 5.0], abs=0.4)
    probs = torch.tensor(summary["posterior"]["assignment"]["probs"])
    assert probs.shape == (150, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(150), atol=1e-4)
    # Each point is assigned to the component nearest to it, confidently.
    data = GaussianMixture.synthetic_data(seed=0, num_points=150)["x"]
    nearest = (data[:, None] - torch.tensor(summary["posterior"]["locs"]["mean"])).abs().argmin(-1)
    assert (probs.argmax(-1) == nearest).float().mean() > 0.95
    scalars = read_scalars(tmp_path / "run")
    elbo, log_p, log_q = (dict(scalars[tag]) for tag in ("train/elbo", "trace/log_p", "trace/log_q"))
    for step, value in elbo.items():
        assert value == pytest.approx(log_p[step] - log_q[step], rel=1e-4, abs=1e-2)
    assert {"trace/log_p/marginal(assignment,x)", "trace/log_p_sampled/assignment", "trace/log_p_sampled/x"} <= set(
        scalars
    )
    # At a posterior sample a of the assignments, log p(x, a) ≤ log Σ_a p(x, a), per particle and so on
    # average. Eager, both come from the step's guide sample; compiled, the sampled terms come from a
    # fresh one after the update, so they only sit close to the summed-out density once q settles.
    marginal = dict(scalars["trace/log_p/marginal(assignment,x)"])
    sampled_assignment, sampled_x = (
        dict(scalars["trace/log_p_sampled/assignment"]),
        dict(scalars["trace/log_p_sampled/x"]),
    )
    gaps = [sampled_assignment[step] + sampled_x[step] - marginal[step] for step in sorted(marginal)]
    assert all(math.isfinite(gap) for gap in gaps)
    if compiled:
        assert all(-15.0 < gap < 5.0 for gap in gaps[-10:]), gaps[-10:]
    else:
        assert max(gaps) <= 1e-3, max(gaps)
    # The guide's 3-vectors are charted element by element, without histograms.
    assert {"phi/locs_loc/0", "phi/locs_loc/2", "phi/weights_concentration/1"} <= set(scalars)
    assert read_histogram_tags(tmp_path / "run") == set()


def test_the_inverse_cdf_draw_has_the_categorical_probabilities() -> None:
    """The logging-only sampler that stands in for Pyro's Categorical in its backward sampler."""
    from lightning_svi.core.estimators import InverseCdfCategorical

    torch.manual_seed(0)
    logits = torch.tensor([[0.0, 1.0, 2.0, -math.inf], [5.0, 5.0, -1.0, 0.0]])
    draws = InverseCdfCategorical(logits.expand(100_000, 2, 4)).sample()
    assert draws.shape == (100_000, 2) and draws.dtype == torch.int64
    for row in range(2):
        frequencies = torch.bincount(draws[:, row], minlength=4).float() / 100_000
        assert frequencies == pytest.approx(logits[row].softmax(-1).tolist(), abs=0.005)
    assert not (draws[:, 0] == 3).any()  # a category of weight zero is never drawn


def test_a_long_summed_out_block_is_tagged_by_its_ends_and_size() -> None:
    from lightning_svi.core.estimators import marginal_site_name

    assert marginal_site_name(["assignment", "x"]) == "marginal(assignment,x)"
    chain = [f"x_{t}" for t in range(150)]  # an HMM's chain: one site per time step
    assert marginal_site_name(chain) == "marginal(x_0..x_149, 150 sites)"
