"""Many callbacks behind one: each hook reaches only the callbacks that implement it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl

from lightning_svi.logging.step_logger import StepLogger, merged

STEP_HOOKS = ("before_update", "after_update")
HOOKS = tuple(
    name
    for name, _ in inspect.getmembers(StepLogger, inspect.isfunction)
    if name.startswith("on_") or name in ("setup", "teardown", *STEP_HOOKS)
)


def _forward_to(methods: list[Callable[..., Any]]) -> Callable[..., None]:
    def hook(*args: Any, **kwargs: Any) -> None:
        for method in methods:
            method(*args, **kwargs)

    return hook


class CallbackGroup(StepLogger):
    """Lightning calls every hook of every callback on every step, each through a profiler context
    (a few µs each). With a dozen callbacks and six hooks per step that is a visible share of a
    small model's step; the group is one callback to Lightning and forwards each hook, in order,
    to the members that override it.

    It is a ``StepLogger`` for ``SVIModule``, forwarding the step hooks to the members that are.
    Members keep their own checkpoint state, stored under their ``state_key`` inside the group's.
    """

    def __init__(self, callbacks: Sequence[pl.Callback]) -> None:
        self.callbacks = list(callbacks)
        for name in HOOKS:
            methods = [getattr(callback, name) for callback in self.callbacks if _overrides(callback, name)]
            if methods:
                setattr(self, name, (merged if name in STEP_HOOKS else _forward_to)(methods))

    def state_dict(self) -> dict[str, Any]:
        return {callback.state_key: state for callback in self.callbacks if (state := callback.state_dict())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for callback in self.callbacks:
            if callback.state_key in state_dict:
                callback.load_state_dict(state_dict[callback.state_key])


def _overrides(callback: pl.Callback, name: str) -> bool:
    return getattr(type(callback), name, None) not in (None, getattr(StepLogger, name))
