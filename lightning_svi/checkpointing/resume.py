"""Which checkpoint a run resumes from — the one the user names, the run folder's own with ``resume=true``,
or in a SLURM job that was requeued after pre-emption the newest one its run folder holds — and whether
there is anything left to train from it.

A requeued job re-runs the same command, so ``hydra.run.dir`` must not depend on the time (use e.g.
``hydra.run.dir=outputs/slurm-${oc.env:SLURM_JOB_ID}``). Its run folder may hold Lightning's
``hpc_ckpt_N.ckpt`` (written on the requeue signal) and ``checkpoints/last.ckpt`` (written periodically and
on SIGTERM); both are written atomically at step boundaries, so the newest is the furthest step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning_svi.checkpointing.atomic_io import AtomicCheckpointIO
from lightning_svi.errors import UserInputError

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


class NothingToTrain(UserInputError):
    """The checkpoint to resume from is already at (or past) the step the run would stop at."""


def checkpoint_to_resume(ckpt_path: str | None, run_dir: Path, resume: bool = False) -> str | None:
    """``ckpt_path`` if given; with ``resume``, the run folder's ``checkpoints/last.ckpt``; else, when
    ``SLURM_RESTART_COUNT`` says this job was requeued, the run folder's most recently written checkpoint;
    else None (a fresh start)."""
    if ckpt_path is not None:
        return ckpt_path
    if resume:
        return str(Path(run_dir) / LAST_CHECKPOINT)
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return None
    candidates = [*Path(run_dir).glob("hpc_ckpt_*.ckpt"), *Path(run_dir).glob(str(LAST_CHECKPOINT))]
    if not candidates:
        return None
    return str(max(candidates, key=lambda path: path.stat().st_mtime_ns))


def check_steps_to_go(ckpt_path: str, trainer: Any) -> None:
    """Read the checkpoint (its CRC, its content: ``CheckpointError`` when it cannot be resumed) and raise
    ``NothingToTrain`` when ``trainer.max_steps`` is not past its step, or ``trainer.max_epochs`` is 0."""
    step = AtomicCheckpointIO().load_checkpoint(ckpt_path)["global_step"]
    max_steps, max_epochs = trainer.get("max_steps", -1), trainer.get("max_epochs")
    if max_epochs == 0:
        raise NothingToTrain(
            f"trainer.max_epochs=0 with ckpt_path={ckpt_path} (step {step}): nothing to train; "
            f"give trainer.max_epochs=-1 and trainer.max_steps above {step} to train further."
        )
    if max_steps is not None and max_steps != -1 and max_steps <= step:
        raise NothingToTrain(
            f"trainer.max_steps={max_steps} with ckpt_path={ckpt_path}: nothing to train, the checkpoint is at "
            f"step {step} already; give trainer.max_steps above {step} to train further."
        )
