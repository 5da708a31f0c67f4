"""The importance-weighted evidence, k̂ and ESS (``analysis/importance.py``) against closed forms and Pyro's ELBO,
and in ``summary.json`` and TensorBoard for the built-in and users' models."""

from __future__ import annotations

import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from torch.distributions import transform_to

from lightning_svi.analysis.importance import NotADensity, importance_estimate, khat_reading, psis_khat
from lightning_svi.core.guides import EmptyGuide
from lightning_svi.models.beta_binomial import BetaBinomial
from lightning_svi.models.coin import Coin
from lightning_svi.models.eight_schools import EightSchools
from lightning_svi.models.gmm import GaussianMixture
from tests.conftest import exact_beta_binomial_guide, guide_of_kind, read_scalars

pytestmark = pytest.mark.usefixtures("one_torch_thread", "module_local_params")


def with_index(data: dict) -> dict:
    rows = len(next(iter(data.values())))
    return {**data, "index": torch.arange(rows)}


def set_positive(parameter: torch.nn.Parameter, value: torch.Tensor) -> None:
    with torch.no_grad():
        parameter.copy_(transform_to(constraints.positive).inv(torch.as_tensor(value, dtype=parameter.dtype)))


def beta_binomial_off_posterior() -> tuple[BetaBinomial, torch.nn.Module, dict]:
    """The beta-binomial at its synthetic θ with a guide near (not at) the exact posterior: weights that vary."""
    data = with_index(BetaBinomial.synthetic_data(0, num_groups=10))
    model = BetaBinomial(10, alpha_init=2.0, beta_init=6.0)
    guide = exact_beta_binomial_guide(model, data)
    posterior = model.exact_posterior(data)["rate"]
    set_positive(guide.qa_unconstrained, posterior.concentration1 * 0.8)
    set_positive(guide.qb_unconstrained, posterior.concentration0 * 0.8)
    return model, guide, data


def coin_with_guide(heads: float, tails: float) -> tuple[Coin, torch.nn.Module, dict]:
    data = with_index(Coin.synthetic_data(0))
    model = Coin(len(data["flip"]))
    guide = model.full_guide()
    set_positive(guide.qa_unconstrained, torch.tensor(heads))
    set_positive(guide.qb_unconstrained, torch.tensor(tails))
    return model, guide, data


def pyro_elbo(model, guide, data, estimator=pyro.infer.Trace_ELBO, particles: int = 4000, **options) -> float:
    """Pyro's own ELBO estimate of the pair, vectorized over ``particles`` independent draws."""
    with torch.no_grad():
        loss = estimator(num_particles=particles, vectorize_particles=True, **options).loss(model, guide, data)
    return -loss


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beta_binomial_iwae_with_1000_particles_is_within_3_se_of_the_exact_evidence(seed: int) -> None:
    model, guide, data = beta_binomial_off_posterior()
    torch.manual_seed(seed)
    estimate = importance_estimate(model, guide, data, num_particles=1000)
    exact = float(model.log_evidence(data))
    assert estimate.num_particles == 1000
    assert estimate.log_evidence_se > 0.005  # the guide is off: the weights vary, the test can fail
    assert abs(estimate.log_evidence - exact) < 3 * estimate.log_evidence_se
    # Its ELBO is Pyro's (the mean log weight), and the bound is above it: the gap estimates KL(q || p).
    assert estimate.elbo == pytest.approx(pyro_elbo(model, guide, data), abs=4 * estimate.elbo_se)
    assert estimate.log_evidence > pyro_elbo(model, guide, data) + 0.1
    assert estimate.gap == pytest.approx(exact - pyro_elbo(model, guide, data), abs=3 * estimate.gap_se)


def test_coin_iwae_is_within_3_se_of_the_exact_evidence_above_the_elbo_and_khat_is_good() -> None:
    model, guide, data = coin_with_guide(12.0, 11.0)  # near the posterior Beta(16, 14), wider
    exact = float(model.log_evidence(data))
    estimates = []
    for seed in range(5):
        torch.manual_seed(seed)
        estimates.append(importance_estimate(model, guide, data, num_particles=1000))
    for estimate in estimates:
        assert abs(estimate.log_evidence - exact) < 3 * estimate.log_evidence_se
    average = sum(estimate.log_evidence for estimate in estimates) / len(estimates)
    assert average > pyro_elbo(model, guide, data) + 0.01
    assert max(estimate.khat for estimate in estimates) < 0.5
    assert {estimate.reading for estimate in estimates} == {"good"}
    assert all(500 < estimate.ess <= 1000 for estimate in estimates)


def test_the_estimate_approaches_the_exact_evidence_as_particles_grow() -> None:
    model, guide, data = beta_binomial_off_posterior()
    exact = float(model.log_evidence(data))
    errors = {}
    for particles in (10, 10_000):
        torch.manual_seed(0)
        runs = [importance_estimate(model, guide, data, num_particles=particles).log_evidence for _ in range(5)]
        errors[particles] = sum(abs(value - exact) for value in runs) / len(runs)
    assert errors[10_000] < errors[10] / 3
    assert errors[10_000] < 0.05


def test_chunks_give_the_same_kind_of_estimate_as_one_pass() -> None:
    model, guide, data = beta_binomial_off_posterior()
    torch.manual_seed(0)
    chunked = importance_estimate(model, guide, data, num_particles=1000, max_chunk=64)
    assert chunked.num_particles == 1000
    assert abs(chunked.log_evidence - float(model.log_evidence(data))) < 3 * chunked.log_evidence_se


def test_the_enumerated_mixture_sums_its_assignments_out_as_traceenum_elbo_does() -> None:
    data = with_index(GaussianMixture.synthetic_data(0, num_points=60))
    model = GaussianMixture(60)
    guide = model.full_guide()
    torch.manual_seed(0)
    estimate = importance_estimate(model, guide, data, num_particles=2000)
    expected = pyro_elbo(model, guide, data, pyro.infer.TraceEnum_ELBO, max_plate_nesting=1)
    assert estimate.elbo == pytest.approx(expected, abs=4 * estimate.elbo_se + 0.5)
    assert estimate.log_evidence >= estimate.elbo


def test_the_empty_guide_weighs_prior_draws_by_their_likelihood() -> None:
    data = with_index(Coin.synthetic_data(0))
    model = Coin(len(data["flip"]))
    torch.manual_seed(0)
    estimate = importance_estimate(model, EmptyGuide(), data, num_particles=2000)
    assert "proposal is the prior" in estimate.note
    assert abs(estimate.log_evidence - float(model.log_evidence(data))) < 3 * estimate.log_evidence_se


def test_a_point_mass_guide_has_no_importance_weights() -> None:
    model, _, data = coin_with_guide(1.0, 1.0)
    with pytest.raises(NotADensity, match="point mass at fairness"):
        importance_estimate(model, guide_of_kind("delta", model), data, num_particles=100)


def test_a_guide_that_enumerates_has_no_importance_weights() -> None:
    def model(batch):
        pyro.sample("switch", dist.Bernoulli(0.5))

    def guide(batch):
        pyro.sample("switch", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})

    with pytest.raises(NotADensity, match="the guide enumerates switch"):
        importance_estimate(model, guide, {"x": torch.zeros(1)}, num_particles=100)


def test_a_model_that_does_not_broadcast_over_draws_is_weighed_one_draw_at_a_time() -> None:
    def model(batch):
        weight = pyro.sample("weight", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("rows", len(batch["y"])):
            pyro.sample("y", dist.Normal(batch["x"] @ weight, 1.0), obs=batch["y"])  # 1-D weight only

    def guide(batch):
        pyro.sample("weight", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    data = {"x": torch.randn(5, 2), "y": torch.randn(5)}
    estimate = importance_estimate(model, guide, data, num_particles=1000)
    assert estimate.num_particles == 200  # SEQUENTIAL_PARTICLES
    # The guide is the prior here: the closed-form evidence of the Bayesian linear regression.
    covariance = data["x"] @ data["x"].T + torch.eye(5)
    exact = float(dist.MultivariateNormal(torch.zeros(5), covariance).log_prob(data["y"]))
    assert abs(estimate.log_evidence - exact) < 4 * estimate.log_evidence_se + 0.05


def test_khat_of_weights_with_a_heavy_tail() -> None:
    generator = torch.Generator().manual_seed(0)
    light = torch.randn(4000, generator=generator) * 0.1  # near-equal weights
    pareto = torch.distributions.Pareto(1.0, 1 / 0.9).sample((4000,)).log()  # tail index 0.9
    assert psis_khat(light) < 0.5
    assert psis_khat(pareto) == pytest.approx(0.9, abs=0.15)
    assert [khat_reading(value) for value in (0.3, 0.6, 0.9, math.nan)] == [
        "good",
        "usable",
        "guide misses posterior mass",
        None,
    ]


def fit(model, guide, data, steps: int, lr: float = 0.03) -> None:
    optimizer = pyro.optim.Adam({"lr": lr})
    svi = pyro.infer.SVI(model, guide, optimizer, pyro.infer.Trace_ELBO())
    for _ in range(steps):
        svi.step(data)


@pytest.mark.slow
def test_eight_schools_mean_field_misses_the_centred_funnel_more_than_the_non_centred_posterior() -> None:
    khat = {}
    for parameterization in ("centered", "non_centered"):
        pyro.set_rng_seed(0)
        data = with_index(EightSchools.synthetic_data(0))
        model = EightSchools(8, parameterization)
        guide = model.full_guide()
        fit(model, guide, data, steps=3000)
        khat[parameterization] = importance_estimate(model, guide, data, num_particles=4000).khat
    assert khat["centered"] > 0.7
    assert khat["non_centered"] < khat["centered"]


def test_every_run_writes_iw_evidence_khat_and_ess_to_summary_and_tensorboard(train_in_process, tmp_path) -> None:
    summary = train_in_process(
        "trainer.max_steps=300", "diagnostics.every_n_steps=100", "tensorboard.image_every_n_steps=null"
    )
    final, diagnostics = summary["final"], summary["diagnostics"]
    assert {"loss", "elbo", "log_evidence", "gap"} <= set(final)  # the closed form stays beside it
    # 300 steps: a guide still far from the posterior, so the bound sits between its ELBO and the evidence.
    assert diagnostics["elbo"] < final["iw_log_evidence"] < final["log_evidence"] + 3 * final["iw_log_evidence_se"]
    assert final["iw_gap"] == pytest.approx(final["iw_log_evidence"] - diagnostics["elbo"])
    assert final["iw_gap_se"] > 0
    assert diagnostics["num_particles"] == 1000
    assert diagnostics["reading"] == khat_reading(diagnostics["psis_khat"])
    assert 0 < diagnostics["ess"] <= 1000
    scalars = read_scalars(tmp_path / "run")
    assert [step for step, _ in scalars["evidence/iw_log_evidence"]] == [100, 200, 300]
    assert {"evidence/iw_log_evidence_se", "diagnostics/psis_khat", "diagnostics/ess"} <= set(scalars)


def test_diagnostics_leave_the_training_samples_unchanged(train_in_process, tmp_path) -> None:
    steps = ["trainer.max_steps=60", "tensorboard.image_every_n_steps=null", "steps_per_batch=1"]
    plain = train_in_process(*steps, "callbacks.diagnostics=null", run_dir=tmp_path / "plain")
    logged = train_in_process(*steps, "diagnostics.every_n_steps=7", run_dir=tmp_path / "logged")
    assert "diagnostics" not in plain and "iw_log_evidence" not in plain["final"]
    assert logged["theta"] == plain["theta"] and logged["phi"] == plain["phi"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (("guide=delta",), "point mass"),
        (("guide=empty",), "proposal is the prior"),
    ],
)
def test_a_guide_without_usable_weights_says_why_in_the_summary(train_in_process, overrides, reason) -> None:
    summary = train_in_process("trainer.max_steps=20", "tensorboard.image_every_n_steps=null", *overrides)
    assert summary["status"] == "completed"
    diagnostics = summary["diagnostics"]
    assert reason in diagnostics.get("skipped", diagnostics.get("note", ""))
    if "skipped" in diagnostics:
        assert summary["final"]["iw_log_evidence"] is None and summary["final"]["iw_gap"] is None


def test_the_mixture_gets_an_iw_evidence_where_no_closed_form_exists(train_in_process) -> None:
    summary = train_in_process("model=gmm", "trainer.max_steps=100", "tensorboard.image_every_n_steps=null")
    assert summary["final"]["log_evidence"] is None
    assert math.isfinite(summary["final"]["iw_log_evidence"]) and math.isfinite(summary["final"]["iw_gap"])
    assert summary["diagnostics"]["psis_khat"] is not None


def train_tutorial(name: str, tmp_path: Path, steps: int, *overrides: str) -> dict:
    """A Pyro tutorial's unchanged model and guide (``tests/pyro_models``) trained as a user would, from YAML."""
    from lightning_svi.training.run import train
    from tests.conftest import REPO, compose_config
    from tests.pyro_models.make_files import write_file
    from tests.pyro_models.reference import overrides as reference_overrides

    data = write_file(name, tmp_path / "data", seed=0)
    cfg = compose_config(
        f"hydra.searchpath=[file://{REPO / 'tests' / 'pyro_models' / 'conf'}]",
        f"model=pyro_{name}",
        f"guide=pyro_{name}",
        *reference_overrides(name, steps),
        "data=file",
        f"data.path={data}",
        "tensorboard.image_every_n_steps=null",
        *overrides,
    )
    return train(cfg, tmp_path / "run")


@pytest.mark.parametrize(
    ("name", "particles"),
    [("coin", 1000), ("regression", 200)],  # the regression's nn.Linear does not broadcast: one draw at a time
)
def test_a_users_pyro_program_gets_iw_evidence_gap_and_khat(tmp_path: Path, name: str, particles: int) -> None:
    summary = train_tutorial(name, tmp_path, 200)
    final, diagnostics = summary["final"], summary["diagnostics"]
    assert final["log_evidence"] is None  # no closed form for a user's program
    assert math.isfinite(final["iw_log_evidence"]) and math.isfinite(final["iw_gap"]) and final["iw_gap"] >= 0
    assert diagnostics["num_particles"] == particles and diagnostics["psis_khat"] is not None
    scalars = read_scalars(tmp_path / "run")
    assert scalars["evidence/iw_log_evidence"][-1] == (200, pytest.approx(final["iw_log_evidence"], rel=1e-6))
    assert "diagnostics/psis_khat" in scalars


USER_PROGRAM = """
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints


def model(count):
    rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
    with pyro.plate("data", len(count)):
        pyro.sample("count", dist.Poisson(rate), obs=count)


def guide(count):
    shape = pyro.param("q_shape", torch.tensor(1.0), constraint=constraints.positive)
    rate = pyro.param("q_rate", torch.tensor(1.0), constraint=constraints.positive)
    pyro.sample("rate", dist.Gamma(shape, rate))
"""


def test_a_minibatched_users_program_is_weighed_on_the_full_data_unscaled(tmp_path: Path, monkeypatch) -> None:
    """A user's functions, trained on batches of 10 of 40 rows: their minibatch scale (40/10) must not enter the
    weights, which are of all 40 rows at once, so the estimate meets the Poisson-Gamma evidence."""
    from lightning_svi.training.run import train
    from tests.conftest import compose_config

    (tmp_path / "poisson_user.py").write_text(USER_PROGRAM)
    monkeypatch.syspath_prepend(str(tmp_path))
    counts = torch.poisson(torch.full((40,), 4.0), generator=torch.Generator().manual_seed(0))
    (tmp_path / "counts.csv").write_text("count\n" + "\n".join(str(int(value)) for value in counts) + "\n")
    cfg = compose_config(
        "model=custom",
        "model._target_=poisson_user.model",
        "guide=custom",
        "guide._target_=poisson_user.guide",
        "data=file",
        f"data.path={tmp_path / 'counts.csv'}",
        "data.batch_size=10",
        "trainer.max_steps=300",
        "optim.lr=0.05",
        "tensorboard.image_every_n_steps=null",
    )
    final = train(cfg, tmp_path / "run")["final"]
    shape, rate, total, rows = 2.0, 1.0, float(counts.sum()), len(counts)
    exact = (
        shape * math.log(rate)
        - math.lgamma(shape)
        + math.lgamma(shape + total)
        - (shape + total) * math.log(rate + rows)
        - float(torch.lgamma(counts + 1).sum())
    )
    assert abs(final["iw_log_evidence"] - exact) < 3 * final["iw_log_evidence_se"] + 0.02


@pytest.mark.slow
def test_the_vae_gets_iw_evidence_gap_and_khat(train_in_process, tmp_path: Path) -> None:
    summary = train_in_process("experiment=vae", "trainer.max_steps=50", "tensorboard.image_every_n_steps=null")
    final, diagnostics = summary["final"], summary["diagnostics"]
    assert math.isfinite(final["iw_log_evidence"]) and math.isfinite(final["iw_gap"])
    assert diagnostics["num_particles"] >= 100
    # One weight over all 2,000 images at once: after 50 steps one draw carries nearly all of it.
    assert diagnostics["reading"] == "guide misses posterior mass"
    assert diagnostics["psis_khat"] is None or diagnostics["psis_khat"] > 0.7
    if diagnostics["psis_khat"] is None:
        assert "psis_khat is infinite" in diagnostics["note"]
    scalars = read_scalars(tmp_path / "run")
    assert {"evidence/iw_log_evidence", "evidence/iw_gap", "diagnostics/psis_khat"} <= set(scalars)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("diagnostics.reference=hmc", "diagnostics.reference='hmc': unknown; allowed values are nuts."),
        ("diagnostics.num_particles=1", "diagnostics.num_particles=1: must be an integer >= 2."),
        ("diagnostics.every_n_steps=0", "diagnostics.every_n_steps=0: must be an integer >= 1 or null."),
    ],
)
def test_diagnostics_options_are_checked_before_training(override: str, message: str) -> None:
    from lightning_svi.config.checks import check_config
    from lightning_svi.errors import ConfigError
    from tests.conftest import compose_config

    with pytest.raises(ConfigError) as raised:
        check_config(compose_config(override))
    assert str(raised.value) == message


def test_the_guide_diagnostics_script_prints_one_row_per_run(tmp_path: Path, capsys) -> None:
    import json

    from scripts.guide_diagnostics import main

    good = {
        "final": {"elbo": -172.8, "log_evidence": -172.33, "iw_log_evidence": -172.27, "iw_log_evidence_se": 0.04},
        "diagnostics": {"psis_khat": 0.27, "reading": "good", "ess": 429.0},
    }
    skipped = {"final": {"elbo": -10.0, "iw_log_evidence": None}, "diagnostics": {"skipped": "a point mass"}}
    for name, summary in (("a", good), ("b", skipped)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    main([str(tmp_path)])
    header, _, first, second = capsys.readouterr().out.splitlines()
    assert header.split(" | ")[3].strip() == "IW log p(x)"
    assert [cell.strip() for cell in first.split(" | ")][:9] == [
        "a", "-172.80", "-172.33", "-172.27 ± 0.04", "—", "—", "0.27", "good", "429",
    ]  # fmt: skip
    assert "a point mass" in second
