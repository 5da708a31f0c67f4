"""The optimizer over two parameter groups, θ (model) and φ (guide), each with its own learning rate."""

from __future__ import annotations

from typing import Any

import torch
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "Adam": torch.optim.Adam,
    "AdamW": torch.optim.AdamW,
    "ClippedAdam": ClippedAdam,
    "SGD": torch.optim.SGD,
    "RMSprop": torch.optim.RMSprop,
}
# The torch optimizers with a fused implementation on CPU and CUDA.
FUSED = ("Adam", "AdamW", "SGD")


def build_optimizer(
    theta: list[nn.Parameter],
    phi: list[nn.Parameter],
    name: str = "Adam",
    lr: float = 0.05,
    theta_lr: float | None = None,
    phi_lr: float | None = None,
    **options: Any,
) -> torch.optim.Optimizer:
    """Optimizer ``name`` with groups named ``theta`` and ``phi``; empty groups are left out."""
    groups = [
        {"name": "theta", "params": theta, "lr": theta_lr or lr},
        {"name": "phi", "params": phi, "lr": phi_lr or lr},
    ]
    groups = [group for group in groups if group["params"]]
    if name in FUSED and not {"fused", "foreach"} & options.keys():
        # One kernel for all parameters: about a third of the single-tensor loop's time for small models.
        options["fused"] = all(p.device.type in ("cpu", "cuda") for group in groups for p in group["params"])
    return OPTIMIZERS[name](groups, lr=lr, **options)


SCHEDULERS = {
    # gamma is the decay factor over the whole run, so the schedule does not depend on max_steps.
    "exponential": lambda optimizer, max_steps, gamma: torch.optim.lr_scheduler.ExponentialLR(
        optimizer, gamma=gamma ** (1.0 / max_steps)
    ),
    "cosine": lambda optimizer, max_steps, eta_min=0.0: torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max_steps, eta_min=eta_min
    ),
}


def build_scheduler(
    optimizer: torch.optim.Optimizer, max_steps: int, name: str = "none", **options: Any
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A learning-rate schedule stepped once per optimizer step, or None for a constant rate."""
    if name == "none":
        return None
    return SCHEDULERS[name](optimizer, max_steps, **options)
