"""``log_contractions_by_broadcast`` (``lightning_svi.core.patches``): Pyro's log-space einsum as one
log-sum-exp over the broadcast sum of its operands, where that sum is small; Pyro's own otherwise.

The values and gradients are Pyro's on the equations of Pyro's own test of the backend
(``tests/ops/einsum/test_torch_log.py``), with finite operands and with -inf ones; where Pyro's
per-operand shifts underflow, the value is the closed form's. The HMM example's ``TraceEnum_ELBO`` loss
and gradients are Pyro's, Pyro's sampling backend (``infer_discrete``) draws from the same posterior,
the block leaves Pyro and opt_einsum as they were, and ``train`` runs the fit inside it."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pyro
import pyro.ops.einsum.torch_log
import pytest
import torch
from opt_einsum.backends import dispatch
from pyro.infer import TraceEnum_ELBO
from pyro.ops.einsum import contract

from lightning_svi.core import patches
from lightning_svi.core.patches import BROADCAST_NUMEL_LIMIT, broadcast_log_einsum, log_contractions_by_broadcast

PYROS = pyro.ops.einsum.torch_log.einsum
LOG_BACKEND = "pyro.ops.einsum.torch_log"

# Pyro's tests/ops/einsum/test_torch_log.py, and two that broadcast a size-1 dimension or permute.
EQUATIONS = [
    ",ab->ab",
    "ab,,bc->a",
    "ab,,bc->b",
    "ab,,bc->c",
    "ab,,bc->ac",
    "ab,,b,bc->ac",
    "a,ab->ab",
    "ab,b,bc->a",
    "ab,b,bc->b",
    "ab,b,bc->c",
    "ab,b,bc->ac",
    "ab,bc->ac",
    "ab,bc,cd->",
    "ab,bc,cd->a",
    "ab,bc,cd->b",
    "ab,bc,cd->c",
    "ab,bc,cd->d",
    "ab,bc,cd->ac",
    "ab,bc,cd->ad",
    "ab,bc,cd->bc",
    "a,a,ab,b,b,b,b->a",
    "ba,cb->ca",
    "ab->ba",
]


def _operands(equation: str, min_size: int, infinite: str, one_sized: str = "") -> list[torch.Tensor]:
    """Operands of distinct sizes per dimension from ``min_size`` (1 in the dimensions ``one_sized``
    names, in the first operand only): standard normal, all -inf, or normal with a slice of -inf."""
    inputs = equation.split("->")[0].split(",")
    symbols = sorted(set(equation) - set(",->"))
    sizes = dict(zip(symbols, itertools.count(min_size), strict=False))
    operands = []
    for index, dims in enumerate(inputs):
        shape = [1 if index == 0 and dim in one_sized else sizes[dim] for dim in dims]
        operand = torch.full(shape, -float("inf")) if infinite == "all" else torch.randn(shape, dtype=torch.float64)
        if infinite == "some" and operand.dim():
            operand[..., 0] = -float("inf")
        operands.append(operand.to(torch.float64).requires_grad_())
    return operands


def _value_and_gradients(einsum: Callable, equation: str, operands: list[torch.Tensor]) -> list[torch.Tensor]:
    result = einsum(equation, *operands)
    weights = torch.linspace(0.5, 1.5, result.numel(), dtype=result.dtype).reshape(result.shape)
    gradients = torch.autograd.grad((result * weights).sum(), operands, allow_unused=True)
    return [
        result.detach(),
        *(torch.zeros_like(x) if g is None else g for x, g in zip(operands, gradients, strict=True)),
    ]


def _took_the_broadcast(equation: str, operands: list[torch.Tensor]) -> bool:
    inputs, output = equation.split("->")
    return (
        patches._broadcast_plan(tuple(inputs.split(",")), output, tuple(tuple(x.shape) for x in operands)) is not None
    )


@pytest.mark.parametrize("infinite", ["none", "some", "all"])
@pytest.mark.parametrize("min_size", [1, 2])
@pytest.mark.parametrize("equation", EQUATIONS)
def test_values_and_gradients_are_pyros(equation: str, min_size: int, infinite: str) -> None:
    torch.manual_seed(0)
    operands = _operands(equation, min_size, infinite)
    if equation == "ab->ba":  # one operand, nothing summed: Pyro's einsum, which copies it
        assert not _took_the_broadcast(equation, operands)
    else:
        assert _took_the_broadcast(equation, operands)
    ours = _value_and_gradients(broadcast_log_einsum, equation, operands)
    theirs = _value_and_gradients(PYROS, equation, operands)
    for mine, pyros in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, pyros, rtol=1e-10, atol=1e-10)
        assert not mine.isnan().any()
    if infinite == "all" and equation != "ab->ba":
        assert (ours[0] == -float("inf")).all()
        assert all((gradient == 0).all() for gradient in ours[1:])


@pytest.mark.parametrize("equation", ["ab,bc->ac", "ab,b,bc->ac", "ab,bc,cd->bc"])
def test_a_size_one_dimension_broadcasts_as_in_pyros_einsum(equation: str) -> None:
    torch.manual_seed(1)
    operands = _operands(equation, 2, "none", one_sized="b")
    assert operands[0].shape[1] == 1 and _took_the_broadcast(equation, operands)
    ours = _value_and_gradients(broadcast_log_einsum, equation, operands)
    theirs = _value_and_gradients(PYROS, equation, operands)
    for mine, pyros in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, pyros, rtol=1e-10, atol=1e-10)


def test_where_pyros_shifts_underflow_the_value_is_the_closed_forms() -> None:
    """log Σ_a exp(x_a + y_a) with x = (0, -200), y = (-200, 0) is log 2 - 200. Pyro's einsum shifts
    each operand by its own max (0), and exp(-200) underflows in float32: it gives -inf."""
    x = torch.tensor([0.0, -200.0])
    y = torch.tensor([-200.0, 0.0])
    assert PYROS("a,a->", x, y) == -float("inf")
    torch.testing.assert_close(broadcast_log_einsum("a,a->", x, y), torch.tensor(2.0).log() - 200)


def test_a_large_broadcast_sum_keeps_pyros_einsum(monkeypatch: pytest.MonkeyPatch) -> None:
    """Matrix products of 64 x 64 blocks over 32 batches: the sum would hold 64 times an operand."""
    calls: list[str] = []
    monkeypatch.setattr(patches, "_log_einsum", lambda equation, *xs: calls.append(equation) or PYROS(equation, *xs))
    x, y = torch.randn(32, 64, 64), torch.randn(32, 64, 64)
    assert max(BROADCAST_NUMEL_LIMIT, 2 * x.numel()) < 32 * 64**3
    torch.testing.assert_close(broadcast_log_einsum("nab,nbc->nac", x, y), PYROS("nab,nbc->nac", x, y))
    assert calls == ["nab,nbc->nac"]
    broadcast_log_einsum("nab,nbc->nac", x[:2, :8, :8], y[:2, :8, :8])
    assert calls == ["nab,nbc->nac"]  # 1,024 elements: broadcast


def test_inside_the_block_pyros_contractions_broadcast_and_after_it_pyro_and_opt_einsum_are_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    contract("ab,bc->ac", torch.randn(2, 3), torch.randn(3, 4), backend=LOG_BACKEND)  # opt_einsum caches Pyro's
    cached = dict(dispatch._cached_funcs)
    calls: list[str] = []
    monkeypatch.setattr(patches, "_broadcast_plan", _counting(patches._broadcast_plan, calls))
    x, y = torch.randn(2, 3), torch.randn(3, 4)
    with log_contractions_by_broadcast():
        inside = contract("ab,bc->ac", x, y, backend=LOG_BACKEND)
        contract("ab,bc,cd->ad", x, y, torch.randn(4, 5), backend=LOG_BACKEND)
    assert len(calls) == 3  # one pairwise contraction, then two
    torch.testing.assert_close(inside, PYROS("ab,bc->ac", x, y))
    assert pyro.ops.einsum.torch_log.einsum is PYROS
    assert pyro.ops.einsum.torch_log.tensordot.einsum is PYROS
    assert dispatch._cached_funcs == cached
    contract("ab,bc->ac", x, y, backend=LOG_BACKEND)
    assert len(calls) == 3


def _counting(function: Callable, calls: list[str]) -> Callable:
    def counted(inputs: tuple[str, ...], output: str, shapes: tuple) -> object:
        calls.append(",".join(inputs) + "->" + output)
        return function(inputs, output, shapes)

    return counted


def _hmm_loss_and_gradients() -> tuple[torch.Tensor, ...]:
    """``TraceEnum_ELBO`` on Pyro's HMM example (tests/pyro_models/hmm.py) at its guide's initial values."""
    from tests.pyro_models import hmm

    pyro.clear_param_store()
    data = hmm.make_data()
    guide = hmm.make_guide()
    pyro.set_rng_seed(0)
    guide(data["sequences"], data["lengths"], hmm.args)
    loss = TraceEnum_ELBO(max_plate_nesting=2).differentiable_loss(
        hmm.model_1, guide, data["sequences"], data["lengths"], hmm.args
    )
    return (loss.detach(), *torch.autograd.grad(loss, list(guide.parameters())))


def test_the_hmm_examples_loss_and_gradients_are_pyros(monkeypatch: pytest.MonkeyPatch) -> None:
    pyros = _hmm_loss_and_gradients()
    calls: list[str] = []
    monkeypatch.setattr(patches, "_broadcast_plan", _counting(patches._broadcast_plan, calls))
    with log_contractions_by_broadcast():
        ours = _hmm_loss_and_gradients()
    assert len(calls) > 50  # the contraction over its 30 time steps went through the broadcast
    assert len(pyros) == 3 and pyros[1].abs().sum() > 0
    for mine, theirs in zip(ours, pyros, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_pyros_sampling_backend_draws_the_same_posterior() -> None:
    """``infer_discrete`` (Pyro's torch_sample backend, which calls the log-space einsum forward) on
    2,000 copies of a two-state chain: with and without the block, the frequency of each state at each
    time is the posterior's, found from all 64 paths."""
    import pyro.distributions as dist
    from pyro.infer import infer_discrete

    observations = torch.tensor([0.0, 0.2, 1.1, 0.9, 1.2, -0.1])
    transition, means = torch.tensor([[0.8, 0.2], [0.3, 0.7]]), torch.tensor([0.0, 1.0])

    @pyro.infer.config_enumerate
    def chains() -> None:
        with pyro.plate("chains", 2000, dim=-1):
            state = 0
            for t in pyro.markov(range(len(observations))):
                state = pyro.sample(f"x_{t}", dist.Categorical(transition[state]))
                pyro.sample(f"y_{t}", dist.Normal(means[state], 0.5), obs=observations[t])

    def frequencies() -> torch.Tensor:
        pyro.set_rng_seed(0)
        trace = pyro.poutine.trace(infer_discrete(chains, first_available_dim=-2)).get_trace()
        return torch.stack([trace.nodes[f"x_{t}"]["value"] for t in range(len(observations))]).float().mean(1)

    def exact() -> torch.Tensor:
        """P(x_t = 1 | y) from the joint of all 64 state sequences."""
        paths = torch.tensor(list(itertools.product([0, 1], repeat=len(observations))))
        steps = transition[torch.cat([torch.zeros(64, 1, dtype=torch.long), paths[:, :-1]], 1), paths]
        joint = steps.log().sum(1) + dist.Normal(means[paths], 0.5).log_prob(observations).sum(1)
        return (joint.softmax(0).unsqueeze(1) * paths).sum(0)

    pyros = frequencies()
    with log_contractions_by_broadcast():
        ours = frequencies()
    assert ((exact() > 0.1) & (exact() < 0.9)).any()  # some states are uncertain
    torch.testing.assert_close(pyros, exact(), rtol=0, atol=0.04)  # 2,000 draws: a standard error under 0.012
    torch.testing.assert_close(ours, exact(), rtol=0, atol=0.04)


def test_a_fit_contracts_by_broadcast(train_in_process: Callable[..., dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """``train`` runs the fit inside the block: the built-in GMM's enumerated assignments are summed
    out through ``broadcast_log_einsum``."""
    calls: list[str] = []
    monkeypatch.setattr(patches, "_broadcast_plan", _counting(patches._broadcast_plan, calls))
    summary = train_in_process(
        "model=gmm", "trainer.max_steps=3", "tensorboard.image_every_n_steps=null", "callbacks.diagnostics=null"
    )
    assert summary["status"] == "completed" and summary["steps"] == 3
    assert calls
