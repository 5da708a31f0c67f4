"""CallbackGroup: each hook reaches, in order, only the members that implement it; their states survive a checkpoint."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from lightning_svi.logging.step_logger import StepLogger
from lightning_svi.training.callback_group import CallbackGroup


class Recorder(pl.Callback):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.calls.append(f"{self.name}:{batch_idx}")


class StartOnly(pl.Callback):
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.count = 0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.calls.append("start")

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.count = state_dict["count"]


def test_hooks_reach_the_members_that_implement_them_in_order() -> None:
    calls: list[str] = []
    group = CallbackGroup([Recorder("a", calls), StartOnly(calls), Recorder("b", calls)])
    group.on_train_batch_end(None, None, None, None, 7)
    group.on_train_start(None, None)
    group.on_before_optimizer_step(None, None, None)  # nobody implements it: the base no-op
    assert calls == ["a:7", "b:7", "start"]
    assert "on_before_optimizer_step" not in vars(group)


def test_member_states_round_trip_under_their_own_keys() -> None:
    member = StartOnly([])
    member.count = 3
    state = CallbackGroup([Recorder("a", []), member]).state_dict()
    assert state == {"StartOnly": {"count": 3}}
    restored = StartOnly([])
    CallbackGroup([restored]).load_state_dict(state)
    assert restored.count == 3


class Scalars(StepLogger):
    def __init__(self, before: dict[str, float] | None, after: dict[str, float] | None) -> None:
        self.before, self.after = before, after

    def before_update(self, trainer: Any, pl_module: Any, optimizer: Any, step: int) -> dict[str, float] | None:
        return self.before

    def after_update(self, trainer: Any, pl_module: Any, step: int) -> dict[str, float] | None:
        return None if self.after is None else {tag: value + step for tag, value in self.after.items()}


def test_step_hooks_merge_the_members_scalars_and_skip_the_rest() -> None:
    group = CallbackGroup(
        [Scalars({"a": 1.0}, None), Recorder("r", []), Scalars(None, {"b": 2.0}), Scalars({"a": 5.0}, {"c": 0.0})]
    )
    assert group.before_update(None, None, None, 3) == {"a": 5.0}  # later members win a shared tag
    assert group.after_update(None, None, 3) == {"b": 5.0, "c": 3.0}
    assert CallbackGroup([Recorder("r", [])]).after_update(None, None, 3) is None  # the base no-op
