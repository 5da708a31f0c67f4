"""A progress bar that counts optimizer steps against ``max_steps`` (SVI has no epochs)."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, with ``max_steps`` as its total and the loss beside it."""

    @property
    def total_train_batches(self) -> int | float:
        total = super().total_train_batches
        return self.trainer.max_steps if math.isinf(total) and self.trainer.max_steps > 0 else total

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: object) -> None:
        super().on_train_epoch_start(trainer)
        self.train_progress_bar.set_description("SVI steps")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Steps, not batches: compiled mode runs several steps per batch, and a resumed run starts midway.
        super().on_train_batch_end(trainer, pl_module, outputs, batch, trainer.global_step - 1)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, int | str | float]:
        """The loss of the latest step, read only when the bar refreshes (one host sync per refresh)."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        if pl_module.last_loss is not None:
            metrics["loss"] = f"{float(pl_module.last_loss):.4g}"
        return metrics
