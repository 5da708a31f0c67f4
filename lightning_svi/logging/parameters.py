"""Log θ (model side) and φ (guide side) as constrained values."""

from __future__ import annotations

import pytorch_lightning as pl

from lightning_svi.core.params import constrained
from lightning_svi.logging.step_logger import Metrics, StepLogger, log_tensor


class ParameterLogger(StepLogger):
    """``theta/<name>`` and ``phi/<name>``: a scalar per scalar parameter; for a tensor one scalar per
    element when it has at most ``max_elements``, else a histogram and its min, median and max. Values
    the step reported after its update (compiled mode: ``StepStatistics.parameters``) are used as they are."""

    def __init__(self, max_elements: int = 16) -> None:
        self.max_elements = max_elements

    def after_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> Metrics:
        statistics = pl_module.last_statistics
        reported = statistics.parameters if statistics is not None else {}
        metrics: Metrics = {}
        for side, named in (("theta", pl_module.sides.theta), ("phi", pl_module.sides.phi)):
            values = reported.get(side, {})
            for name, entry in named.items():
                value = values[name] if name in values else constrained({name: entry})[name]
                metrics.update(log_tensor(trainer, f"{side}/{name}", value, step, self.max_elements))
        return metrics
