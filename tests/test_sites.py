"""core.sites: each kind of sample site Pyro records, told apart by the one predicate for it."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, autoguide

from lightning_svi.core.estimators import build_estimator
from lightning_svi.core.programs.warmup import check_minibatch_scaling
from lightning_svi.core.sites import holds_enumerated_values, is_enumerated, is_latent, is_observed
from lightning_svi.errors import ConfigError

PREDICATES = (is_observed, is_latent, is_enumerated, holds_enumerated_values)


def mixture(batch: dict[str, torch.Tensor]) -> None:
    """A latent, a subsampled data plate, an enumerated assignment, data and a deterministic value."""
    loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 5.0).to_event(1))
    with pyro.plate("data", 10, subsample=batch["index"]):
        assignment = pyro.sample("assignment", dist.Categorical(torch.ones(2) / 2), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(loc[assignment], 1.0), obs=batch["x"])
    pyro.deterministic("spread", (loc[1] - loc[0]).abs())


BATCH = {"index": torch.arange(4), "x": torch.tensor([-3.0, -2.5, 2.0, 3.5])}


def kinds(trace: poutine.Trace) -> dict[str, tuple[str, ...]]:
    """Each sample node's name -> the predicates that hold for it."""
    return {
        name: tuple(predicate.__name__ for predicate in PREDICATES if predicate(site))
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
    }


def test_a_plain_trace_tells_every_kind_apart() -> None:
    trace = poutine.trace(mixture).get_trace(BATCH)
    assert kinds(trace) == {
        "loc": ("is_latent",),
        "data": (),  # the plate's subsample: observed to Pyro, neither data nor a latent
        "assignment": ("is_latent", "is_enumerated"),  # marked, but holding one drawn value here
        "x": ("is_observed",),
        "spread": (),  # pyro.deterministic: observed to Pyro, not data
    }


def test_only_an_enumerating_estimator_makes_a_site_hold_all_its_values() -> None:
    guide = autoguide.AutoNormal(poutine.block(mixture, hide_fn=is_enumerated))
    pyro.set_rng_seed(0)
    for elbo_class, holds in ((TraceEnum_ELBO, True), (Trace_ELBO, False)):
        estimator = build_estimator({"_target_": f"pyro.infer.{elbo_class.__name__}", "max_plate_nesting": 1})
        estimator.differentiable_loss(mixture, guide, BATCH)
        ((model_trace, guide_trace),) = estimator.last_traces.pairs
        assignment = model_trace.nodes["assignment"]
        assert holds_enumerated_values(assignment) is holds
        assert assignment["value"].shape == ((2, 1) if holds else (4,))  # both values, or one per row
        assert estimator.last_traces.is_enumerated is holds
        assert "assignment" not in guide_trace.nodes  # hidden from the guide by is_enumerated


def test_an_autoguides_auxiliary_draw_is_not_a_latent() -> None:
    guide = autoguide.AutoMultivariateNormal(poutine.block(mixture, hide_fn=is_enumerated))
    trace = poutine.trace(guide).get_trace(BATCH)
    assert kinds(trace) == {"_AutoMultivariateNormal_latent": (), "loc": ("is_latent",)}


def test_a_deterministic_value_outside_the_data_plate_is_no_unscaled_observation() -> None:
    """The minibatch check looks at data only: a ``pyro.deterministic`` summary of the globals is no
    observation that would need scaling up to the full data."""
    check_minibatch_scaling(mixture, BATCH, num_rows=10)  # passes: x is in the data plate

    def unscaled(batch: dict[str, torch.Tensor]) -> None:
        mixture(batch)
        pyro.sample("total", dist.Normal(0.0, 100.0), obs=batch["x"].sum())

    with pytest.raises(ConfigError, match=r"observed site\(s\) total are in no plate"):
        check_minibatch_scaling(unscaled, BATCH, num_rows=10)
