"""One run per run folder: a Hydra callback that claims ``hydra.run.dir`` before Hydra writes anything into it.

Without it a fresh run into a folder that holds another run's ``checkpoints/last.ckpt`` wrote its own
checkpoints beside it (``last-v1.ckpt``) and its ``.hydra/config.yaml`` over the other's, and a later
``ckpt_path=RUN/checkpoints/last.ckpt`` resumed the old run; two runs given the same folder at once
interleaved their curves and kept one ``summary.json``. ``RunFolderGuard.on_run_start`` runs after Hydra
composes the config and before it creates the folder, and refuses, in one line (exit 2):

* a folder another live process is writing (a lock file, ``.lightning-svi.lock``, held while the run lives);
* a folder holding a run's ``checkpoints/last.ckpt``, unless this run resumes that run: ``resume=true``,
  ``ckpt_path`` inside the folder, or a requeued SLURM job (``SLURM_RESTART_COUNT``).

It also records whether the folder was fresh (empty or absent), so that a run refused before training
leaves no folder behind (``remove_if_fresh``). Torch-free: it runs before any heavy import.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from pathlib import Path
from typing import IO, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lightning_svi.errors import ConfigError, UserInputError

LOCK_NAME = ".lightning-svi.lock"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
# What Hydra writes into a run folder before the job starts: a folder holding only these is fresh.
HYDRA_FILES = frozenset({".hydra", "train.log", LOCK_NAME})
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")

_locks: dict[Path, IO[str]] = {}  # held open for the life of the process
_fresh: set[Path] = set()


def is_first_rank() -> bool:
    """Whether this process is rank 0 of its job (or the only one). The ranks that Lightning, torchrun or
    SLURM start write into rank 0's run folder, which rank 0 has claimed."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


def claim_run_folder(run_dir: Path, ckpt_path: Any, resume: Any) -> None:
    """Lock ``run_dir`` for this process and check that this run may write into it (see the module's
    docstring); ``UserInputError`` where it may not."""
    if not isinstance(resume, bool):
        raise ConfigError(f"resume={resume!r}: must be true or false.")
    if resume and ckpt_path is not None:
        raise ConfigError(
            f"resume=true with ckpt_path={ckpt_path}: give one; resume=true continues the run in hydra.run.dir "
            "from its checkpoints/last.ckpt, ckpt_path=RUN/checkpoints/last.ckpt continues that run in RUN."
        )
    run_dir = Path(run_dir).absolute()
    fresh = not run_dir.exists() or not any(run_dir.iterdir())
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        _lock(run_dir)
    except OSError as error:
        raise ConfigError(f"hydra.run.dir={run_dir}: cannot be used as the run folder ({error.strerror}).") from None
    if fresh:
        _fresh.add(run_dir)
    checkpoint = run_dir / LAST_CHECKPOINT
    if resume and not checkpoint.is_file():
        raise ConfigError(
            f"resume=true: hydra.run.dir={run_dir} holds no {LAST_CHECKPOINT} to resume; give the folder of "
            "the run to continue (hydra.run.dir=outputs/...), or ckpt_path=."
        )
    resumes_here = resume or _inside(ckpt_path, run_dir) or int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    if checkpoint.is_file() and not resumes_here:
        raise ConfigError(
            f"hydra.run.dir={run_dir}: holds another run ({LAST_CHECKPOINT}); a new run would mix with it. "
            "Continue that run with resume=true, or give a new hydra.run.dir (or none: a new dated folder)."
        )


def _inside(ckpt_path: Any, run_dir: Path) -> bool:
    return ckpt_path is not None and Path(str(ckpt_path)).absolute().is_relative_to(run_dir)


def _lock(run_dir: Path) -> None:
    if run_dir in _locks:
        return  # a launcher's next job in this process, into the same folder
    file = open(run_dir / LOCK_NAME, "a+")  # noqa: SIM115 (held open until the process ends)
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read().strip() or "another process"
        file.close()
        raise ConfigError(
            f"hydra.run.dir={run_dir}: in use by another run ({holder}); wait for it to end, or give another "
            "hydra.run.dir (or none: a new dated folder)."
        ) from None
    file.truncate(0)
    file.write(f"process {os.getpid()}\n")
    file.flush()
    _locks[run_dir] = file


def remove_if_fresh(run_dir: Path) -> bool:
    """Delete ``run_dir`` if this process found it fresh and it holds nothing a run wrote (no summary, no
    checkpoint): a run refused before training leaves no folder. Whether it was deleted."""
    run_dir = Path(run_dir).absolute()
    if run_dir not in _fresh or not run_dir.is_dir():
        return False
    if {path.name for path in run_dir.iterdir()} - HYDRA_FILES - {"tensorboard"}:
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    _fresh.discard(run_dir)
    file = _locks.pop(run_dir, None)
    if file is not None:
        file.close()
    return True


class RunFolderGuard(Callback):
    """Hydra callback (``hydra.callbacks.run_folder`` in ``conf/config.yaml``): ``claim_run_folder`` before
    a single run's folder is created."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_first_rank():
            return
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        try:
            claim_run_folder(run_dir, config.get("ckpt_path"), config.get("resume", False))
        except UserInputError as error:
            print(f"lightning-svi: error: {error}", file=sys.stderr)
            remove_if_fresh(run_dir)
            sys.exit(2)
