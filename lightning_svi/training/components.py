"""The components a config names, checked by building them once before training starts."""

from __future__ import annotations

from omegaconf import DictConfig

from lightning_svi.core.estimators import build_estimator
from lightning_svi.core.optim import build_after_step, try_optimizer_and_schedule
from lightning_svi.core.programs.build import check_programs


def check_components(cfg: DictConfig) -> None:
    """The model, guide, estimator, optimizer, its schedule and its after-step hook: their targets and options
    checked against their signatures, then built once (on a dummy parameter), so that a value they
    refuse is reported now, naming its key. Imports torch and Pyro."""
    check_programs(cfg)
    build_estimator(cfg.elbo)
    try_optimizer_and_schedule(cfg.optim, cfg.trainer.max_steps)
    build_after_step(cfg.optim)
