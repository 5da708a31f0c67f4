"""Every read and write of Lightning's private loop state, in one place.

Checked against pytorch-lightning 2.6.6 (``tests/test_lightning_state.py`` fails when a release
moves or renames any of it). Nothing here imports Lightning: it only follows a ``Trainer``'s
attributes, so any layer may use it.
"""

from __future__ import annotations

from typing import Any

CHECKED_AGAINST = "2.6.6"


def count_step(trainer: Any) -> None:
    """Count an optimizer step taken without Lightning's optimizer wrapper, as the wrapper would:
    ``trainer.global_step`` of a manually optimized module is this counter."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    progress.increment_ready()
    progress.increment_completed()


def stop_after_this_step(trainer: Any) -> None:
    """Stop the run as Lightning stops it on SIGTERM: after the current step, checkpointed by its
    callbacks, ``trainer.fit`` raising ``SIGTERMException``."""
    trainer._signal_connector.received_sigterm = True
