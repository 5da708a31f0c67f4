"""Every patch of torch's and Pyro's own code, each applied only inside a context manager.

Each is a speed or traceability fix that a supported route does not give on torch 2.13 / Pyro 1.9.2
(the range pinned in pyproject.toml). ``tests/test_patches.py`` checks, per patch, that the patched
library still behaves as the patch assumes, so an upgrade that changes it fails there, not in a run.

* ``positive_as_exp``: positive parameters constrained by ``exp`` alone (the whole fit, ``train``).
* ``plain_sums_without_dice_factors``: ``TraceEnum_ELBO``'s expectation as the plain sum of its costs
  when the guide gives no Dice factor (the whole fit, ``train``).
* ``bernoulli_logits_of_sigmoids``: a Bernoulli's probabilities made by ``torch.sigmoid`` read back
  as the clamped logits they came from (the whole fit, ``train``, and every traced step).
* ``log_contractions_by_broadcast``: the log-space contractions of enumerated sites as one
  log-sum-exp over the broadcast sum of their operands, where that sum is small (the whole fit, ``train``).
* ``pyro_static_tracing``: Pyro's value-dependent checks skipped while a step is traced into a graph
  (``compile.compiled_step``).
* ``DataValuesReadable``: a trace may read values computed from the data alone, where every step
  reads the same data (``compile.compiled_step``, ``fixed_batch``).
"""

from __future__ import annotations

import functools
import math
import sys
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from unittest import mock

import pyro
import pyro.infer.trace_elbo
import pyro.infer.util
import pyro.ops.einsum.torch_log
import pyro.util
import torch
import torch.distributions.bernoulli
from opt_einsum.backends import dispatch as opt_einsum_dispatch
from pyro.ops.einsum.util import Tensordot
from pyro.ops.special import safe_log
from torch.distributions import biject_to, constraints, transform_to
from torch.distributions.constraint_registry import ConstraintRegistry
from torch.distributions.transforms import AffineTransform, ComposeTransform, ExpTransform, Transform
from torch.fx.experimental import proxy_tensor

# -- positive parameters constrained by exp alone, as torch means them to be ---------------------
#
# torch registers ``ExpTransform`` for ``constraints.positive`` and then, for the same constraint
# class (``positive`` is ``greater_than(0)``), ``exp`` followed by ``0 + 1 · x``; the later
# registration wins. Every read of a positive ``PyroParam`` (and every positive latent site an
# autoguide constrains) then runs two extra tensor ops forward and two backward, and builds three
# transform objects: on the 5,000-flip beta-Bernoulli, four reads a step, 3–12 % of the step in
# interleaved runs with and without (docs/performance.md). ``train`` runs the fit inside ``positive_as_exp``.

_LOWER_BOUNDED = (constraints.greater_than, constraints.greater_than_eq)  # classes: positive's and nonnegative's


def exp_above_lower_bound(constraint: constraints.Constraint) -> Transform:
    """torch's transform for a lower bound, without its identity affine part when the bound is 0:
    the same values and gradients."""
    bound = constraint.lower_bound
    if isinstance(bound, int | float) and bound == 0:
        return ExpTransform()
    return ComposeTransform([ExpTransform(), AffineTransform(bound, 1)])


@contextmanager
def positive_as_exp() -> Iterator[None]:
    """Within the block, ``transform_to`` and ``biject_to`` give ``exp_above_lower_bound`` for
    lower-bounded constraints; the factories registered before come back after it."""
    registries: tuple[ConstraintRegistry, ...] = (transform_to, biject_to)
    # The registry has no public read-back; ``_registry`` maps constraint classes to factories.
    saved = [(registry, kind, registry._registry.get(kind)) for registry in registries for kind in _LOWER_BOUNDED]
    for registry in registries:
        for kind in _LOWER_BOUNDED:
            registry.register(kind, exp_above_lower_bound)
    try:
        yield
    finally:
        for registry, kind, factory in saved:
            if factory is None:
                registry._registry.pop(kind, None)
            else:
                registry._registry[kind] = factory


# -- Dice's expectation as a plain sum when the guide gives no factor ----------------------------
#
# ``TraceEnum_ELBO`` ends every evaluation with ``Dice(guide_trace, ordering).compute_expectation(costs)``:
# per ordinal, a contraction of the guide's Dice factors (score functions of its non-reparameterized
# sites, weights of its enumerated ones) against a zero query, its backward pass, and a dot product of
# each cost with the marginal probabilities found. A guide of reparameterized, non-enumerated sites
# (``AutoDelta`` or ``AutoNormal`` beside a model that enumerates its discrete sites: the GMM, the HMM)
# gives no factor: every probability is exp(0) = 1 and the expectation is the sum of the costs.

_compute_expectation = pyro.infer.util.Dice.compute_expectation


def _sum_without_factors(dice: pyro.infer.util.Dice, costs: dict) -> torch.Tensor | float:
    """``Dice.compute_expectation`` where the guide gave no Dice factor: the costs' sum, whose
    gradient is theirs; Pyro's own computation otherwise."""
    if dice.log_probs or dice.log_denom:
        return _compute_expectation(dice, costs)
    total: torch.Tensor | float = 0.0
    for cost_terms in costs.values():
        for cost in cost_terms:
            total = total + cost.sum()
    return total


@contextmanager
def plain_sums_without_dice_factors() -> Iterator[None]:
    """Within the block, Dice's expectation is ``_sum_without_factors``."""
    with mock.patch.object(pyro.infer.util.Dice, "compute_expectation", _sum_without_factors):
        yield


# -- a Bernoulli on a sigmoid's output: its logits are the sigmoid's input ----------------------


class SigmoidLogits:
    """``Bernoulli(probs=torch.sigmoid(a))`` reads its logits as ``log p − log1p(−p)`` of the clamped
    probabilities (``probs_to_logits``): a sigmoid and a logit forward, and their derivatives
    backward, over every pixel of a VAE's images (a sixth of its eager step, the largest of its
    compiled step's kernels).

    The logit of the clamped sigmoid of ``a`` is ``a`` clamped to the logits of torch's clamp bounds
    (sigmoid is monotonic): the same function without the round trip, which in float32 also loses
    the digits of probabilities near 1 (it gives 14.84 at 15; tests/test_patches.py). This class
    remembers each sigmoid's input while its output lives, and gives a Bernoulli built on that output
    (or on a same-shaped view of it, as ``broadcast_all`` makes) that clamp. A view is recognised by
    its data pointer, shape and strides (a live output's memory is never another tensor's), and where
    the output or the input has changed in place since (a version counter moved) torch's own logits stay.
    """

    def __init__(self) -> None:
        # data pointer: (the output, weakly; the input; their versions). An entry goes with its output.
        self._inputs: dict[int, tuple[weakref.ref, torch.Tensor, tuple[int, int]]] = {}

    def sigmoid(self, input: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        output = _sigmoid(input, *args, **kwargs)
        key = output.data_ptr()
        entry = self._inputs[key] = (weakref.ref(output), input, (output._version, input._version))
        weakref.finalize(output, self._forget, key, entry)
        return output

    def _forget(self, key: int, entry: tuple) -> None:
        if self._inputs.get(key) is entry:
            del self._inputs[key]

    def probs_to_logits(self, probs: torch.Tensor, is_binary: bool = False) -> torch.Tensor:
        output, input, versions = self._inputs.get(probs.data_ptr(), (lambda: None, None, None))
        output = output()
        same = (
            output is not None
            and (output.shape, output.stride()) == (probs.shape, probs.stride())
            and (probs._version, input._version) == versions
        )
        if not (is_binary and same and probs.dtype.is_floating_point):
            return _probs_to_logits(probs, is_binary)
        eps = torch.finfo(probs.dtype).eps  # torch's ``clamp_probs``: [eps, 1 - eps]
        bound = math.log1p(-eps) - math.log(eps)  # logit(1 - eps) = -logit(eps)
        return input.clamp(-bound, bound)


_sigmoid = torch.sigmoid
_probs_to_logits = torch.distributions.bernoulli.probs_to_logits


@contextmanager
def bernoulli_logits_of_sigmoids() -> Iterator[None]:
    """Within the block, ``torch.sigmoid`` and ``Tensor.sigmoid`` (``nn.Sigmoid``, ``F.sigmoid``) remember
    their inputs, and a Bernoulli's logits of a sigmoid's output are its clamped input (``SigmoidLogits``)."""
    logits = SigmoidLogits()
    with (
        mock.patch.object(torch, "sigmoid", logits.sigmoid),
        mock.patch.object(torch.Tensor, "sigmoid", lambda tensor: logits.sigmoid(tensor)),
        mock.patch.object(torch.distributions.bernoulli, "probs_to_logits", logits.probs_to_logits),
    ):
        yield


# -- log-space contractions by broadcasting, where the operands are small ------------------------
#
# ``TraceEnum_ELBO`` sums out enumerated sites by contracting their factors in log space, pairwise,
# through ``pyro.ops.einsum.torch_log.einsum``: per operand a max over each summed dimension, a clamp,
# a shift and an exp; then torch's einsum, a log, and the shifts added back. That is some twenty
# tensor ops and their autograd nodes per pair. On Pyro's HMM example the operands hold a few dozen
# numbers, so the step's time goes to dispatching them. Where the broadcast sum of the operands is
# small, ``broadcast_log_einsum`` dispatches about eight: the sum, its max over the summed dimensions
# (clamped, as Pyro's is), the shifted exp, its sum, Pyro's ``safe_log`` and the shift. The value and
# the gradient are Pyro's, including a slice of -inf (its value -inf, its gradient 0), and the single
# shift of the whole sum is the exact log-sum-exp's, so a sum that Pyro's per-operand shifts would
# underflow keeps its digits. Contractions of larger operands keep Pyro's einsum, whose matrix
# products never build the sum.

BROADCAST_NUMEL_LIMIT = 2**16  # elements of the broadcast sum below which broadcasting is always taken
_LOG_BACKEND = "pyro.ops.einsum.torch_log"
_log_einsum = pyro.ops.einsum.torch_log.einsum


@functools.lru_cache(maxsize=4096)
def _broadcast_plan(
    inputs: tuple[str, ...], output: str, shapes: tuple[tuple[int, ...], ...]
) -> tuple[tuple[tuple[tuple[int, ...] | None, tuple[int, ...] | None], ...], tuple[int, ...]] | None:
    """How each operand is laid out for the broadcast sum (a permutation and a view shape, None where
    not needed) and which dimensions the sum is reduced over; None where Pyro's einsum should run: an
    operand with a repeated or ellipsis subscript, shapes that do not broadcast, an empty dimension,
    one operand left as it is, or a sum much larger than its operands."""
    symbols = list(output)
    for dims in inputs:
        symbols += [dim for dim in dims if dim not in symbols]
    sizes = dict.fromkeys(symbols, 1)
    for dims, shape in zip(inputs, shapes, strict=True):
        if len(set(dims)) != len(dims) or "." in dims or len(dims) != len(shape):
            return None
        for dim, size in zip(dims, shape, strict=True):
            if size != sizes[dim] and 1 not in (size, sizes[dim]):
                return None
            sizes[dim] = max(size, sizes[dim])
    numel = math.prod(sizes.values())
    contracted = tuple(range(len(output), len(symbols)))
    if numel == 0 or (len(inputs) == 1 and not contracted):
        return None
    if numel > max(BROADCAST_NUMEL_LIMIT, 2 * max(math.prod(shape) for shape in shapes)):
        return None
    layouts = []
    for dims, shape in zip(inputs, shapes, strict=True):
        order = sorted(range(len(dims)), key=lambda axis: symbols.index(dims[axis]))
        positions = [symbols.index(dims[axis]) for axis in order]
        permutation = tuple(order) if order != list(range(len(dims))) else None
        view = None
        if positions != list(range(len(symbols))):
            own = dict(zip(dims, shape, strict=True))
            view = tuple(own.get(symbol, 1) for symbol in symbols)
        layouts.append((permutation, view))
    return tuple(layouts), contracted


def broadcast_log_einsum(equation: str, *operands: torch.Tensor) -> torch.Tensor:
    """Pyro's log-space einsum (``pyro.ops.einsum.torch_log.einsum``) as one log-sum-exp over the
    broadcast sum of the operands, where ``_broadcast_plan`` finds that sum small; Pyro's otherwise."""
    inputs, output = equation.split("->")
    plan = _broadcast_plan(tuple(inputs.split(",")), output, tuple(tuple(operand.shape) for operand in operands))
    if plan is None:
        return _log_einsum(equation, *operands)
    layouts, contracted = plan
    total = None
    for (permutation, view), operand in zip(layouts, operands, strict=True):
        if permutation is not None:
            operand = operand.permute(permutation)
        if view is not None:
            operand = operand.reshape(view)
        total = operand if total is None else total + operand
    floor = torch.finfo(total.dtype).min
    if contracted:
        shift = total.detach().amax(contracted, keepdim=True).clamp(min=floor)
        summed = (total - shift).exp().sum(contracted)
        shift = shift.reshape(summed.shape)
    else:  # nothing summed: the shifted form still gives an entry of -inf no gradient, as Pyro's einsum does
        shift = total.detach().clamp(min=floor)
        summed = (total - shift).exp()
    return safe_log(summed) + shift


@contextmanager
def log_contractions_by_broadcast() -> Iterator[None]:
    """Within the block, Pyro's log-space backend (which its sampling and marginal backends call too)
    contracts through ``broadcast_log_einsum``, and opt_einsum, which caches a backend's functions,
    finds it there."""
    with (
        mock.patch.object(pyro.ops.einsum.torch_log, "einsum", broadcast_log_einsum),
        mock.patch.object(pyro.ops.einsum.torch_log, "tensordot", Tensordot(broadcast_log_einsum)),
        mock.patch.dict(opt_einsum_dispatch._cached_funcs),
    ):
        for function in ("einsum", "tensordot"):
            opt_einsum_dispatch._cached_funcs.pop((function, _LOG_BACKEND), None)
        yield


# -- Pyro's value-dependent checks skipped while tracing -----------------------------------------

_masked_select = torch.Tensor.masked_select


def _dice_masked_select(tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Dice's expectation (``pyro.infer.util``) masks its factors and costs alike, then dots them:
    zeros in place of the masked entries give the same dot product (and gradient) in a tensor of
    fixed size, which the compiler can fuse; a value-dependent size splits the graph."""
    if sys._getframe(1).f_globals.get("__name__") == "pyro.infer.util":
        return torch.where(mask, tensor, 0)
    return _masked_select(tensor, mask)


def _sum_of_products(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dice's full dot product of two same-shaped tensors, without flattening them: a reduction over
    the original dimensions vectorizes along the data; one over a flattened view of broadcast
    tensors needs an index division per element and runs scalar."""
    return (x * y).sum()


def _tensor_as_is(value: torch.Tensor | float) -> torch.Tensor | float:
    """``Trace_ELBO`` reads each site's log-density as a Python number (``torch_item``) for a loss value
    that ``differentiable_loss`` then drops; a graph cannot read a number, and needs none."""
    return value


def _sample_unchecked(distribution: torch.distributions.Distribution, value: torch.Tensor) -> None:
    """A distribution made while validation was on (a ``PyroSample`` prior built in a module's
    ``__init__``) checks every sample against its support, a host read a graph cannot make."""


@contextmanager
def pyro_static_tracing() -> Iterator[None]:
    """Skip Pyro's value-dependent checks while tracing: they ask whether torch.jit is tracing
    (``mask.all()`` in Dice), test tensors for NaN, or validate arguments and supports, which a
    graph cannot do (the eager path validated the model and guide once, in setup). Bernoulli
    probabilities from a sigmoid become clamped logits (``bernoulli_logits_of_sigmoids``)."""
    with (
        pyro.validation_enabled(False),
        mock.patch.object(torch._C, "_get_tracing_state", lambda: True),
        mock.patch.object(pyro.util, "torch_isnan", lambda value: False),
        mock.patch.object(pyro.util, "torch_isinf", lambda value: False),
        mock.patch.object(torch.Tensor, "masked_select", _dice_masked_select),
        mock.patch.object(pyro.infer.util, "_fulldot", _sum_of_products),
        mock.patch.object(pyro.infer.trace_elbo, "torch_item", _tensor_as_is),
        mock.patch.object(torch.distributions.Distribution, "_validate_sample", _sample_unchecked),
        bernoulli_logits_of_sigmoids(),
    ):
        yield


# -- values computed from the data alone read while tracing --------------------------------------

_proxy_call = proxy_tensor.proxy_call


class DataValuesReadable:
    """Within the block, ``make_fx`` answers a read of a tensor's value (``bool``, ``int``, ``range``,
    ``.item()``: ``aten._local_scalar_dense``) where the tensor is computed from the data alone: from
    the graph inputs given to ``add``, constants and deterministic ops, no other input and no random
    op. Such a value is fixed in the graph, which is then valid only for data of the same values.

    ``make_fx`` itself answers only reads of its own constants (results of ops on constants, kept up
    to ``CONSTANT_NUMEL_LIMIT``, 1 element, and not of factories such as the ``arange`` of a plate's
    indices), so Pyro's HMM example, ``range(lengths[batch].max())``, fails there; tensors captured
    from outside the traced function fail too. Tracing runs on real tensors, so the value is at
    hand; this class decides, from the graph recorded so far, that it depends on the data alone.
    (A random op writing into a view of a tensor is not seen as a write of that tensor: no Pyro
    distribution samples that way.)
    """

    def __init__(self) -> None:
        self._from_data: dict[torch.fx.Node, bool] = {}  # graph node: computed from the data alone

    def add(self, tensors: Iterable[torch.Tensor]) -> None:
        """Mark ``tensors``, inputs of the trace running now, as the data."""
        tracer = proxy_tensor.get_proxy_mode().tracer
        for tensor in tensors:
            self._from_data[proxy_tensor.get_proxy_slot(tensor, tracer).proxy.node] = True

    def __enter__(self) -> DataValuesReadable:
        self._patch = mock.patch.object(proxy_tensor, "proxy_call", self._proxy_call)
        self._patch.start()
        return self

    def __exit__(self, *exception: object) -> None:
        self._patch.stop()

    def _proxy_call(self, mode: proxy_tensor.ProxyTorchDispatchMode, func, pre_dispatch, args, kwargs) -> object:
        if func is torch.ops.aten._local_scalar_dense.default:
            traced = proxy_tensor.get_proxy_slot(args[0], mode.tracer, None)
            if traced is not None and self._computed_from_data(traced.proxy.node):
                return func(*args, **kwargs)  # the real value: tracing runs on real tensors
        return _proxy_call(mode, func, pre_dispatch, args, kwargs)

    def _computed_from_data(self, node: torch.fx.Node) -> bool:
        """Whether ``node`` depends on no input but the data and on no random op. Every node it was
        found from is remembered; walked with a stack, not recursion: a graph's chains run to thousands
        of ops."""
        unknown = [node]
        while unknown:
            current = unknown[-1]
            if current in self._from_data:
                unknown.pop()
                continue
            seeded = isinstance(current.target, torch._ops.OpOverload) and (
                torch.Tag.nondeterministic_seeded in current.target.tags
            )
            if current.op == "placeholder" or seeded:
                self._from_data[current] = False
                continue
            sources = [source for source in current.all_input_nodes if source not in self._from_data]
            if sources:
                unknown += sources
                continue
            self._from_data[current] = all(self._from_data[source] for source in current.all_input_nodes)
        return self._from_data[node]
