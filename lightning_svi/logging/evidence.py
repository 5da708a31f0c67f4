"""Log the closed-form log evidence log p_θ(x) and the gap to the ELBO, where the model has one."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from lightning_svi.core.svi_model import Batch
from lightning_svi.logging.step_logger import Metrics, StepLogger


class EvidenceLogger(StepLogger):
    """``evidence/log_evidence`` and ``evidence/gap`` = log p_θ(x) − ELBO = KL(q ‖ p(z | x)) ≥ 0.

    The evidence uses θ before the step's update, the same θ the step's ELBO estimate used.
    """

    def __init__(self, full_data: Batch) -> None:
        self.full_data = full_data

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Moved to the training device once, not on every logging step.
        self.full_data = {name: tensor.to(pl_module.device) for name, tensor in self.full_data.items()}

    def before_update(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer, step: int
    ) -> Metrics | None:
        # θ before the update: the one the step's ELBO was estimated at, so that the gap compares like with like.
        evidence = log_evidence(pl_module, self.full_data)
        if evidence is None or pl_module.last_loss is None:
            return None
        gap = evidence + pl_module.last_loss  # log p_θ(x) − ELBO
        return {"evidence/log_evidence": evidence, "evidence/gap": gap}


def log_evidence(pl_module: pl.LightningModule, full_data: Batch) -> torch.Tensor | None:
    """log p_θ(x) of the full data under the module's current θ, or None without a closed form."""
    with torch.no_grad():
        data = {name: tensor.to(pl_module.device) for name, tensor in full_data.items()}
        return pl_module.model.log_evidence(data)
