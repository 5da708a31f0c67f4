"""A step logger that reads θ itself in ``before_update``, as a user's logger may (tests/test_compiled.py)."""

from __future__ import annotations

from typing import ClassVar

import pytorch_lightning as pl
import torch

from lightning_svi.logging.step_logger import StepLogger


class ThetaAroundUpdate(StepLogger):
    """Records α as ``before_update`` and ``after_update`` see it, one pair per logged step."""

    seen: ClassVar[list[tuple[float, float]]] = []

    def before_update(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer, step: int
    ) -> None:
        self._before = float(pl_module.sides.theta_values()["alpha"])

    def after_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        ThetaAroundUpdate.seen.append((self._before, float(pl_module.sides.theta_values()["alpha"])))
