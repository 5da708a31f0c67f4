"""Log a picture of the posterior every few hundred steps and when training ends."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn

from lightning_svi.callbacks.logging import log_figure, untouched_rng
from lightning_svi.models.base import Batch

PICTURE_TAG = "posterior/picture"


class PosteriorPictureLogger(pl.Callback):
    """``posterior/picture``: the model's ``posterior_figure`` (by default the guide's marginals
    beside the exact posterior) every ``every_n_steps`` steps and at the end; never when None.

    Drawing samples and rendering cost far more than a training step, hence a sparse interval.
    """

    def __init__(self, full_data: Batch, every_n_steps: int | None) -> None:
        self.full_data = full_data
        self.every_n_steps = every_n_steps
        self._drawn_at: int | None = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.draw(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_steps and self._drawn_at != trainer.global_step:
            self.draw(trainer, pl_module)

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._drawn_at = trainer.global_step
        if not trainer.is_global_zero:
            return
        data = {name: tensor.to(pl_module.device) for name, tensor in self.full_data.items()}
        try:
            with untouched_rng(pl_module.device):
                figure = pl_module.model.posterior_figure(pl_module.guide, data)
        except Exception as error:  # a picture must never end a training run
            # The default picture draws samples vectorized over a plate; a model that cannot be
            # vectorized gets no picture (it can override posterior_figure) and keeps training.
            rank_zero_warn(f"posterior pictures turned off: {type(error).__name__}: {str(error).splitlines()[0]}")
            self.every_n_steps = None
            return
        if figure is not None:
            log_figure(trainer, PICTURE_TAG, figure, trainer.global_step)
