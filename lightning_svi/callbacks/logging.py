"""When to log, and how to write scalars and histograms from rank 0."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger


def is_logging_step(trainer: pl.Trainer, step: int | None = None) -> bool:
    """True on the first step, every ``trainer.log_every_n_steps`` steps, and on the last step.

    ``step`` counts completed optimizer steps (``trainer.global_step`` after the update).
    """
    step = trainer.global_step if step is None else step
    return step == 1 or step % trainer.log_every_n_steps == 0 or step == trainer.max_steps


def log_scalars(trainer: pl.Trainer, metrics: dict[str, torch.Tensor | float], step: int) -> None:
    """Write scalars to every logger, once (rank 0), all at one step."""
    if not trainer.is_global_zero or not metrics:
        return
    values = {tag: float(value) for tag, value in metrics.items()}
    for logger in trainer.loggers:
        logger.log_metrics(values, step=step)


def log_tensor(
    trainer: pl.Trainer, tag: str, value: torch.Tensor, step: int, max_elements: int = 16
) -> dict[str, float]:
    """A histogram of a tensor-valued quantity (TensorBoard only); returns the scalars to log for it:
    the value itself if it is a scalar, one per element if it has at most ``max_elements``."""
    if value.numel() == 1:
        return {tag: float(value)}
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_histogram(tag, value.detach().float().cpu(), global_step=step)
    if value.numel() > max_elements:
        return {}
    flat = value.detach().flatten().cpu().tolist()
    return {f"{tag}/{position}": element for position, element in enumerate(flat)}
