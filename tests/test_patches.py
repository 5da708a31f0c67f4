"""The patches of torch's and Pyro's code (``lightning_svi.core.patches``): each does what it claims inside
its block, leaves the library as it was after it, and still meets the library code it patches (a
torch or Pyro release that changes that code fails here, not in a user's run).

positive_as_exp: positive parameters constrained by exp alone, with the same values and gradients as
torch's exp-then-affine. pyro_static_tracing: Dice's masked branch taken in a fixed-size form, its
dot product and Pyro's NaN checks replaced, with the same loss and gradients.
bernoulli_logits_of_sigmoids: a Bernoulli on a sigmoid's output takes the sigmoid's clamped input as
its logits, eagerly and traced, for as long as that output lives unchanged.
plain_sums_without_dice_factors: Dice's expectation as the sum of the costs where the guide gives no
factor, with Pyro's loss and gradients, and Pyro's own computation where it gives one."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pyro
import pyro.util
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from torch.distributions import biject_to, constraints, transform_to
from torch.distributions.transforms import ComposeTransform, ExpTransform

from lightning_svi.core.estimators import build_estimator
from lightning_svi.core.patches import (
    bernoulli_logits_of_sigmoids,
    plain_sums_without_dice_factors,
    positive_as_exp,
    pyro_static_tracing,
)
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


# -- pyro_static_tracing ---------------------------------------------------------------------------


def _beta_bernoulli_loss_and_gradients() -> tuple[torch.Tensor, list[torch.Tensor]]:
    pyro.settings.set(module_local_params=True)
    pyro.set_rng_seed(0)
    model = BetaBernoulli(num_data=50)
    batch = {"index": torch.arange(50), **BetaBernoulli.synthetic_data(seed=0, num_flips=50)}
    svi = build_estimator("TraceEnum_ELBO")(model, model.full_guide())
    svi(batch)  # creates the guide's parameters
    pyro.set_rng_seed(1)
    loss = svi(batch)
    return loss.detach(), [g.clone() for g in torch.autograd.grad(loss, list(svi.parameters()))]


def test_static_tracing_gives_the_loss_and_gradients_of_the_eager_step() -> None:
    eager = _beta_bernoulli_loss_and_gradients()
    with pyro_static_tracing():
        traced = _beta_bernoulli_loss_and_gradients()
    torch.testing.assert_close(traced[0], eager[0])
    for traced_gradient, eager_gradient in zip(traced[1], eager[1], strict=True):
        torch.testing.assert_close(traced_gradient, eager_gradient)


def test_dice_still_masks_through_masked_select_when_it_thinks_it_is_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracing-state and masked_select patches meet Pyro's Dice: under the block it takes the
    masked branch (it asks ``torch._C._get_tracing_state``), and the mask reaches ``masked_select``
    from ``pyro.infer.util``, where the fixed-size form replaces it."""
    from lightning_svi.core import patches

    calls = []
    original = patches._dice_masked_select
    monkeypatch.setattr(patches, "_dice_masked_select", lambda t, m: calls.append(1) or original(t, m))
    with pyro_static_tracing():
        _beta_bernoulli_loss_and_gradients()
    assert calls, "Pyro's Dice no longer calls masked_select under tracing: the patch is dead, remove or redo it"
    assert torch.Tensor.masked_select is patches._masked_select  # the block put torch's own back


@pytest.mark.parametrize("shape", [(), (3,), (4, 1, 5)])
def test_the_sum_of_products_is_pyros_full_dot_product(shape: tuple[int, ...]) -> None:
    import pyro.infer.util

    from lightning_svi.core.patches import _sum_of_products

    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)
    torch.testing.assert_close(_sum_of_products(x, y), pyro.infer.util._fulldot(x, y))


def test_pyros_nan_warning_goes_through_the_patched_check() -> None:
    nan = torch.tensor(float("nan"))
    with pytest.warns(UserWarning, match="Encountered NaN"):
        pyro.util.warn_if_nan(nan)
    with pyro_static_tracing(), warnings.catch_warnings():
        warnings.simplefilter("error")
        pyro.util.warn_if_nan(nan)  # the check a graph cannot make is skipped


def test_trace_elbo_still_reads_numbers_through_torch_item_and_the_traced_loss_is_the_same() -> None:
    """Trace_ELBO's differentiable loss calls ``torch_item`` (a host read a graph cannot make) for a value it
    drops; under the block it gets the tensor as it is, and the loss and gradients stay the same."""
    import pyro.infer.trace_elbo

    from lightning_svi.core import patches

    assert pyro.infer.trace_elbo.torch_item is pyro.infer.util.torch_item
    calls = []
    with pyro_static_tracing():
        patched = pyro.infer.trace_elbo.torch_item
        pyro.infer.trace_elbo.torch_item = lambda value: calls.append(1) or patched(value)
        try:
            traced = _coin_trace_elbo_loss_and_gradients()
        finally:
            pyro.infer.trace_elbo.torch_item = patched
    assert patched is patches._tensor_as_is
    assert calls, "Trace_ELBO no longer reads numbers with torch_item: the patch is dead, remove it"
    eager = _coin_trace_elbo_loss_and_gradients()
    torch.testing.assert_close(traced[0], eager[0])
    torch.testing.assert_close(traced[1], eager[1])


def _coin_trace_elbo_loss_and_gradients() -> tuple[torch.Tensor, torch.Tensor]:
    import pyro.distributions as dist

    pyro.set_rng_seed(0)
    alpha = torch.tensor(15.0, requires_grad=True)

    def model() -> None:
        fairness = pyro.sample("fairness", dist.Beta(10.0, 10.0))
        pyro.sample("flips", dist.Bernoulli(fairness).expand([10]).to_event(1), obs=torch.ones(10))

    def guide() -> None:
        pyro.sample("fairness", dist.Beta(alpha, 15.0))

    loss = pyro.infer.Trace_ELBO().differentiable_loss(model, guide)
    return loss.detach(), torch.autograd.grad(loss, alpha)[0]


def test_a_distribution_made_with_validation_on_checks_its_samples_except_while_tracing() -> None:
    normal = torch.distributions.Normal(torch.zeros(3), torch.ones(3), validate_args=True)
    outside = torch.tensor([0.0, float("nan"), 1.0])  # not in the real line's support
    with pytest.raises(ValueError, match="support"):
        normal.log_prob(outside)
    with pyro_static_tracing():
        assert normal.log_prob(outside).isnan().any()


def test_bernoulli_logits_of_a_sigmoid_are_its_clamped_input_while_tracing() -> None:
    """The logit of torch's clamped probabilities, without the sigmoid-logit round trip: the same
    values where float32 keeps them, the same clamp bounds beyond them. (Eagerly, float32 probabilities
    near 1 lose digits: the round trip gives 9.9995 at 10, 14.84 at 15, the bound from about 15.2.)
    A Bernoulli on other probabilities keeps torch's own logits."""
    import math

    import pyro.distributions as dist

    a = torch.linspace(-30.0, 30.0, 601)
    eps = torch.finfo(torch.float32).eps
    bound = math.log1p(-eps) - math.log(eps)
    eager = dist.Bernoulli(torch.sigmoid(a)).logits
    plain_probs = torch.rand(5)
    with pyro_static_tracing():
        traced = dist.Bernoulli(torch.sigmoid(a)).logits
        method = dist.Bernoulli(a.sigmoid()).logits
        other = dist.Bernoulli(plain_probs).logits
    assert torch.equal(traced, a.clamp(-bound, bound)) and torch.equal(method, traced)
    middle = a.abs() < 5
    assert torch.allclose(traced[middle], eager[middle], rtol=1e-4, atol=1e-5)
    assert torch.allclose(traced[a <= 10], eager[a <= 10], atol=1e-3)
    beyond = a.abs() > bound
    assert beyond.sum() == 282 and torch.equal(traced[beyond], eager[beyond])  # 16.0 to 30.0, each side
    assert torch.equal(other, dist.Bernoulli(plain_probs).logits)
    assert dist.Bernoulli(torch.sigmoid(a)).logits.equal(eager)  # the patch is gone after the block


def test_a_traced_bernoulli_of_a_sigmoid_has_no_logit_round_trip_and_the_eager_gradient() -> None:
    """A VAE decoder's ``Bernoulli(torch.sigmoid(x)).log_prob`` traced by ``make_fx`` as the compiled
    step is: no ``log``/``log1p`` of the probabilities, and the eager log-prob and gradient."""
    import pyro.distributions as dist
    from torch.fx.experimental.proxy_tensor import make_fx

    def log_prob_and_gradient(x: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_()
        log_prob = dist.Bernoulli(torch.sigmoid(x)).to_event(1).log_prob(pixels).sum()
        return log_prob, torch.autograd.grad(log_prob, x)[0]

    x = torch.randn(4, 8) * 3
    pixels = torch.bernoulli(torch.full((4, 8), 0.3))
    with pyro_static_tracing():
        graph = make_fx(log_prob_and_gradient)(x, pixels)
    targets = {node.target for node in graph.graph.nodes}
    assert torch.ops.aten.log1p.default not in targets and torch.ops.aten.log.default not in targets
    assert torch.ops.aten.clamp.default in targets
    traced, eager = graph(x, pixels), log_prob_and_gradient(x, pixels)
    assert torch.allclose(traced[0], eager[0], rtol=1e-5) and torch.allclose(traced[1], eager[1], atol=1e-5)


def test_eagerly_a_bernoulli_of_a_live_unchanged_sigmoid_output_has_its_clamped_input_as_logits() -> None:
    """The fit's block (``train``): the same logits and gradient as the traced step's, from ``torch.sigmoid``,
    ``Tensor.sigmoid`` and ``nn.Sigmoid``; torch's own logits for an output, or an input, changed in place
    since; and no input kept once its output is gone."""
    import gc
    import math

    import pyro.distributions as dist

    from lightning_svi.core import patches

    a = torch.linspace(-30.0, 30.0, 601, requires_grad=True)
    bound = math.log1p(-torch.finfo(torch.float32).eps) - math.log(torch.finfo(torch.float32).eps)
    pixels = torch.bernoulli(torch.full((601,), 0.4))
    with bernoulli_logits_of_sigmoids():
        for make in (torch.sigmoid, lambda x: x.sigmoid(), torch.nn.Sigmoid()):
            probs = make(a)
            assert torch.equal(dist.Bernoulli(probs).logits, a.detach().clamp(-bound, bound))
        log_prob = dist.Bernoulli(torch.sigmoid(a)).log_prob(pixels).sum()
        (gradient,) = torch.autograd.grad(log_prob, a)
        changed = torch.sigmoid(a.detach())
        changed.mul_(0.5)
        assert torch.equal(dist.Bernoulli(changed).logits, dist.Bernoulli(changed.clone()).logits)
        moved = a.detach().clone()
        unchanged = torch.sigmoid(moved)
        moved.add_(1.0)  # the input changed after the sigmoid: its output's own logits
        assert torch.equal(dist.Bernoulli(unchanged).logits, dist.Bernoulli(unchanged.clone()).logits)
        del probs, changed, unchanged, log_prob
        gc.collect()
        sigmoid = torch.sigmoid.__self__  # the block's SigmoidLogits
        assert isinstance(sigmoid, patches.SigmoidLogits) and not sigmoid._inputs
    # d/da of the Bernoulli log-density in its logit a is pixel − sigmoid(a), inside the clamp bounds
    inside = a.detach().abs() < bound
    expected = pixels - torch.sigmoid(a.detach())
    torch.testing.assert_close(gradient[inside], expected[inside], rtol=1e-5, atol=1e-6)
    assert torch.equal(gradient[~inside], torch.zeros(int((~inside).sum())))
    assert torch.sigmoid is patches._sigmoid  # torch's own after the block


def test_a_fit_of_pyros_vae_never_takes_the_logit_of_its_decoders_sigmoid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train`` runs the fit inside the block: the VAE example's ``Bernoulli(self.sigmoid(...))`` reaches
    torch's ``probs_to_logits`` in no step."""
    from lightning_svi.core import patches
    from tests.test_pyro_tutorials import train

    binary_logits: list[bool] = []
    original = patches._probs_to_logits

    def counted(probs: torch.Tensor, is_binary: bool = False) -> torch.Tensor:
        binary_logits.append(is_binary)
        return original(probs, is_binary)

    # torch's own, and the patch's fall-back to it
    monkeypatch.setattr(torch.distributions.bernoulli, "probs_to_logits", counted)
    monkeypatch.setattr(patches, "_probs_to_logits", counted)
    summary = train("vae", tmp_path, "callbacks.diagnostics=null", steps=3)
    assert summary["status"] == "completed" and summary["steps"] == 3
    assert True not in binary_logits


# -- Dice's expectation as a plain sum when the guide gives no factor ----------------------------


def _enumerated_loss_and_gradients(guide: Callable, model: Callable, data: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``TraceEnum_ELBO``'s loss and the gradients of the guide's parameters (a module's, or Pyro's
    store's), seed 0."""
    pyro.set_rng_seed(0)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, data)
    if isinstance(guide, torch.nn.Module):
        parameters = list(guide.parameters())
    else:
        parameters = [value.unconstrained() for _, value in sorted(pyro.get_param_store().items())]
    return (loss.detach(), *torch.autograd.grad(loss, parameters))


def _counting_calls_of_pyros_expectation(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from lightning_svi.core import patches

    calls: list[int] = []
    original = patches._compute_expectation
    monkeypatch.setattr(patches, "_compute_expectation", lambda *args: calls.append(1) or original(*args))
    return calls


def test_without_dice_factors_the_expectation_is_the_sum_of_costs_with_pyros_loss_and_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tutorial GMM: assignments enumerated in the model, AutoDelta on the globals (no Dice factor)."""
    from tests.pyro_models import gmm

    pyro.clear_param_store()
    guide = gmm.make_guide()
    pyro.set_rng_seed(1)
    guide(gmm.data)  # its parameters, from the tutorial's init_loc_fn
    pyros = _enumerated_loss_and_gradients(guide, gmm.model, gmm.data)
    calls = _counting_calls_of_pyros_expectation(monkeypatch)
    with plain_sums_without_dice_factors():
        summed = _enumerated_loss_and_gradients(guide, gmm.model, gmm.data)
    assert not calls, "Pyro's Dice expectation ran although the guide gives no factor"
    assert pyros[0] != 0 and len(pyros) == 4  # the loss and the gradients of weights, scale, locs
    for ours, theirs in zip(summed, pyros, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    assert pyro.infer.util.Dice.compute_expectation.__module__ == "pyro.infer.util"  # Pyro's own after the block


def test_a_guide_with_dice_factors_gets_pyros_own_expectation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A guide that samples a discrete site (a score-function Dice factor): Pyro's computation, bit for bit."""
    import pyro.distributions as dist

    data = torch.tensor([0.1, 2.9, 3.2])

    def model(data: torch.Tensor) -> None:
        k = pyro.sample("k", dist.Categorical(torch.ones(2) / 2))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(torch.tensor([0.0, 3.0])[k], 1.0), obs=data)

    def guide(data: torch.Tensor) -> None:
        probs = pyro.param("probs", torch.tensor([0.3, 0.7]), constraint=constraints.simplex)
        pyro.sample("k", dist.Categorical(probs))

    pyro.clear_param_store()
    pyros = _enumerated_loss_and_gradients(guide, model, data)
    calls = _counting_calls_of_pyros_expectation(monkeypatch)
    with plain_sums_without_dice_factors():
        ours = _enumerated_loss_and_gradients(guide, model, data)
    assert calls == [1]
    assert pyros[1].abs().sum() > 0  # the score function reaches the guide's probabilities
    for mine, theirs in zip(ours, pyros, strict=True):
        assert torch.equal(mine, theirs)


def test_a_fit_takes_the_expectation_without_dice_factors_as_a_sum(
    train_in_process: Callable[..., dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train`` runs the fit inside the block: the built-in GMM (enumerated, reparameterized guide)
    never reaches Pyro's Dice expectation."""
    calls = _counting_calls_of_pyros_expectation(monkeypatch)
    summary = train_in_process(
        "model=gmm", "trainer.max_steps=3", "tensorboard.image_every_n_steps=null", "callbacks.diagnostics=null"
    )
    assert summary["status"] == "completed" and summary["steps"] == 3
    assert not calls
