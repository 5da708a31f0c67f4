"""``checkpoints/last.ckpt``, one file: Lightning's ``ModelCheckpoint`` every ``every_n_train_steps``
steps, plus the state right after the run's last step and the state when a signal stops the run.

Lightning's own ``ModelCheckpoint(save_last=True)`` writes the end of a run in ``on_train_end`` only
when it never wrote before, and versions the name of a file it did not write (``last-v1.ckpt``).
Here the name never changes, and the last step is written in that step's ``on_train_batch_end``:
checkpoint callbacks run after every other callback of the step, and before any callback's
``on_train_end`` (the summary, the pictures, the posterior), so the final checkpoint is on disk, and
holds the random-number generators as the last step left them, before the end-of-run work begins.
A run extended from it draws what a run that never stopped draws.

Lightning's signal handling turns SIGTERM (and here SIGINT, see ``stop_signals``) into a
``SIGTERMException`` at the end of the running step, on every rank; ``on_exception`` writes
``last.ckpt`` then. Other exceptions write nothing: after a failure the state may be broken, and the
last periodic checkpoint is the one to keep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_svi.checkpointing.atomic_io import remove_stale_temporaries


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` keeping only ``dirpath/last.ckpt``, also written after the last step and on a stop signal."""

    def __init__(self, dirpath: str | Path, every_n_train_steps: int, **options: Any) -> None:
        super().__init__(
            dirpath=dirpath,
            every_n_train_steps=every_n_train_steps,
            save_last=True,
            save_top_k=0,
            enable_version_counter=False,
            **options,
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath is not None:
            remove_stale_temporaries(Path(self.dirpath))  # left by a process killed while writing

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: with one file of one name there is no best-k bookkeeping to carry over, and a
        run resumed into another folder must not take the old folder's paths (Lightning warns that it cannot)."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        last_step = trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps
        if last_step or trainer.should_stop:
            self.save_last_now(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save_last_now(trainer)  # a run that ended otherwise (max_epochs): written where it stopped

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.save_last_now(trainer)

    def save_last_now(self, trainer: pl.Trainer) -> None:
        """``last.ckpt`` of the current step, unless it was written at this step already."""
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
