"""Steps that a Lightning callback looks at, so that the steps between them can run as one
Lightning batch.

Lightning's loop costs a fixed 0.5-2 ms per batch (its loop, the data fetch, the callbacks' hooks):
a tenth of a small model's eager step, more than a compiled step itself. On one process SVI
therefore runs several steps per batch (``steps_per_batch``), ending each batch on the next step
that is checkpointed or pictured (or the last), so every Lightning callback sees exactly the steps
it would have seen one step per batch, and the steps in between are the same updates, bit for bit.
With full-batch data every step of a batch reads that batch; with minibatches a batch carries one
minibatch per step, the consecutive minibatches the sampler would have drawn one batch each
(``TensorDataModule.group_minibatches``). Logged steps need no batch of their own: ``SVIModule``
calls the step loggers (``StepLogger``) on them wherever they fall.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl

from lightning_svi.errors import UserInputError

# A batch of eager steps lasts tens of milliseconds; compiled steps are ten times shorter, and a
# batch of them only as long with ten times as many (the progress bar still updates several times
# a second).
AUTO_STEPS_PER_BATCH = {"eager": 10, "compiled": 100}
# A batch of minibatches is gathered at once: by default it holds at most this many rows (about as
# many as the largest built-in setting's whole data), so that the gather never holds a large data
# set twice over.
AUTO_ROWS_PER_BATCH = 1 << 20


def resolve_steps_per_batch(
    option: int | None, world_size: int, minibatch_rows: int | None, groupable: bool = True, compiled: bool = False
) -> int:
    """``steps_per_batch``, or when null ``AUTO_STEPS_PER_BATCH`` on one process (with minibatches
    of ``minibatch_rows`` rows, at most ``AUTO_ROWS_PER_BATCH`` rows a batch) and 1 under DDP, which
    synchronises gradients in Lightning's own backward of each batch. ``minibatch_rows`` is None
    with full-batch data; ``groupable``: the data module can put several minibatches in one batch
    (``TensorDataModule``; a user's own data module draws one per batch)."""
    minibatches = minibatch_rows is not None
    if option is None:
        if world_size > 1 or (minibatches and not groupable):
            return 1
        auto = AUTO_STEPS_PER_BATCH["compiled" if compiled else "eager"]
        return max(1, min(auto, AUTO_ROWS_PER_BATCH // minibatch_rows)) if minibatches else auto
    if option > 1 and world_size > 1:
        raise UserInputError(
            f"steps_per_batch={option} with {world_size} processes: DDP runs one step per batch; "
            "use steps_per_batch=1 (or null)."
        )
    if option > 1 and minibatches and not groupable:
        raise UserInputError(
            f"steps_per_batch={option} with minibatches from a data module that draws one per batch: "
            "several steps on one batch would reuse its minibatch; use steps_per_batch=1 (or null)."
        )
    return option


def steps_to_observed(done: int, every: Sequence[int], max_steps: int, limit: int) -> int:
    """How many steps (1 to ``limit``) take a run that has taken ``done`` steps to the next observed
    step: a multiple of one of ``every`` (checkpoints, pictures) or ``max_steps``. A pure function
    of ``done``: the sampler sizes a batch of minibatches with it before the loop runs that batch."""
    for count in range(1, limit + 1):
        step = done + count
        if step == max_steps or any(step % period == 0 for period in every):
            return count
    return limit


def steps_this_batch(trainer: pl.Trainer, every: Sequence[int], limit: int) -> int:
    """``steps_to_observed`` from the trainer's step count."""
    return steps_to_observed(trainer.global_step, every, trainer.max_steps, limit)
