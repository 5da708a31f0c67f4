"""Log the closed-form log evidence log p_θ(x) and the gap to the ELBO, where the model has one."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from lightning_svi.core.svi_model import Batch
from lightning_svi.logging.step_logger import Metrics, StepLogger


class EvidenceLogger(StepLogger):
    """``evidence/log_evidence`` and ``evidence/gap`` = log p_θ(x) − ELBO = KL(q ‖ p(z | x)) ≥ 0.

    The evidence uses θ before the step, the same θ the step's ELBO estimate used: as the step
    reported it (compiled mode on the whole data set: ``StepStatistics.log_evidence``), or computed
    before the step. A model without a closed form (every user's program) answers None at the start
    and is not asked again.
    """

    def __init__(self, full_data: Batch) -> None:
        self.full_data = full_data
        self._before_step: torch.Tensor | None = None
        self._has_closed_form = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Moved to the training device once, not on every logging step.
        self.full_data = {name: tensor.to(pl_module.device) for name, tensor in self.full_data.items()}
        self._has_closed_form = log_evidence(pl_module, self.full_data) is not None

    def before_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        computed_here = self._has_closed_form and not pl_module.engine.reports_evidence
        self._before_step = log_evidence(pl_module, self.full_data) if computed_here else None

    def after_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> Metrics | None:
        statistics = pl_module.last_statistics
        evidence = statistics.log_evidence if statistics is not None else None
        evidence = self._before_step if evidence is None else evidence
        if evidence is None or pl_module.last_loss is None:
            return None
        return {"evidence/log_evidence": evidence, "evidence/gap": evidence + pl_module.last_loss}  # log p_θ(x) − ELBO


def log_evidence(pl_module: pl.LightningModule, full_data: Batch) -> torch.Tensor | None:
    """log p_θ(x) of the full data under the module's current θ, or None without a closed form."""
    with torch.no_grad():
        data = {name: tensor.to(pl_module.device) for name, tensor in full_data.items()}
        return pl_module.model.log_evidence(data)
