"""Log the gradient norm of each side, θ and φ."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from lightning_svi.logging.step_logger import Metrics, StepLogger


class GradientNormLogger(StepLogger):
    """``grad_norm/theta`` and ``grad_norm/phi``: L2 norms over each optimizer parameter group."""

    def before_update(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer, step: int
    ) -> Metrics:
        metrics: Metrics = {}
        for group in optimizer.param_groups:
            grads = [parameter.grad for parameter in group["params"] if parameter.grad is not None]
            if grads:
                metrics[f"grad_norm/{group['name']}"] = torch.linalg.vector_norm(
                    torch.stack(torch._foreach_norm(grads))
                )
        return metrics
