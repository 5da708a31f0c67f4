"""CallbackGroup: each hook reaches, in order, only the members that implement it; their states survive a checkpoint."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from lightning_svi.callbacks.group import CallbackGroup


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
