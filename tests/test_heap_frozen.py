"""``train`` runs the fit with what it built before frozen out of the garbage collector (``run.heap_frozen``)."""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest

from lightning_svi.training.module import SVIModule


def test_the_fit_walks_only_what_training_made_and_leaves_the_collector_as_it_was(
    train_in_process: Callable[..., dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    gc.unfreeze()  # whatever an earlier test left frozen
    frozen_at_start: list[tuple[int, bool]] = []
    on_train_start = SVIModule.on_train_start

    def record(module: SVIModule) -> None:
        young = {id(each) for each in gc.get_objects()}  # the generations a collection walks
        frozen_at_start.append((gc.get_freeze_count(), id(module.trainer) in young))
        on_train_start(module)

    monkeypatch.setattr(SVIModule, "on_train_start", record)
    summary = train_in_process(
        "trainer.max_steps=2", "callbacks.diagnostics=null", "tensorboard.image_every_n_steps=null"
    )
    assert summary["status"] == "completed"
    [(count, trainer_walked)] = frozen_at_start
    assert count > 10_000 and not trainer_walked  # the imports, the config, the trainer: frozen
    assert gc.get_freeze_count() == 0 and gc.isenabled()
