"""Stop at the first non-finite loss or parameter, naming the step and the culprit; never checkpoint one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch


class TrainingDiverged(RuntimeError):
    """The loss or a parameter became NaN or infinite."""


class NonFiniteGuard(pl.Callback):
    """Raises ``TrainingDiverged`` after the first step whose loss, θ or φ is not finite.

    Parameters are checked as stored (unconstrained); a constrained value that overflows from a
    finite stored one makes the next step's loss non-finite, which names the sites it reached.

    Lightning runs checkpoint callbacks after all others, so the guard stops a diverged step before
    ``ModelCheckpoint`` sees it; ``on_save_checkpoint`` refuses any other write of a non-finite
    parameter or optimizer state, which leaves the last finite ``last.ckpt`` in place.
    """

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if _all_finite(pl_module):
            return
        step = trainer.global_step
        if pl_module.last_loss is not None and not torch.isfinite(pl_module.last_loss):
            raise TrainingDiverged(
                f"step {step}: the loss is {float(pl_module.last_loss)}{_culprit_sites(pl_module)}; {_hint(trainer)}"
            )
        for side, values in (("theta", pl_module.sides.theta_values()), ("phi", pl_module.sides.phi_values())):
            for name, value in values.items():
                if not torch.isfinite(value).all():
                    raise TrainingDiverged(f"step {step}: {side} parameter {name!r} is not finite; {_hint(trainer)}")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        named = [(f"parameter {name!r}", tensor) for name, tensor in checkpoint.get("state_dict", {}).items()]
        named.append(("optimizer_states", checkpoint.get("optimizer_states", [])))
        for where, value in named:
            for found in non_finite_tensors(value, where):
                raise TrainingDiverged(f"step {trainer.global_step}: {found} is not finite; no checkpoint was written")


def _all_finite(pl_module: pl.LightningModule) -> bool:
    """One host sync per step: the loss and a sum over every parameter are finite. A non-finite
    value anywhere makes the sum non-finite; an overflowing sum of finite values only sends the
    guard down its slower, exact search."""
    sums = [parameter.detach().sum() for parameter in pl_module.parameters()]
    if pl_module.last_loss is not None:
        sums.append(pl_module.last_loss.detach().reshape(()))
    return not sums or bool(torch.isfinite(torch.stack(sums).sum()))


def non_finite_tensors(value: Any, path: str) -> Iterator[str]:
    """The path of keys to every floating-point tensor with a NaN or infinite element in a nest of
    dicts and lists (a checkpoint's state dict or optimizer states)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and not torch.isfinite(value).all():
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from non_finite_tensors(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from non_finite_tensors(item, f"{path}[{index}]")


def _culprit_sites(pl_module: pl.LightningModule) -> str:
    """Which sample sites of the step's traces have a non-finite log-density (model p, guide q)."""
    traces = pl_module.last_traces
    if traces is None:
        return ""
    culprits = [
        f"{side} site {name!r} ({float(value)})"
        for side, sites in (("log p", traces.log_p_sites), ("log q", traces.log_q_sites))
        for name, value in sites.items()
        if not torch.isfinite(torch.as_tensor(value))
    ]
    return f" at {', '.join(culprits)}" if culprits else ""


def _hint(trainer: pl.Trainer) -> str:
    rates = ", ".join(
        f"{group.get('name', 'group')} lr={group['lr']:g}" for group in trainer.optimizers[0].param_groups
    )
    hint = f"the optimizer ran with {rates}: a smaller optim.lr usually helps."
    steps = getattr(trainer.lightning_module, "batch_steps", 1)
    if steps > 1:
        first = trainer.global_step - steps + 1
        hint += (
            f" Steps {first}-{trainer.global_step} ran as one batch and are checked together: the first "
            "non-finite value may be earlier (steps_per_batch=1 checks every step)."
        )
    return hint
