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
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
import torch._inductor
from pyro.infer import ELBO
from torch import nn
from torch._inductor.decomposition import select_decomp_table
from torch.fx.experimental.proxy_tensor import make_fx

from lightning_svi.compile.graph_passes import hoist_elementwise_before_expand
from lightning_svi.core.estimators import ComputedLogProbs, StepTraces
from lightning_svi.core.patches import pyro_static_tracing
from lightning_svi.core.rng import untouched_rng
from lightning_svi.core.svi_model import Batch
from lightning_svi.errors import UserInputError

BACKENDS = ("fx", "inductor")


class CompileError(UserInputError):
    """The model or guide cannot be traced into a static graph."""


_LIBRARIES = tuple(str(Path(module.__file__).parent) for module in (torch, pyro, sys.modules["lightning_svi"]))


def _why(error: BaseException) -> str:
    """Why tracing failed, in one line: where the user's code asked for a tensor's value (the usual
    cause: a branch, loop or assert on data or samples), or else the error itself."""
    user_frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith(_LIBRARIES) and "/site-packages/" not in frame.filename
    ]
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if user_frames and "_local_scalar_dense" in message:
        frame = user_frames[-1]
        return (
            f"{frame.name} ({frame.filename}:{frame.lineno}) reads a tensor's value in `{frame.line}`, so what the "
            "step computes depends on the data or the samples; compiled mode needs the same operations every step"
        )
    where = f" in {user_frames[-1].name} ({user_frames[-1].filename}:{user_frames[-1].lineno})" if user_frames else ""
    return f"{type(error).__name__}{where}: {message}"


def _trace(step: Callable[..., Any], inputs: list[torch.Tensor], backend: str) -> torch.fx.GraphModule:
    """``step`` as a graph of aten ops; for inductor, of the ops its own decompositions leave (so
    that ``hoist_elementwise_before_expand`` sees the elementwise maths inside composite ops such
    as ``binary_cross_entropy_with_logits``), with that rewrite applied."""
    if backend != "inductor":
        return make_fx(step)(*inputs)
    graph = make_fx(step, decomposition_table=select_decomp_table())(*inputs)
    hoist_elementwise_before_expand(graph, inputs)
    return graph


def _inductor(graph: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
    """The graph compiled by inductor directly, without dynamo: its guard checks on every call cost
    as much as the compiled step of a small model. Compiled for the shapes and dtypes of
    ``example_inputs``, which every batch of the data module shares, so the generated code's checks
    of its inputs' sizes and alignment are left out (they cost a tenth of a small model's step)."""
    return torch._inductor.compile(graph, example_inputs, options={"size_asserts": False, "alignment_asserts": False})


def updates_in_graph(optimizer: torch.optim.Optimizer | None) -> bool:
    """Whether the graph can apply ``optimizer``'s update itself: torch's fused Adam (the default),
    whose state layout the graph reads and writes in place."""
    return type(optimizer) is torch.optim.Adam and all(
        group["fused"] and not group["amsgrad"] and not group["maximize"] for group in optimizer.param_groups
    )


class CompiledSVIStep:
    """Loss, gradients of θ and φ, and per-site log p / log q of one SVI step, as one graph; with
    torch's fused Adam, the graph can also apply the update (``advance``), reading and writing
    the optimizer's own state, so that steps no callback observes need no optimizer call."""

    def __init__(
        self,
        svi: nn.Module,
        estimator: ELBO,
        example_batch: Batch,
        backend: str = "inductor",
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.svi = svi
        self.estimator = estimator
        trained = [(name, parameter) for name, parameter in svi.named_parameters() if parameter.requires_grad]
        self.names = [name for name, _ in trained]
        self.parameters = [parameter for _, parameter in trained]
        self.optimizer = optimizer if updates_in_graph(optimizer) else None
        if self.optimizer is not None:
            _initialise_adam_state(self.optimizer)
            group_of = {
                id(p): index for index, group in enumerate(self.optimizer.param_groups) for p in group["params"]
            }
            self.groups = [group_of[id(parameter)] for parameter in self.parameters]
        self._batch_names = list(example_batch)
        self._flags = {update: torch.tensor(float(update), device=self.parameters[0].device) for update in (0, 1)}
        self._rates: tuple[list[float], torch.Tensor] | None = None
        self._state = self._state_tensors()
        started = time.perf_counter()
        inputs = self._flat_inputs(example_batch, update=False)
        try:
            with pyro_static_tracing():
                graph = _trace(self._flat_step, inputs, backend)
            self.graph = _inductor(graph, list(inputs)) if backend == "inductor" else graph
            self(example_batch)  # a first call, so that training steps are timed without any warm-up
        except Exception as error:
            raise CompileError(f"the model and guide could not be traced into a static graph: {_why(error)}") from None
        self.compile_seconds = time.perf_counter() - started  # tracing, compiling, first call

    def _flat_inputs(self, batch: Batch, update: bool) -> list[torch.Tensor]:
        """The graph's inputs as one flat list (no pytree work per call): θ and φ values, then with
        Adam in the graph each parameter's moments and step, the learning rates and the update
        flag, then the batch's columns."""
        if self.optimizer is None:
            return [*self._state, *batch.values()]
        return [*self._state, self._learning_rates(), self._flags[update], *batch.values()]

    def _state_tensors(self) -> list[torch.Tensor]:
        """θ, φ and (with Adam in the graph) the optimizer's moments and steps: tensors that every
        step updates in place, so one list of them serves every call."""
        state = [parameter.detach() for parameter in self.parameters]
        if self.optimizer is not None:
            for parameter in self.parameters:
                moments = self.optimizer.state[parameter]
                state += [moments["exp_avg"], moments["exp_avg_sq"], moments["step"]]
        return state

    def _learning_rates(self) -> torch.Tensor:
        """Each group's learning rate as one tensor, rebuilt only when a schedule has changed one."""
        rates = [group["lr"] for group in self.optimizer.param_groups]
        if self._rates is None or self._rates[0] != rates:
            self._rates = (rates, torch.tensor(rates, dtype=torch.float32, device=self.parameters[0].device))
        return self._rates[1]

    def _flat_step(self, *flat: torch.Tensor) -> list[torch.Tensor]:
        """``_step`` on ``_flat_inputs``, returning the loss, the gradients and the sites' log-probs
        flat (their site names are kept for ``__call__``)."""
        count = len(self.parameters)
        values, rest = list(flat[:count]), flat[count:]
        if self.optimizer is not None:
            moments = [tuple(rest[3 * i : 3 * i + 3]) for i in range(count)]
            rest = rest[3 * count :]
            adam, rest = (moments, rest[0], rest[1]), rest[2:]
        else:
            adam = None
        batch = dict(zip(self._batch_names, rest, strict=True))
        loss, gradients, log_p_sites, log_q_sites = self._step(values, adam, batch)
        self._site_names = (list(log_p_sites), list(log_q_sites))
        return [loss, *gradients, *log_p_sites.values(), *log_q_sites.values()]

    def _step(self, values: list[torch.Tensor], adam: tuple | None, batch: Batch) -> tuple[Any, ...]:
        inputs = [value.detach().requires_grad_() for value in values]  # the callers' tensors keep no grad
        loss = torch.func.functional_call(self.svi, dict(zip(self.names, inputs, strict=True)), (batch,))
        gradients = torch.autograd.grad(loss, inputs, allow_unused=True)
        gradients = [torch.zeros_like(value) if g is None else g for value, g in zip(inputs, gradients, strict=True)]
        if adam is not None:
            self._adam(values, gradients, *adam)
        traces = self.estimator.last_traces
        self._enumerated = traces.is_enumerated if isinstance(traces, StepTraces) else False
        return loss.detach(), gradients, traces.log_p_sites, traces.log_q_sites

    def _adam(self, values: list[torch.Tensor], gradients: list[torch.Tensor], moments: list, rates, flag) -> None:
        """torch's Adam update, in place where ``flag`` is 1, left as it was where it is 0."""
        apply = flag > 0
        for value, gradient, (exp_avg, exp_avg_sq, step), index in zip(
            values, gradients, moments, self.groups, strict=True
        ):
            group = self.optimizer.param_groups[index]
            (beta1, beta2), eps, weight_decay = group["betas"], group["eps"], group["weight_decay"]
            gradient = gradient + weight_decay * value if weight_decay else gradient
            new_step = step + flag
            new_exp_avg = exp_avg.lerp(gradient, 1 - beta1)
            new_exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * gradient * gradient
            bias_correction1 = 1 - beta1**new_step
            bias_correction2 = 1 - beta2**new_step
            denominator = new_exp_avg_sq.sqrt() / bias_correction2.sqrt() + eps
            new_value = value - rates[index] / bias_correction1 * new_exp_avg / denominator
            value.copy_(torch.where(apply, new_value, value))
            exp_avg.copy_(torch.where(apply, new_exp_avg, exp_avg))
            exp_avg_sq.copy_(torch.where(apply, new_exp_avg_sq, exp_avg_sq))
            step.copy_(new_step)

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, ComputedLogProbs]:
        """The loss and log-probs of one step on ``batch``; the gradients land in each parameter's
        ``.grad`` for the optimizer."""
        out = self.graph(*self._flat_inputs(batch, update=False))
        count = len(self.parameters)
        for parameter, gradient in zip(self.parameters, out[1 : 1 + count], strict=True):
            parameter.grad = gradient
        log_p_names, log_q_names = self._site_names
        log_p = dict(zip(log_p_names, out[1 + count : 1 + count + len(log_p_names)], strict=True))
        log_q = dict(zip(log_q_names, out[1 + count + len(log_p_names) :], strict=True))
        sampled = (lambda: self._sampled_log_probs(batch)) if self._enumerated else None
        return out[0], ComputedLogProbs(log_p, log_q, sampled)

    def _sampled_log_probs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The sites of enumerated blocks at one posterior sample of the enumerated values, as the
        eager path logs them (``StepTraces.log_p_sampled_sites``). The graph keeps no sample of its
        own, so this is one eager loss evaluation, from a fresh guide sample at the parameters the
        step left, run only when a logging step reads it; the random stream is left as it was."""
        with untouched_rng(self.parameters[0].device):
            self.svi(batch)  # with autograd on, which TraceEnum_ELBO requires; its loss is dropped
            return self.estimator.last_traces.log_p_sampled_sites

    def advance(self, batch: Batch) -> None:
        """One step on ``batch`` whose update the graph applies itself (Adam in the graph); nothing
        observes it, so nothing of its outputs is kept."""
        self.graph(*self._flat_inputs(batch, update=True))


def _initialise_adam_state(optimizer: torch.optim.Optimizer) -> None:
    """The state torch's fused Adam creates at its first step, created now for the graph to trace."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            state = optimizer.state[parameter]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=parameter.device)
                state["exp_avg"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
