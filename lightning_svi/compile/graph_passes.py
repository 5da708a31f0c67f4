"""Rewrites of the traced SVI step that inductor does not do itself.

``without_outputs``: the step of a step nobody reads, its update and nothing else.

Pyro broadcasts a distribution's parameters to the shape of its data before it computes with
them: ``Bernoulli(p).expand([5000])`` takes the logarithms of 5,000 copies of one ``p``. Inductor
fuses those functions into the loop over the data, so every iteration recomputes them; for the
beta-Bernoulli with 10 particles that was most of the step. Moving each elementwise op in front of
the expand that feeds it computes it once per distinct value, and the loop reads the result.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx import GraphModule, Node
from torch.fx.node import map_arg
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

aten = torch.ops.aten


def without_outputs(graph: GraphModule) -> GraphModule:
    """A copy of ``graph`` that returns nothing: what is left is what its in-place writes (the
    optimizer's update of θ, φ and its moments) depend on. Each output is a buffer the compiled
    step allocates on every call, and the statistics and log-probs behind them are kernels; an
    unread step of the beta-Bernoulli model costs 93 µs instead of 130 without them."""
    trimmed = copy.deepcopy(graph)
    trimmed.graph.output_node().args = ([],)
    trimmed.graph.eliminate_dead_code()  # keeps the ops that write to an input (``copy_``)
    trimmed.recompile()
    return trimmed


def hoist_elementwise_before_expand(graph: GraphModule, example_inputs: Sequence[torch.Tensor]) -> int:
    """Rewrite ``f(expand(x), ...)`` as ``expand(f(x, ...))`` for every elementwise op ``f`` whose
    tensor inputs broadcast to fewer elements than its output; returns how many ops moved. The
    values are the same; the shapes recorded in the graph are recomputed on ``example_inputs``."""
    moved = 0
    for node in list(graph.graph.nodes):
        if not _movable(node):
            continue
        inputs = [arg for arg in (*node.args, *node.kwargs.values()) if _is_tensor(arg)]
        sources = {arg: _repeated_source(arg) for arg in inputs}
        if all(source is arg for arg, source in sources.items()):
            continue
        args = map_arg(node.args, lambda arg, sources=sources: sources.get(arg, arg))
        kwargs = map_arg(node.kwargs, lambda arg, sources=sources: sources.get(arg, arg))
        small = _result_on_meta(node, args, kwargs)
        out = node.meta["val"]
        if small is None or small.dtype != out.dtype or small.dim() > out.dim() or small.numel() >= out.numel():
            continue  # e.g. type promotion treats a zero-dimensional source as weaker than its expand
        out_shape = tuple(out.shape)
        with graph.graph.inserting_before(node):
            inner = graph.graph.call_function(node.target, args, kwargs)
            inner.meta["val"] = small
            outer = graph.graph.call_function(aten.expand.default, (inner, list(out_shape)))
            outer.meta["val"] = torch.empty(out_shape, dtype=out.dtype, device="meta")
        node.replace_all_uses_with(outer)
        graph.graph.erase_node(node)
        moved += 1
    _views_as_reshapes(graph)
    _materialize_expanded_outputs(graph)
    graph.graph.eliminate_dead_code()
    graph.recompile()
    FakeTensorProp(graph, FakeTensorMode(allow_non_fake_inputs=True)).propagate(*example_inputs)
    return moved


def _result_on_meta(node: Node, args: Any, kwargs: Any) -> torch.Tensor | None:
    """``node``'s op applied to ``args`` with shapes and dtypes only; None where it does not apply."""

    def meta(arg: Node) -> Any:
        value = arg.meta.get("val")
        return torch.empty(value.shape, dtype=value.dtype, device="meta") if isinstance(value, torch.Tensor) else value

    try:
        result = node.target(*map_arg(args, meta), **map_arg(kwargs, meta))
    except Exception:  # an op that rejects the smaller shapes stays where it is
        return None
    return result if isinstance(result, torch.Tensor) else None


def _views_as_reshapes(graph: GraphModule) -> None:
    """Views recorded for the strides the trace had; an expand's zero strides change the layouts
    downstream, which a view may not accept, while a reshape does (copying if it must). Only views
    that nothing writes through, of tensors nothing writes to, so that no alias is lost."""
    for node in graph.graph.nodes:
        if node.target is aten.view.default and not _mutates_any(node) and not _mutates_any(node.args[0]):
            node.target = aten.reshape.default


def _mutates_any(node: Node) -> bool:
    """Whether an op writes to ``node``'s output."""
    return any(_mutates(user) for user in node.users)


def _materialize_expanded_outputs(graph: GraphModule) -> None:
    """Outputs that the rewrite turned into expands are copied out dense: a gradient with a zero
    stride is what an optimizer's fused kernel misreads."""
    output = graph.graph.output_node()

    def dense(result: Node) -> Node:
        if result.target is not aten.expand.default:
            return result
        with graph.graph.inserting_before(output):
            copy = graph.graph.call_function(aten.clone.default, (result,), {"memory_format": torch.contiguous_format})
        copy.meta["val"] = result.meta["val"]
        return copy

    output.args = (map_arg(output.args[0], dense),)


def _movable(node: Node) -> bool:
    """A deterministic elementwise op (a random one must draw a value per element) that writes to
    none of its inputs, whose output nobody writes to either."""
    if node.op != "call_function" or not _is_tensor(node):
        return False
    tags = getattr(node.target, "tags", ())
    if torch.Tag.pointwise not in tags or torch.Tag.nondeterministic_seeded in tags:
        return False
    return not _mutates(node) and not _mutates_any(node)


def _mutates(node: Node) -> bool:
    """Whether ``node``'s op writes to one of its inputs."""
    schema = getattr(node.target, "_schema", None)
    arguments = schema.arguments if schema is not None else ()
    return any(argument.alias_info is not None and argument.alias_info.is_write for argument in arguments)


def _repeated_source(node: Node) -> Node:
    while node.op == "call_function" and node.target is aten.expand.default:
        node = node.args[0]
    return node


def _is_tensor(value: object) -> bool:
    return isinstance(value, Node) and isinstance(value.meta.get("val"), torch.Tensor)
