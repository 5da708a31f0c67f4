"""After-step hooks for the tests, like the ``clip_params()`` Pyro's ``sparse_gamma_def`` example calls
after every step: they count their calls in ``CALLS``."""

from __future__ import annotations

from collections.abc import Callable

CALLS: list[float] = []


def record_call(scale: float = 1.0) -> None:
    CALLS.append(scale)


def make_hook(scale: float) -> Callable[[], None]:
    return lambda: record_call(scale)


def clip_params() -> None:
    """As ``sparse_gamma_def`` writes it: the parameter read from Pyro's store by name, clamped in place."""
    import pyro

    pyro.param("weight").data.clamp_(max=0.25)
