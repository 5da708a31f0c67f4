"""Write ``last.ckpt`` when training stops between two periodic checkpoints: at its end, or when
the job is pre-empted (SIGTERM), so that a later job resumes from this step.

Lightning's signal handler turns SIGTERM into a ``SIGTERMException`` at the end of the running step
(on every rank, under DDP); this callback writes ``last.ckpt`` then. Other exceptions write nothing:
after a failure the state may be broken, and the last periodic checkpoint is the one to keep.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException


class FinalCheckpoint(pl.Callback):
    def __init__(self, path: Path, every_n_steps: int) -> None:
        self.path = Path(path)
        self.every_n_steps = every_n_steps  # ModelCheckpoint's interval: steps it has written already

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step % self.every_n_steps:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path, weights_only=False)
