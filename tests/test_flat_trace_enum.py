"""``TraceEnum_ELBO`` on a program that enumerates nothing and has a reparameterized guide is
evaluated through ``Trace_ELBO`` after its first step: the same loss and gradients as Pyro's own
``TraceEnum_ELBO`` on the same draws; any other program keeps Pyro's Dice estimator on every step."""

from __future__ import annotations

from collections.abc import Callable
from unittest import mock

import pyro
import pyro.distributions as dist
import pyro.infer.traceenum_elbo
import pytest
import torch
from pyro.infer import config_enumerate
from torch.distributions import constraints

from lightning_svi.core.estimators import build_estimator

FLIPS = (torch.arange(40) % 3 == 0).float()
POINTS = torch.tensor([-2.1, -1.9, 2.0, 2.2, 1.8])


def beta_bernoulli(flips: torch.Tensor) -> None:
    alpha = pyro.param("alpha", torch.tensor(2.0), constraint=constraints.positive)
    rate = pyro.sample("rate", dist.Beta(alpha, 3.0))
    with pyro.plate("flips", len(flips)):
        pyro.sample("flip", dist.Bernoulli(rate), obs=flips)


def beta_guide(flips: torch.Tensor) -> None:
    qa = pyro.param("qa", torch.tensor(1.5), constraint=constraints.positive)
    qb = pyro.param("qb", torch.tensor(1.5), constraint=constraints.positive)
    pyro.sample("rate", dist.Beta(qa, qb))


def switch_model(points: torch.Tensor) -> None:
    z = pyro.sample("z", dist.Bernoulli(0.3))
    with pyro.plate("points", len(points)):
        pyro.sample("x", dist.Normal(4 * z - 2, 1.0), obs=points)


def switch_guide(points: torch.Tensor) -> None:
    """A discrete guide site, sampled (not enumerated): TraceEnum_ELBO's gradient is Dice's score function."""
    q = pyro.param("q", torch.tensor(0.5), constraint=constraints.unit_interval)
    pyro.sample("z", dist.Bernoulli(q))


@config_enumerate
def mixture(points: torch.Tensor) -> None:
    weight = pyro.param("weight", torch.tensor(0.5), constraint=constraints.unit_interval)
    with pyro.plate("points", len(points)):
        side = pyro.sample("side", dist.Bernoulli(weight))
        pyro.sample("x", dist.Normal(4 * side - 2, 1.0), obs=points)


def no_guide(points: torch.Tensor) -> None:
    pass


class NotReparameterizedNormal(dist.Normal):
    has_rsample = False


def guide_that_changes(calls: list[int]) -> Callable[[torch.Tensor], None]:
    """A Normal guide, reparameterized for its first three calls and not after them."""

    def guide(points: torch.Tensor) -> None:
        loc = pyro.param("loc", torch.tensor(0.1))
        calls.append(1)
        family = dist.Normal if len(calls) <= 3 else NotReparameterizedNormal
        pyro.sample("mu", family(loc, 1.0))

    return guide


def normal_model(points: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    with pyro.plate("points", len(points)):
        pyro.sample("x", dist.Normal(mu, 1.0), obs=points)


def loss_and_gradients(elbo: pyro.infer.ELBO, model: Callable, guide: Callable, data: torch.Tensor, seed: int) -> list:
    pyro.set_rng_seed(seed)
    loss = elbo.differentiable_loss(model, guide, data)
    names = sorted(pyro.get_param_store().keys())
    unconstrained = [pyro.get_param_store()._params[name] for name in names]
    gradients = torch.autograd.grad(loss, unconstrained, allow_unused=True)
    return [loss.detach(), *(torch.zeros(()) if g is None else g for g in gradients)]


def dice_evaluations(model: Callable, guide: Callable, data: torch.Tensor, steps: int, **options: object) -> list[bool]:
    """For each of ``steps`` evaluations of lightning-svi's TraceEnum_ELBO: whether it went through Dice
    (Pyro's ``_compute_dice_elbo``), having checked that its loss and gradients are Pyro's TraceEnum_ELBO's
    on the same draws."""
    pyro.clear_param_store()
    pyro.settings.set(module_local_params=False)
    estimator = build_estimator("TraceEnum_ELBO", max_plate_nesting=1, **options)
    reference = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1, **options)
    original = pyro.infer.traceenum_elbo._compute_dice_elbo
    through_dice = []
    for step in range(steps):
        with mock.patch.object(pyro.infer.traceenum_elbo, "_compute_dice_elbo", wraps=original) as dice:
            ours = loss_and_gradients(estimator, model, guide, data, seed=step)
        through_dice.append(dice.called)
        expected = loss_and_gradients(reference, model, guide, data, seed=step)
        for got, want in zip(ours, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=lambda text, step=step: f"{step}: {text}")
    return through_dice


@pytest.mark.parametrize(
    "options", [{}, {"num_particles": 4, "vectorize_particles": True}, {"num_particles": 3}], ids=str
)
def test_a_reparameterized_program_without_enumeration_goes_through_trace_elbo_after_its_first_step(
    options: dict,
) -> None:
    assert dice_evaluations(beta_bernoulli, beta_guide, FLIPS, steps=4, **options) == [True, False, False, False]


def test_a_guide_site_that_is_not_reparameterized_keeps_dice_on_every_step() -> None:
    assert dice_evaluations(switch_model, switch_guide, POINTS, steps=3) == [True, True, True]


def test_an_enumerated_model_is_contracted_on_every_step() -> None:
    assert dice_evaluations(mixture, no_guide, POINTS, steps=3) == [True, True, True]


def test_a_program_whose_guide_stops_being_reparameterized_returns_to_dice_for_good() -> None:
    """Calls 1-3 reparameterized, later ones not: the fourth evaluation finds out (its Trace_ELBO
    pass is dropped), goes through Dice, and so do the ones after it."""
    pyro.clear_param_store()
    pyro.settings.set(module_local_params=False)
    calls: list[int] = []
    guide = guide_that_changes(calls)
    estimator = build_estimator("TraceEnum_ELBO", max_plate_nesting=1)
    original = pyro.infer.traceenum_elbo._compute_dice_elbo
    through_dice = []
    for step in range(5):
        with mock.patch.object(pyro.infer.traceenum_elbo, "_compute_dice_elbo", wraps=original) as dice:
            loss, gradient = loss_and_gradients(estimator, normal_model, guide, POINTS, seed=step)
        through_dice.append(dice.called)
        assert torch.isfinite(loss) and torch.isfinite(gradient)
    assert through_dice == [True, False, False, True, True]
