"""Steps that something outside the training step looks at, so that the steps between them can run
as one Lightning batch.

Lightning's loop costs a fixed few hundred µs per batch, more than a compiled SVI step itself.
Compiled mode therefore runs several SVI steps per batch, ending each batch on the next step that
is logged, checkpointed or pictured (or the last), so every callback sees exactly the steps it
would have seen one step per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl

from lightning_svi.callbacks.logging import is_logging_step


def steps_this_batch(trainer: pl.Trainer, every: Sequence[int], limit: int) -> int:
    """How many steps (1 to ``limit``) take the run to the next observed step: a logging step, a
    multiple of one of ``every`` (checkpoints, pictures) or ``max_steps``."""
    done = trainer.global_step
    for count in range(1, limit + 1):
        step = done + count
        if is_logging_step(trainer, step) or any(step % period == 0 for period in every):
            return count
    return limit


def count_step(trainer: pl.Trainer) -> None:
    """Count an optimizer step taken without Lightning's optimizer wrapper, as the wrapper would
    (``trainer.global_step`` of a manually optimized module counts these)."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    progress.increment_ready()
    progress.increment_completed()
