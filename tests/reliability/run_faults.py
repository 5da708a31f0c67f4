"""Test-only callbacks that inject faults into a ``train.py`` run, added with
``+callbacks.NAME={_target_: tests.reliability.run_faults.CLASS, ...}`` and the repository on ``PYTHONPATH``."""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

import lightning_svi.checkpointing.atomic_io
import lightning_svi.logging.pictures
import lightning_svi.logging.summary


class SlowEndOfRun(pl.Callback):
    """End-of-run work that takes long, as the posterior picture of 200,000 groups does: the picture drawn
    when training ends writes ``marker``, then sleeps, so that a test can kill the process in the middle of it.
    (Pictures are drawn every ``tensorboard.image_every_n_steps`` and at the end: a short run draws only then.)"""

    def __init__(self, marker: str, seconds: float = 120) -> None:
        self.marker = Path(marker)
        self.seconds = seconds

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        lightning_svi.logging.pictures.posterior_figure = self.slow_picture

    def slow_picture(self, *args: Any, **kwargs: Any) -> None:
        self.marker.write_text("drawing")
        time.sleep(self.seconds)


class FullDiskFrom(pl.Callback):
    """Every checkpoint and ``summary.json`` write fails with ENOSPC from step ``step`` on, as on a full disk."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step >= self.step:
            lightning_svi.checkpointing.atomic_io.torch.save = _no_space  # torch's own: this process is a test's
            lightning_svi.logging.summary.write_json_atomically = _no_space


def _no_space(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device", "run folder")
