"""The compiled SVI step: Pyro's own ELBO and its gradient, traced once into one flat graph.

Pyro builds the loss through Python messengers on every step; for small and medium models that
Python work, not the arithmetic, is the cost. ``make_fx`` runs Pyro's ELBO (and autograd's
backward pass) once and records only the tensor operations, so later steps replay a flat graph
of aten ops, with no Pyro code running. The random draws are operations in the graph too, so each
replay samples afresh from torch's generator. With ``backend="inductor"`` the graph is then compiled
into fused kernels; ``backend="fx"`` replays it as it is (no compile time).

The graph is only valid while the model's structure does not depend on the values of its data or
samples (same sites, same shapes, no value-dependent branches), and for fixed batch shapes, which
the data module guarantees.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pyro.util
import torch
import torch._inductor
from pyro.infer import ELBO
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from lightning_svi.errors import UserInputError
from lightning_svi.estimators import ComputedLogProbs
from lightning_svi.models.base import Batch

BACKENDS = ("fx", "inductor")


class CompileError(UserInputError):
    """The model or guide cannot be traced into a static graph."""


_masked_select = torch.Tensor.masked_select


def _dice_masked_select(tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Dice's expectation (``pyro.infer.util``) masks its factors and costs alike, then dots them:
    zeros in place of the masked entries give the same dot product (and gradient) in a tensor of
    fixed size, which the compiler can fuse; a value-dependent size splits the graph."""
    if sys._getframe(1).f_globals.get("__name__") == "pyro.infer.util":
        return torch.where(mask, tensor, 0).reshape(-1)
    return _masked_select(tensor, mask)


@contextmanager
def _pyro_static_tracing() -> Iterator[None]:
    """Skip Pyro's value-dependent checks while tracing: they ask whether torch.jit is tracing
    (``mask.all()`` in Dice) or test tensors for NaN, which a graph cannot do."""
    with (
        mock.patch.object(torch._C, "_get_tracing_state", lambda: True),
        mock.patch.object(pyro.util, "torch_isnan", lambda value: False),
        mock.patch.object(pyro.util, "torch_isinf", lambda value: False),
        mock.patch.object(torch.Tensor, "masked_select", _dice_masked_select),
    ):
        yield


def _inductor(graph: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
    """The graph compiled by inductor directly, without dynamo: its guard checks on every call cost
    as much as the compiled step of a small model. Compiled for the shapes and dtypes of
    ``example_inputs``, which every batch of the data module shares."""
    return torch._inductor.compile(graph, example_inputs)


class CompiledSVIStep:
    """Loss, gradients of θ and φ, and per-site log p / log q of one SVI step, as one graph."""

    def __init__(self, svi: nn.Module, estimator: ELBO, example_batch: Batch, backend: str = "inductor") -> None:
        self.svi = svi
        self.estimator = estimator
        trained = [(name, parameter) for name, parameter in svi.named_parameters() if parameter.requires_grad]
        self.names = [name for name, _ in trained]
        self.parameters = [parameter for _, parameter in trained]
        values = [parameter.detach() for parameter in self.parameters]
        started = time.perf_counter()
        try:
            with _pyro_static_tracing():
                graph = make_fx(lambda values, batch: self._loss_gradients_and_log_probs(values, batch))(
                    values, example_batch
                )
        except Exception as error:
            raise CompileError(
                f"compile.enabled=true: the model and guide could not be traced into a static graph "
                f"({type(error).__name__}: {str(error).splitlines()[0]}). This happens when a model branches on "
                "the values of its data or samples, or changes its sites from step to step. "
                "Train it with compile.enabled=false."
            ) from None
        self.graph = _inductor(graph, [values, example_batch]) if backend == "inductor" else graph
        self(example_batch)  # a first call, so that training steps are timed without any warm-up
        self.compile_seconds = time.perf_counter() - started  # tracing, compiling, first call

    def _loss_gradients_and_log_probs(self, values: list[torch.Tensor], batch: Batch) -> tuple[Any, ...]:
        inputs = [value.detach().requires_grad_() for value in values]  # the callers' tensors keep no grad
        loss = torch.func.functional_call(self.svi, dict(zip(self.names, inputs, strict=True)), (batch,))
        gradients = torch.autograd.grad(loss, inputs, allow_unused=True)
        gradients = [torch.zeros_like(value) if g is None else g for value, g in zip(inputs, gradients, strict=True)]
        traces = self.estimator.last_traces
        return loss.detach(), gradients, traces.log_p_sites, traces.log_q_sites

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, ComputedLogProbs]:
        """The loss and log-probs of one step on ``batch``; the gradients land in each parameter's ``.grad``."""
        loss, gradients, log_p_sites, log_q_sites = self.graph([p.detach() for p in self.parameters], batch)
        for parameter, gradient in zip(self.parameters, gradients, strict=True):
            parameter.grad = gradient
        return loss, ComputedLogProbs(log_p_sites, log_q_sites)
