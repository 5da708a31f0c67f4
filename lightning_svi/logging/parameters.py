"""Log θ (model side) and φ (guide side) as constrained values."""

from __future__ import annotations

import pytorch_lightning as pl

from lightning_svi.core.params import constrained
from lightning_svi.logging.step_logger import Cadence, Metrics, StepLogger, log_tensor


class ParameterLogger(StepLogger):
    """``theta/<name>`` and ``phi/<name>``: a scalar per scalar parameter; for a tensor one scalar per
    element when it has at most ``max_elements``, else its min, median and max on every logged step
    and a histogram every ``histogram_every_n_steps`` (``Cadence``: also the first and the last step;
    never when None). A histogram is TensorBoard's 1,549 buckets filled on the host: for the VAE's
    eight weight tensors (two of 25,088 elements) about 10 ms, most of a logged step, while their
    min, median and max cost a fraction of one. Values the step reported after its update (compiled
    mode: ``StepStatistics.parameters``) are used as they are."""

    def __init__(self, max_elements: int = 16, histogram_every_n_steps: int | None = 100) -> None:
        self.max_elements = max_elements
        self.histograms = Cadence(histogram_every_n_steps, "histogram_every_n_steps")

    def after_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> Metrics:
        statistics = pl_module.last_statistics
        reported = statistics.parameters if statistics is not None else {}
        histogram = self.histograms.due(trainer, step)
        metrics: Metrics = {}
        for side, named in (("theta", pl_module.sides.theta), ("phi", pl_module.sides.phi)):
            values = reported.get(side, {})
            for name, entry in named.items():
                value = values[name] if name in values else constrained({name: entry})[name]
                tag = f"{side}/{name}"
                metrics.update(log_tensor(trainer, tag, value, step, self.max_elements, histogram))
        return metrics
