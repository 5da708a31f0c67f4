"""Positive parameters constrained by ``exp`` alone, as torch means them to be.

torch registers ``ExpTransform`` for ``constraints.positive`` and then, for the same constraint
class (``positive`` is ``greater_than(0)``), ``exp`` followed by ``0 + 1 · x``; the later
registration wins. Every read of a positive ``PyroParam`` (and every positive latent site an
autoguide constrains) then runs two extra tensor ops forward and two backward, and builds three
transform objects: on the 5,000-flip beta-Bernoulli, four reads a step, 3–12 % of the step in
interleaved runs with and without (docs/performance.md). ``train`` runs the fit inside
``positive_as_exp``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch.distributions import biject_to, constraints, transform_to
from torch.distributions.constraint_registry import ConstraintRegistry
from torch.distributions.transforms import AffineTransform, ComposeTransform, ExpTransform, Transform

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
