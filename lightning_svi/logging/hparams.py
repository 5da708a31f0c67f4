"""Log each run's hyperparameters with its final metrics, so a sweep's runs line up in TensorBoard's
HParams dashboard."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from lightning_svi.config.targets import target_name
from lightning_svi.core.programs.build import guide_name
from lightning_svi.logging.step_logger import log_scalars, tensorboard_writers
from lightning_svi.logging.summary import RunSummary

HParams = dict[str, str | int | float | bool]

# Metric tag -> where summary.json keeps it. Every run declares all of them, so the runs of a sweep
# share one set of columns; a value a run does not have (no closed-form evidence) stays blank.
METRICS = {
    "hparams/elbo": ("final", "elbo"),
    "hparams/log_evidence": ("final", "log_evidence"),
    "hparams/gap": ("final", "gap"),
    "hparams/steps_per_second": ("timing", "steps_per_second"),
}


def run_hparams(cfg: DictConfig, model_name: str, num_rows: int) -> HParams:
    """The hyperparameters a sweep varies, with the values the run actually used (the learning rate of
    each side after ``theta_lr`` / ``phi_lr`` fall back to ``lr``; the full batch as its row count).

    TensorBoard's HParams table shows five columns at first: those whose values differ between the runs,
    then the others by name. The names make the learning rates, particles, seed and estimator sort first;
    the run's setup follows under ``setup.``; none is a metric's name (``hparams/elbo`` is the final ELBO).
    """
    scheduler = cfg.optim.get("scheduler")
    return {
        "estimator": target_name(cfg.elbo),
        "lr_phi": float(cfg.optim.get("phi_lr") or cfg.optim.get("lr") or "nan"),
        "lr_theta": float(cfg.optim.get("theta_lr") or cfg.optim.get("lr") or "nan"),
        "particles": cfg.elbo.get("num_particles", 1),
        "seed": cfg.seed,
        "setup.batch_size": cfg.data.batch_size or num_rows,
        "setup.guide": guide_name(cfg.guide),
        "setup.max_steps": cfg.trainer.max_steps,
        "setup.model": model_name,
        "setup.optimizer": target_name(cfg.optim),
        "setup.scheduler": target_name(scheduler) if scheduler else "none",
        "setup.tags": ",".join(str(tag) for tag in cfg.get("tags") or []),
    }


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The ``METRICS`` that the run summary holds as finite numbers."""
    values = {tag: summary.get(section, {}).get(key) for tag, (section, key) in METRICS.items()}
    return {tag: value for tag, value in values.items() if isinstance(value, (int, float)) and math.isfinite(value)}


class HParamsLogger(pl.Callback):
    """Writes the hyperparameters and the ``hparams/*`` metrics once the run ends (also when it stops
    early or fails), reading the final metrics from ``run_summary``: put it after that callback."""

    def __init__(self, hparams: HParams, run_summary: RunSummary) -> None:
        self.hparams = hparams
        self.run_summary = run_summary

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.write(trainer)

    def write(self, trainer: pl.Trainer) -> None:
        writers = tensorboard_writers(trainer)
        if not writers or self.run_summary.summary is None:
            return
        summaries = hparams_summaries(self.hparams, dict.fromkeys(METRICS, 0.0))
        for writer in writers:
            for summary in summaries:
                writer._get_file_writer().add_summary(summary, trainer.global_step)
        log_scalars(trainer, summary_metrics(self.run_summary.summary), trainer.global_step)
