"""Steps that a Lightning callback looks at, so that the steps between them can run as one
Lightning batch.

Lightning's loop costs a fixed 0.5-1 ms per batch: a tenth of a small model's eager step, more than
a compiled step itself. With full-batch data on one process, SVI therefore runs several steps per
batch (``steps_per_batch``), ending each batch on the next step that is checkpointed or pictured
(or the last), so every Lightning callback sees exactly the steps it would have seen one step per
batch, and the steps in between are the same updates, bit for bit. Logged steps need no batch of
their own: ``SVIModule`` calls the step loggers (``StepLogger``) on them wherever they fall.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl

from lightning_svi.errors import UserInputError

# A batch of eager steps lasts tens of milliseconds; compiled steps are ten times shorter, and a
# batch of them only as long with ten times as many (the progress bar still updates several times
# a second).
AUTO_STEPS_PER_BATCH = {"eager": 10, "compiled": 100}


def resolve_steps_per_batch(option: int | None, world_size: int, full_batch: bool, compiled: bool = False) -> int:
    """``steps_per_batch``, or when null ``AUTO_STEPS_PER_BATCH`` on one process with full-batch data
    and 1 otherwise: each minibatch step needs its own batch, and DDP synchronises gradients in
    Lightning's own backward of each batch."""
    if option is None:
        if world_size > 1 or not full_batch:
            return 1
        return AUTO_STEPS_PER_BATCH["compiled" if compiled else "eager"]
    if option > 1 and world_size > 1:
        raise UserInputError(
            f"steps_per_batch={option} with {world_size} processes: DDP runs one step per batch; "
            "use steps_per_batch=1 (or null)."
        )
    return option


def steps_this_batch(trainer: pl.Trainer, every: Sequence[int], limit: int) -> int:
    """How many steps (1 to ``limit``) take the run to the next observed step: a multiple of one of
    ``every`` (checkpoints, pictures) or ``max_steps``."""
    done = trainer.global_step
    for count in range(1, limit + 1):
        step = done + count
        if step == trainer.max_steps or any(step % period == 0 for period in every):
            return count
    return limit
