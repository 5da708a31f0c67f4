"""Steps that a Lightning callback looks at, so that the steps between them can run as one
Lightning batch.

Lightning's loop costs a fixed 0.5-2 ms per batch (its loop, the data fetch, the callbacks' hooks),
under DDP several more (two collectives through gloo, the ranks waiting for each other): a tenth of
a small model's eager step on one process, a third of it under DDP, more than a compiled step
itself. SVI therefore runs several steps per batch (``steps_per_batch``), ending each batch on the next step
that is checkpointed or pictured (or the last), so every Lightning callback sees exactly the steps
it would have seen one step per batch, and the steps in between are the same updates, bit for bit.
With full-batch data every step of a batch reads that batch; with minibatches a batch carries one
minibatch per step, the consecutive minibatches the sampler would have drawn one batch each
(``TensorDataModule.group_minibatches``); under DDP each rank groups its own shards the same way,
and since the grouping is a pure function of the step count the ranks take the same steps in
every batch. Logged steps need no batch of their own: ``SVIModule``
calls the step loggers (``StepLogger``) on them wherever they fall. The run's first step is a batch
of its own: it carries the run's one-off work (Pyro's validation of the program, the first event
written to TensorBoard, the first posterior draw of enumerated sites), which the loop's rate
(``summary.json`` ``timing.steps_per_second``) leaves out, as a benchmark leaves out its warm-up.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl

from lightning_svi.errors import UserInputError

# A batch of eager steps (of minibatches: full-batch data on one process takes ``AUTO_BATCH_SECONDS``,
# below) lasts tens of milliseconds; compiled steps are ten times shorter, and a
# batch of them only as long with ten times as many (the progress bar still updates several times
# a second). Under DDP each batch also costs two collectives through gloo (Lightning's broadcast of
# SIGTERM and ``StopSignals``' all-reduce), milliseconds each on CPU: eager batches are five times
# longer there.
AUTO_STEPS_PER_BATCH = {"eager": 10, "eager under DDP": 50, "compiled": 100}
# On one process with full-batch data a batch may end after any step: every step reads the same data,
# and the next batch starts where this one stopped. There the default batch runs up to
# ``TIMED_STEPS_PER_BATCH`` steps and ends once it has run ``AUTO_BATCH_SECONDS`` (``batch_seconds``):
# a fast model's steps (a millisecond or two: the beta-Bernoulli, Pyro's regression tutorial) share
# Lightning's per-batch cost a hundred at a time, and a slow model's batch still ends several times a
# second for the progress bar, a stop signal and the divergence guard.
TIMED_STEPS_PER_BATCH = 100
AUTO_BATCH_SECONDS = 0.1
# A batch of minibatches is gathered at once: by default it holds at most this many rows (about as
# many as the largest built-in setting's whole data), so that the gather never holds a large data
# set twice over.
AUTO_ROWS_PER_BATCH = 1 << 20


def resolve_steps_per_batch(
    option: int | None,
    world_size: int,
    minibatch_rows: int | None,
    groupable: bool = True,
    compiled: bool = False,
    plain_precision: bool = True,
) -> int:
    """``steps_per_batch``, or when null ``AUTO_STEPS_PER_BATCH`` (with minibatches of
    ``minibatch_rows`` rows, at most ``AUTO_ROWS_PER_BATCH`` rows a batch). ``minibatch_rows`` is
    None where every step reads the same batch (full-batch data, or under DDP the same shard);
    ``groupable``: the data module can put several minibatches in one batch (``TensorDataModule``;
    a user's own data module draws one per batch). Under DDP with a precision plugin
    (``plain_precision`` false) each step goes through Lightning's backward, whose DDP hooks
    synchronise the gradients: one step per batch."""
    minibatches = minibatch_rows is not None
    through_lightning_ddp = world_size > 1 and not plain_precision
    if option is None:
        if through_lightning_ddp or (minibatches and not groupable):
            return 1
        if batch_seconds(option, world_size, minibatch_rows) is not None:
            return TIMED_STEPS_PER_BATCH
        auto = AUTO_STEPS_PER_BATCH["compiled" if compiled else "eager under DDP" if world_size > 1 else "eager"]
        return max(1, min(auto, AUTO_ROWS_PER_BATCH // minibatch_rows)) if minibatches else auto
    if option > 1 and through_lightning_ddp:
        raise UserInputError(
            f"steps_per_batch={option} with {world_size} processes and a trainer.precision plugin: "
            "each step goes through Lightning's backward, one step per batch; use steps_per_batch=1 (or null)."
        )
    if option > 1 and minibatches and not groupable:
        raise UserInputError(
            f"steps_per_batch={option} with minibatches from a data module that draws one per batch: "
            "several steps on one batch would reuse its minibatch; use steps_per_batch=1 (or null)."
        )
    return option


def batch_seconds(option: int | None, world_size: int, minibatch_rows: int | None) -> float | None:
    """How long a batch runs before it ends early (``AUTO_BATCH_SECONDS``), where it may: ``steps_per_batch``
    null, one process, every step on the same batch. None elsewhere: minibatches are grouped per batch
    before it runs, and under DDP the ranks must end their batches on the same step."""
    return AUTO_BATCH_SECONDS if option is None and world_size == 1 and minibatch_rows is None else None


def steps_to_observed(done: int, every: Sequence[int], max_steps: int, limit: int) -> int:
    """How many steps (1 to ``limit``) take a run that has taken ``done`` steps to the end of its
    batch: the first step, an observed step (a multiple of one of ``every``: checkpoints, pictures;
    or ``max_steps``) or a multiple of ``limit``, whichever comes first. A pure function of ``done``:
    the sampler sizes a batch of minibatches with it before the loop runs that batch."""
    if done == 0:
        return 1
    for count in range(1, limit + 1):
        step = done + count
        if step == max_steps or step % limit == 0 or any(step % period == 0 for period in every):
            return count
    return limit


def steps_this_batch(trainer: pl.Trainer, every: Sequence[int], limit: int) -> int:
    """``steps_to_observed`` from the trainer's step count."""
    return steps_to_observed(trainer.global_step, every, trainer.max_steps, limit)
