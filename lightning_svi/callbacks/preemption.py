"""Save a checkpoint when the job is pre-empted (SIGTERM), so that the next job resumes from this step.

Lightning's signal handler turns SIGTERM into a ``SIGTERMException`` at the end of the running step
(on every rank, under DDP); this callback writes ``last.ckpt`` then. Other exceptions write nothing:
after a failure the state may be broken, and the last periodic checkpoint is the one to keep.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException


class CheckpointOnPreemption(pl.Callback):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path, weights_only=False)
