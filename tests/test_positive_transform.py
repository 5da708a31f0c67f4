"""positive_as_exp: positive parameters constrained by exp alone, with the same values and
gradients as torch's exp-then-affine, and the registries as they were after the block."""

from __future__ import annotations

import pyro
import pytest
import torch
from torch.distributions import biject_to, constraints, transform_to
from torch.distributions.transforms import ComposeTransform, ExpTransform

from lightning_svi.compile.positive_transform import positive_as_exp
from lightning_svi.core.estimators import build_estimator
from lightning_svi.models.beta_bernoulli import BetaBernoulli

LOWER_BOUNDED = [
    constraints.positive,
    constraints.nonnegative,
    constraints.greater_than(2.0),
    constraints.greater_than_eq(-1.5),
]


def test_inside_the_block_a_zero_bound_is_exp_alone_and_the_old_factories_come_back_after() -> None:
    before = [type(registry(constraint)) for registry in (transform_to, biject_to) for constraint in LOWER_BOUNDED]
    with positive_as_exp():
        for registry in (transform_to, biject_to):
            assert type(registry(constraints.positive)) is ExpTransform
            assert type(registry(constraints.nonnegative)) is ExpTransform
            assert type(registry(constraints.greater_than(2.0))) is ComposeTransform
    assert before[0] is ComposeTransform  # what torch gives for positive: exp, then 0 + 1 · x
    assert [
        type(registry(constraint)) for registry in (transform_to, biject_to) for constraint in LOWER_BOUNDED
    ] == before


def test_the_registries_come_back_after_an_exception() -> None:
    before = type(transform_to(constraints.positive))
    with pytest.raises(RuntimeError, match="inside"), positive_as_exp():
        assert type(transform_to(constraints.positive)) is ExpTransform
        raise RuntimeError("inside")
    assert type(transform_to(constraints.positive)) is before


@pytest.mark.parametrize("constraint", LOWER_BOUNDED, ids=str)
def test_values_gradients_and_jacobians_are_bit_for_bit_torchs(constraint: constraints.Constraint) -> None:
    x = torch.randn(5, generator=torch.Generator().manual_seed(0), requires_grad=True)

    def evaluate() -> tuple[torch.Tensor, ...]:
        transform = transform_to(constraint)
        y = transform(x)
        (gradient,) = torch.autograd.grad((y * torch.arange(5.0)).sum(), x)
        return y.detach(), gradient, transform.log_abs_det_jacobian(x, y).detach(), transform.inv(y).detach()

    expected = evaluate()
    with positive_as_exp():
        actual = evaluate()
    for want, got in zip(expected, actual, strict=True):
        assert torch.equal(got, want)


def test_svi_on_positive_parameters_follows_the_same_path_bit_for_bit() -> None:
    reads: list[str] = []

    def fitted_parameters() -> list[torch.Tensor]:
        pyro.settings.set(module_local_params=True)
        pyro.set_rng_seed(0)
        data = {"index": torch.arange(200), **BetaBernoulli.synthetic_data(seed=0, num_flips=200)}
        model = BetaBernoulli(200, alpha_init=2.0, beta_init=3.0)
        guide = model.full_guide()
        loss_fn = build_estimator("TraceEnum_ELBO")(model, guide)
        loss_fn(data)
        reads.append(model.alpha.grad_fn.name())  # the op that last made α from its unconstrained value
        optimizer = torch.optim.Adam(loss_fn.parameters(), lr=0.05)
        for _ in range(20):
            optimizer.zero_grad()
            loss_fn(data).backward()
            optimizer.step()
        return [parameter.detach().clone() for parameter in loss_fn.parameters()]

    expected = fitted_parameters()
    with positive_as_exp():
        actual = fitted_parameters()
    assert reads == ["AddBackward0", "ExpBackward0"]  # torch's 0 + 1 · exp(x), then exp(x) alone: another path
    assert len(actual) == 4
    for want, got in zip(expected, actual, strict=True):
        assert torch.equal(got, want)
