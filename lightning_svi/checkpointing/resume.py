"""Which checkpoint a run resumes from: the one the user names, or — in a SLURM job that was requeued
after pre-emption — the newest one its own run folder holds.

A requeued job re-runs the same command, so ``hydra.run.dir`` must not depend on the time (use e.g.
``hydra.run.dir=outputs/slurm-${oc.env:SLURM_JOB_ID}``). Its run folder may hold Lightning's
``hpc_ckpt_N.ckpt`` (written on the requeue signal) and ``checkpoints/last.ckpt`` (written periodically and
on SIGTERM); both are written atomically at step boundaries, so the newest is the furthest step.
"""

from __future__ import annotations

import os
from pathlib import Path


def checkpoint_to_resume(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``ckpt_path`` if given; else, when ``SLURM_RESTART_COUNT`` says this job was requeued, the run folder's
    most recently written checkpoint; else None (a fresh start)."""
    if ckpt_path is not None:
        return ckpt_path
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return None
    candidates = [*Path(run_dir).glob("hpc_ckpt_*.ckpt"), *Path(run_dir).glob("checkpoints/last.ckpt")]
    if not candidates:
        return None
    return str(max(candidates, key=lambda path: path.stat().st_mtime_ns))
