"""Log a picture of the posterior every few hundred steps and when training ends."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from lightning_svi.analysis.pictures import marginals_figure
from lightning_svi.core.rng import untouched_rng
from lightning_svi.core.svi_model import Batch
from lightning_svi.errors import one_line
from lightning_svi.logging.step_logger import log_figure

PICTURE_TAG = "posterior/picture"


class PosteriorPictureLogger(pl.Callback):
    """``posterior/picture``: the model's ``posterior_figure`` (by default the guide's marginals
    beside the exact posterior) every ``every_n_steps`` steps and at the end; never when None.

    Drawing samples and rendering cost far more than a training step, hence a sparse interval. The
    default picture draws on at most ``pictures.PICTURE_ROWS`` rows of the data, in bounded chunks
    (``pictures.marginals_figure``); the model gets all of ``full_data`` so that a global latent's
    exact posterior is the full data's.
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
        try:
            data = {name: tensor.to(pl_module.device) for name, tensor in self.full_data.items()}
            with untouched_rng(pl_module.device), torch.no_grad():
                figure = posterior_figure(pl_module.model, pl_module.guide, data)
            if figure is not None:
                log_figure(trainer, PICTURE_TAG, figure, trainer.global_step)
        except Exception as error:  # a picture must never end a training run
            # Drawing or rendering failed (a model whose default picture cannot run, a figure
            # matplotlib cannot render): no more pictures, training goes on.
            rank_zero_warn(f"posterior pictures turned off: {one_line(error)}")
            self.every_n_steps = None


def posterior_figure(model: torch.nn.Module, guide: torch.nn.Module, data: Batch) -> Any:
    """The model's own ``posterior_figure(guide, data)`` where it has one (a mixture draws the data
    coloured by assignment; a model with too many latents returns None), else the guide's marginals
    beside the exact posterior where known."""
    draw = getattr(model, "posterior_figure", None)
    return draw(guide, data) if draw is not None else marginals_figure(model, guide, data)
