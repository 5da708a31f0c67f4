"""``SVIModule``: a Pyro model and guide as one LightningModule whose loss is −ELBO."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pyro.infer import ELBO
from pyro.nn import PyroModule

from lightning_svi.callbacks.logging import is_logging_step
from lightning_svi.distributed import mean_over_ranks, seed_ranks_apart
from lightning_svi.estimators import StepTraces
from lightning_svi.models.base import Batch, SVIModel
from lightning_svi.optim import build_optimizer, build_scheduler
from lightning_svi.params import side_parameters


class SVIModule(pl.LightningModule):
    """Trains θ (the model's parameters) and φ (the guide's) together by maximising the ELBO.

    The pair lives in Pyro's ``ELBOModule`` (``self.svi``), so θ and φ are ordinary module
    parameters: Lightning checkpoints them, moves them between devices and all-reduces their
    gradients under DDP. Lazily created parameters (autoguides) are made in ``setup`` by one loss
    evaluation on the training device, before the optimizer and DDP see the module.

    Under DDP each rank evaluates the ELBO on its own shard; on logging steps ``last_loss`` and
    ``last_traces`` are averaged over ranks, the estimates of the global batch (see
    ``lightning_svi.distributed`` for why the gradients need no correction).
    """

    def __init__(
        self,
        model: SVIModel,
        guide: PyroModule,
        estimator: ELBO,
        warmup_batch: Batch,
        optim: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.svi = estimator(model, guide)
        self.estimator = estimator
        self.optim_options = dict(optim or {})
        self.scheduler_options = dict(scheduler or {"name": "none"})
        self._warmup_batch = warmup_batch
        self.last_loss: torch.Tensor | None = None
        self.last_traces: StepTraces | None = None

    @property
    def model(self) -> SVIModel:
        return self.svi.model

    @property
    def guide(self) -> PyroModule:
        return self.svi.guide

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device
        self.to(device)
        batch = {name: tensor.to(device) for name, tensor in self._warmup_batch.items()}
        self.svi(batch)
        seed_ranks_apart(self.trainer.global_rank, self.trainer.world_size)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.svi(batch)
        self.last_loss = loss.detach()
        self.last_traces = self.estimator.last_traces
        if self.trainer.world_size > 1 and is_logging_step(self.trainer, self.trainer.global_step + 1):
            self.last_loss, self.last_traces = mean_over_ranks(self.trainer.strategy, self.last_loss, self.last_traces)
        self.log("loss", self.last_loss, prog_bar=True, logger=False)
        return loss

    def configure_optimizers(self) -> Any:
        theta, phi = side_parameters(self.model, self.guide)
        optimizer = build_optimizer(theta, phi, **self.optim_options)
        scheduler = build_scheduler(optimizer, self.trainer.max_steps, **self.scheduler_options)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
