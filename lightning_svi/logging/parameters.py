"""Log θ (model side) and φ (guide side) as constrained values."""

from __future__ import annotations

import pytorch_lightning as pl

from lightning_svi.logging.step_logger import Metrics, StepLogger, log_tensor


class ParameterLogger(StepLogger):
    """``theta/<name>`` and ``phi/<name>``: a scalar per scalar parameter; for a tensor one scalar per
    element when it has at most ``max_elements``, else a histogram and its min, median and max."""

    def __init__(self, max_elements: int = 16) -> None:
        self.max_elements = max_elements

    def after_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> Metrics:
        metrics: Metrics = {}
        for side, values in (("theta", pl_module.sides.theta_values()), ("phi", pl_module.sides.phi_values())):
            for name, value in values.items():
                metrics.update(log_tensor(trainer, f"{side}/{name}", value, step, self.max_elements))
        return metrics
