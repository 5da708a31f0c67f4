"""Stop at the first non-finite loss or parameter, naming the step and the culprit."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from lightning_svi.params import constrained_values


class TrainingDiverged(RuntimeError):
    """The loss or a parameter became NaN or infinite."""


class NonFiniteGuard(pl.Callback):
    """Raises ``TrainingDiverged`` after the first step whose loss, θ or φ is not finite."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if pl_module.last_loss is not None and not torch.isfinite(pl_module.last_loss):
            raise TrainingDiverged(f"step {step}: the loss is {float(pl_module.last_loss)}; {_hint(trainer)}")
        for side, module in (("theta", pl_module.model), ("phi", pl_module.guide)):
            for name, value in constrained_values(module).items():
                if not torch.isfinite(value).all():
                    raise TrainingDiverged(f"step {step}: {side} parameter {name!r} is not finite; {_hint(trainer)}")


def _hint(trainer: pl.Trainer) -> str:
    rates = ", ".join(
        f"{group.get('name', 'group')} lr={group['lr']:g}" for group in trainer.optimizers[0].param_groups
    )
    return f"the optimizer ran with {rates}: a smaller optim.lr usually helps."
