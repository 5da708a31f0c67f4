"""The compiled SVI step: Pyro's own ELBO and its gradient, traced once into one flat graph.

Pyro builds the loss through Python messengers on every step; for small and medium models that
Python work, not the arithmetic, is the cost. ``make_fx`` runs Pyro's ELBO (and autograd's
backward pass) once and records only the tensor operations, so later steps replay a flat graph
of aten ops, with no Pyro code running. The random draws are operations in the graph too, so each
replay samples afresh from torch's generator. With ``backend="inductor"`` the graph is then compiled
into fused kernels; ``backend="fx"`` replays it as it is (no compile time).

The graph is only valid while the model's structure does not depend on the values of its data or
samples (same sites, same shapes, no value-dependent branches), and for fixed batch shapes, which
the data module guarantees. Where every step's batch holds the same values (the whole data set), a
model may read values computed from the data alone (``range(lengths.max())`` in Pyro's HMM example):
those are the same every step, and the trace reads them (``fixed_batch``).
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
from torch._dynamo.utils import counters
from torch._guards import TracingContext, tracing
from torch._inductor.decomposition import select_decomp_table
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import ShapeEnv

from lightning_svi.compile.graph_passes import hoist_elementwise_before_expand, without_outputs
from lightning_svi.core.estimators import ComputedLogProbs, StepTraces
from lightning_svi.core.params import constrained
from lightning_svi.core.patches import DataValuesReadable, pyro_static_tracing
from lightning_svi.core.programs.sides import ParameterSides
from lightning_svi.core.rng import untouched_rng
from lightning_svi.core.step_statistics import SMALL_PARAMETER, StepStatistics, gradient_norm
from lightning_svi.core.svi_model import Batch
from lightning_svi.errors import UserInputError

BACKENDS = ("fx", "inductor")
# The graph's named outputs after the loss and gradients, in order (``_step``; empty where not computed).
OUTPUT_GROUPS = ("log_p", "log_q", "gradient_norms", "log_evidence", "parameters")
aten = torch.ops.aten


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


def _reads_a_value(error: BaseException) -> bool:
    """Whether tracing failed because the traced code asked for a tensor's value (a Python ``bool``,
    ``int`` or ``float`` of it: ``make_fx`` raises at ``aten._local_scalar_dense``)."""
    return "_local_scalar_dense" in str(error)


def _trace(step: Callable[..., Any], inputs: list[torch.Tensor], backend: str) -> torch.fx.GraphModule:
    """``step`` as a graph of aten ops; for inductor, of the ops its own decompositions leave (so
    that ``hoist_elementwise_before_expand`` sees the elementwise maths inside composite ops such
    as ``binary_cross_entropy_with_logits``), with that rewrite applied."""
    if backend != "inductor":
        return make_fx(step)(*inputs)
    graph = make_fx(step, decomposition_table=_decompositions())(*inputs)
    hoist_elementwise_before_expand(graph, inputs)
    return graph


def _normal(mean: Any, std: Any, generator: torch.Generator | None = None) -> torch.Tensor:
    """``torch.normal(mean, std)`` as ``randn * std + mean``: the same draws from the same generator
    (torch fills the output with standard normals, then scales and shifts it), in ops inductor
    generates itself. Inductor's own decomposition leaves a ``prims.normal`` that runs as a Python
    fallback: 250 µs a call, two of the GMM step's 600."""
    shape = torch.broadcast_shapes(torch.as_tensor(mean).shape, torch.as_tensor(std).shape)
    like = mean if isinstance(mean, torch.Tensor) else std
    return torch.randn(shape, dtype=like.dtype, device=like.device, generator=generator) * std + mean


def _decompositions() -> dict[Any, Callable[..., Any]]:
    """Inductor's decompositions, with ``torch.normal(mean, std)`` through ``randn`` (``_normal``)."""
    table = dict(select_decomp_table())
    for overload in (aten.normal.Tensor_Tensor, aten.normal.Tensor_float, aten.normal.float_Tensor):
        table[overload] = _normal
    return table


def _inductor(graph: torch.fx.GraphModule, example_inputs: list[Any]) -> tuple[Callable[..., Any], bool]:
    """The graph compiled by inductor directly, without dynamo: its guard checks on every call cost
    as much as the compiled step of a small model. Compiled for the shapes and dtypes of
    ``example_inputs``, which every batch of the data module shares, so the generated code's checks
    of its inputs' sizes and alignment are left out (they cost a tenth of a small model's step).

    Inductor's FX graph cache (``TORCHINDUCTOR_CACHE_DIR``, ``compile.cache_dir``) keys a graph by
    its shapes through a tracing context's shape environment; without one it is bypassed and every
    run compiles afresh (20 s instead of 4 s for the beta-Bernoulli step). Returns the compiled
    step and whether it came from that cache."""
    hits = counters["inductor"]["fxgraph_cache_hit"]
    with tracing(TracingContext(FakeTensorMode(shape_env=ShapeEnv()))):
        compiled = torch._inductor.compile(
            graph, example_inputs, options={"size_asserts": False, "alignment_asserts": False}
        )
    return compiled, counters["inductor"]["fxgraph_cache_hit"] > hits


def updates_in_graph(optimizer: torch.optim.Optimizer | None) -> bool:
    """Whether the graph can apply ``optimizer``'s update itself: torch's fused Adam (the default),
    whose state layout the graph reads and writes in place."""
    return type(optimizer) is torch.optim.Adam and all(
        group["fused"] and not group["amsgrad"] and not group["maximize"] for group in optimizer.param_groups
    )


class CompiledSVIStep:
    """Loss, gradients of θ and φ, and per-site log p / log q of one SVI step, as one graph; with
    torch's fused Adam, the graph can also apply the update (``update=True``), reading and writing
    the optimizer's own state, so that a step needs no optimizer call.

    With the optimizer in the graph, the graph also computes what a logged step reports
    (``StepStatistics``): each group's gradient norm, the small parameters after the update, and
    with ``evidence_of_batch`` (the batch is the whole data set) the model's closed-form
    ``log_evidence`` before it. A logged step then costs one copy of a few scalars to the host, not
    an eager pass of each logger.

    ``fixed_batch``: every step's batch holds the values of ``example_batch`` (the whole data set,
    the same rows every step). A model whose trace reads a value of its data (a loop over
    ``range(lengths.max())``) is then traced again with its data's values known to the trace, which
    fixes what it computes from the data alone; reads of values that depend on parameters or samples
    still fail. Without it (minibatches: the values change) any read of a value fails.
    """

    def __init__(
        self,
        svi: nn.Module,
        estimator: ELBO,
        example_batch: Batch,
        backend: str = "inductor",
        optimizer: torch.optim.Optimizer | None = None,
        sides: ParameterSides | None = None,
        evidence_of_batch: bool = False,
        fixed_batch: bool = False,
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
        self.sides = sides if self.optimizer is not None else None
        self.evidence_of_batch = evidence_of_batch and self.optimizer is not None
        self._batch_names = list(example_batch)
        self._readable_data: DataValuesReadable | None = None  # set while a trace may read the batch's values
        device = self.parameters[0].device
        self._flags = {update: torch.tensor(float(update), device=device) for update in (0, 1)}
        if self.optimizer is not None:
            self._rates_set: list[float] | None = None  # the rates ``_rates`` holds
            self._host_rates = torch.zeros(len(self.optimizer.param_groups), dtype=torch.float32)
            self._host_rates_view = self._host_rates.numpy()
            self._rates = self._host_rates.to(device)  # the same tensor on the CPU
        self._state = self._state_tensors()
        started = time.perf_counter()
        inputs = self._flat_inputs(example_batch, update=False)
        try:
            graph = self._traced(inputs, backend, fixed_batch)
            # A step nobody reads (``advance``) runs a graph of the update alone, where the optimizer is in the graph.
            advance = without_outputs(graph) if self.optimizer is not None else None
            self.graph, self.cache_hit = self._compiled(graph, inputs, backend)
            self(example_batch, update=False)  # a first call, so that training steps are timed without any warm-up
            if advance is not None:
                self._advance_graph, advance_hit = self._compiled(advance, inputs, backend)
                self._advance_graph(*self._flat_inputs(example_batch, update=False))  # its first call: no update
                self.cache_hit = self.cache_hit and advance_hit
        except Exception as error:
            raise CompileError(f"the model and guide could not be traced into a static graph: {_why(error)}") from None
        self.compile_seconds = time.perf_counter() - started  # tracing, compiling, first calls

    def _traced(self, inputs: list[torch.Tensor], backend: str, fixed_batch: bool) -> torch.fx.GraphModule:
        """The step's graph; where the first trace reads a value and ``fixed_batch`` holds, the graph of
        a second trace that may read the batch's values. Only then: a model that traces without reading
        values gets the graph it always got, at the cost of one trace."""
        try:
            with pyro_static_tracing():
                return _trace(self._flat_step, inputs, backend)
        except Exception as error:
            if not (fixed_batch and _reads_a_value(error)):
                raise
        try:
            with pyro_static_tracing(), DataValuesReadable() as self._readable_data:
                return _trace(self._flat_step, inputs, backend)
        finally:
            self._readable_data = None

    @staticmethod
    def _compiled(
        graph: torch.fx.GraphModule, inputs: list[torch.Tensor], backend: str
    ) -> tuple[Callable[..., Any], bool | None]:
        """``graph`` compiled by inductor, and whether its cache held it; or replayed as it is (``fx``)."""
        return _inductor(graph, list(inputs)) if backend == "inductor" else (graph, None)

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
        """Each group's learning rate, in one tensor that every call reads, written in place when a
        schedule has changed a rate (the default one does on every step: a new tensor each time cost
        20 µs, a fifth of a small model's compiled step)."""
        rates = [group["lr"] for group in self.optimizer.param_groups]
        if rates != self._rates_set:
            self._rates_set = rates
            self._host_rates_view[:] = rates
            if self._rates is not self._host_rates:
                self._rates.copy_(self._host_rates)
        return self._rates

    def _flat_step(self, *flat: torch.Tensor) -> list[torch.Tensor]:
        """``_step`` on ``_flat_inputs``, returning its outputs as one flat list (their names are kept
        in ``_layout`` for ``__call__``)."""
        count = len(self.parameters)
        values, rest = list(flat[:count]), flat[count:]
        if self.optimizer is not None:
            moments = [tuple(rest[3 * i : 3 * i + 3]) for i in range(count)]
            rest = rest[3 * count :]
            adam, rest = (moments, rest[0], rest[1]), rest[2:]
        else:
            adam = None
        if self._readable_data is not None:
            self._readable_data.add(rest)
        batch = dict(zip(self._batch_names, rest, strict=True))
        loss, gradients, named = self._step(values, adam, batch)
        self._layout = {group: list(outputs) for group, outputs in named.items()}
        return [loss, *gradients, *(value for outputs in named.values() for value in outputs.values())]

    def _step(self, values: list[torch.Tensor], adam: tuple | None, batch: Batch) -> tuple[Any, ...]:
        """The loss and gradients, then the named outputs: log p and log q per site and, with the
        optimizer in the graph, the gradient norms, the evidence before the update and the parameters after it."""
        inputs = [value.detach().requires_grad_() for value in values]  # the callers' tensors keep no grad
        loss = torch.func.functional_call(self.svi, dict(zip(self.names, inputs, strict=True)), (batch,))
        gradients = torch.autograd.grad(loss, inputs, allow_unused=True)
        gradients = [torch.zeros_like(value) if g is None else g for value, g in zip(inputs, gradients, strict=True)]
        traces = self.estimator.last_traces
        self._enumerated = traces.is_enumerated if isinstance(traces, StepTraces) else False
        named: dict[str, dict[Any, torch.Tensor]] = {group: {} for group in OUTPUT_GROUPS}
        named.update(log_p=traces.log_p_sites, log_q=traces.log_q_sites)
        if adam is not None:
            named["gradient_norms"] = self._gradient_norms(gradients)
            named["log_evidence"] = self._log_evidence(values, batch)  # θ before the update
            self._adam(values, gradients, *adam)
            named["parameters"] = self._small_parameters(values)  # after it
        return loss.detach(), gradients, named

    def _gradient_norms(self, gradients: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        groups = self.optimizer.param_groups
        return {
            groups[index].get("name", str(index)): gradient_norm(
                [g for g, group in zip(gradients, self.groups, strict=True) if group == index], fused=True
            )
            for index in sorted(set(self.groups))
        }

    def _log_evidence(self, values: list[torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """The model's closed-form log p_θ(x) of ``batch`` (the whole data set) at ``values``, if it has one."""
        if not self.evidence_of_batch or getattr(self.svi.model, "log_evidence", None) is None:
            return {}
        with torch.no_grad():
            evidence = torch.func.functional_call(
                _Evidence(self.svi), {f"svi.{name}": value for name, value in zip(self.names, values, strict=True)},
                (batch,),
            )  # fmt: skip
        return {} if evidence is None else {"log_evidence": evidence}

    def _small_parameters(self, values: list[torch.Tensor]) -> dict[tuple[str, str], torch.Tensor]:
        """Constrained values of the parameters small enough to log element by element, by (side, name)."""
        if self.sides is None:
            return {}
        index_of = {id(parameter): index for index, parameter in enumerate(self.parameters)}
        small = {}
        for side, named in (("theta", self.sides.theta), ("phi", self.sides.phi)):
            for name, (parameter, constraint) in named.items():
                if id(parameter) in index_of and parameter.numel() <= SMALL_PARAMETER:
                    value = values[index_of[id(parameter)]]
                    small[side, name] = constrained({name: (value, constraint)})[name].clone()
        return small

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

    def __call__(self, batch: Batch, update: bool) -> tuple[torch.Tensor, ComputedLogProbs, StepStatistics]:
        """The loss, log-probs and statistics of one step on ``batch``. With ``update`` the graph has
        applied the optimizer's update (Adam in the graph); without, the gradients land in each
        parameter's ``.grad`` for the optimizer, and the statistics hold no parameters."""
        out = self.graph(*self._flat_inputs(batch, update=update))
        count = len(self.parameters)
        if not update:
            for parameter, gradient in zip(self.parameters, out[1 : 1 + count], strict=True):
                parameter.grad = gradient
        named, position = {}, 1 + count
        for group, keys in self._layout.items():
            named[group] = dict(zip(keys, out[position : position + len(keys)], strict=True))
            position += len(keys)
        parameters: dict[str, dict[str, torch.Tensor]] = {}
        for (side, name), value in named["parameters"].items() if update else ():
            parameters.setdefault(side, {})[name] = value
        sampled = (lambda: self._sampled_log_probs(batch)) if self._enumerated else None
        statistics = StepStatistics(named["gradient_norms"], parameters, named["log_evidence"].get("log_evidence"))
        return out[0], ComputedLogProbs(named["log_p"], named["log_q"], sampled), statistics

    def _sampled_log_probs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The sites of enumerated blocks at one posterior sample of the enumerated values, as the
        eager path logs them (``StepTraces.log_p_sampled_sites``). The graph keeps no sample of its
        own, so this is one eager loss evaluation, from a fresh guide sample at the parameters the
        step left, run only when a logging step reads it; the random stream is left as it was."""
        with untouched_rng(self.parameters[0].device):
            self.svi(batch)  # with autograd on, which TraceEnum_ELBO requires; its loss is dropped
            return self.estimator.last_traces.log_p_sampled_sites

    @property
    def reports_evidence(self) -> bool:
        """Whether every step's statistics hold the model's closed-form evidence."""
        return bool(self._layout["log_evidence"])

    def advance(self, batch: Batch) -> None:
        """One step on ``batch`` whose update the graph applies itself (Adam in the graph); nothing
        observes it, so it runs the graph of the update alone (``without_outputs``)."""
        self._advance_graph(*self._flat_inputs(batch, update=True))


class _Evidence(nn.Module):
    """``svi.model.log_evidence`` as a module call, for ``functional_call`` to run at given parameters."""

    def __init__(self, svi: nn.Module) -> None:
        super().__init__()
        self.svi = svi

    def forward(self, batch: Batch) -> torch.Tensor | None:
        return self.svi.model.log_evidence(batch)


def _initialise_adam_state(optimizer: torch.optim.Optimizer) -> None:
    """The state torch's fused Adam creates at its first step, created now for the graph to trace."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            state = optimizer.state[parameter]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=parameter.device)
                state["exp_avg"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
