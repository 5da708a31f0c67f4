"""Each estimator's loss and the traces it records agree: −loss = log p − log q, step by step."""

from __future__ import annotations

import pyro
import pytest
import torch

from lightning_svi.core.estimators import build_estimator
from lightning_svi.models.beta_binomial import BetaBinomial


@pytest.fixture
def model_and_batch() -> tuple[BetaBinomial, dict[str, torch.Tensor]]:
    pyro.settings.set(module_local_params=True)
    pyro.set_rng_seed(0)
    data = BetaBinomial.synthetic_data(seed=0, num_groups=8)
    return BetaBinomial(num_data=8), {"index": torch.arange(8), **data}


@pytest.mark.parametrize("name", ["TraceEnum_ELBO", "Trace_ELBO", "TraceGraph_ELBO", "TraceMeanField_ELBO"])
@pytest.mark.parametrize(("num_particles", "vectorize"), [(1, False), (3, False), (3, True)])
def test_negative_loss_is_log_p_minus_log_q_of_the_recorded_traces(
    model_and_batch: tuple, name: str, num_particles: int, vectorize: bool
) -> None:
    model, batch = model_and_batch
    guide = model.full_guide()
    estimator = build_estimator(name, num_particles=num_particles, vectorize_particles=vectorize)
    loss = estimator(model, guide)(batch)
    traces = estimator.last_traces
    assert loss.requires_grad
    assert (-loss).item() == pytest.approx((traces.log_p - traces.log_q).item(), rel=1e-5, abs=1e-3)
    assert set(traces.log_p_sites) == {"rate", "successes"}
    assert set(traces.log_q_sites) == {"rate"}
    assert sum(traces.log_p_sites.values()).item() == pytest.approx(traces.log_p.item())


def test_empty_guide_has_log_q_zero_and_log_p_includes_the_prior_draw(model_and_batch: tuple) -> None:
    from lightning_svi.core.guides import EmptyGuide

    model, batch = model_and_batch
    estimator = build_estimator("TraceEnum_ELBO")
    loss = estimator(model, EmptyGuide())(batch)
    assert estimator.last_traces.log_q.item() == 0.0
    assert (-loss).item() == pytest.approx(estimator.last_traces.log_p.item(), rel=1e-6)
    assert "rate" in estimator.last_traces.log_p_sites


def test_gradient_of_tracegraph_loss_matches_trace_elbo_for_reparameterized_guides(model_and_batch: tuple) -> None:
    model, batch = model_and_batch
    guide = model.full_guide()
    gradients = []
    for name in ("Trace_ELBO", "TraceGraph_ELBO"):
        pyro.set_rng_seed(1)
        model.zero_grad()
        build_estimator(name)(model, guide)(batch).backward()
        gradients.append(model.alpha_unconstrained.grad.clone())
    assert torch.allclose(gradients[0], gradients[1], rtol=1e-4)


def test_trace_enum_on_a_model_without_enumerated_sites_gives_no_warning_and_trace_elbos_loss(
    model_and_batch: tuple,
) -> None:
    """The default estimator for every model: without enumerated sites it is Trace_ELBO's estimate, and
    Pyro's warning that it found none (addressed to a choice the user did not make) stays quiet."""
    import warnings

    model, batch = model_and_batch
    guide = model.full_guide()
    losses = {}
    for name in ("TraceEnum_ELBO", "Trace_ELBO"):
        pyro.set_rng_seed(1)
        with warnings.catch_warnings(record=True) as caught, pyro.validation_enabled(True):
            warnings.simplefilter("always")
            losses[name] = build_estimator(name, max_plate_nesting=1)(model, guide)(batch)
        assert not [warning for warning in caught if "enumeration" in str(warning.message)]
    assert losses["TraceEnum_ELBO"].item() == pytest.approx(losses["Trace_ELBO"].item(), rel=1e-6)
