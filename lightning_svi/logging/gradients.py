"""Log the gradient norm of each side, θ and φ."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from lightning_svi.core.step_statistics import gradient_norm
from lightning_svi.logging.step_logger import Metrics, StepLogger


class GradientNormLogger(StepLogger):
    """``grad_norm/theta`` and ``grad_norm/phi``: L2 norms over each optimizer parameter group, as the
    step reported them (compiled mode) or from the gradients the optimizer is about to apply."""

    def before_update(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer, step: int
    ) -> Metrics:
        statistics = pl_module.last_statistics
        if statistics is not None and statistics.gradient_norms:
            return {f"grad_norm/{group}": norm for group, norm in statistics.gradient_norms.items()}
        metrics: Metrics = {}
        for group in optimizer.param_groups:
            grads = [parameter.grad for parameter in group["params"] if parameter.grad is not None]
            if grads:
                metrics[f"grad_norm/{group['name']}"] = gradient_norm(grads)
        return metrics

    def reads_results_before_update(self) -> bool:
        return True  # with the update in the graph, the step reports the norms (``StepStatistics``)
