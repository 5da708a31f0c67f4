"""The run folder's name: ``${launch_time:FORMAT}``, ``${launch_id:}`` and ``${run_folder_of:CKPT,DEFAULT}``.

Lightning's ``ddp`` strategy re-runs ``train.py`` for ranks 1..W-1, a few seconds after rank 0.
With Hydra's ``${now:...}`` each rank would stamp its own folder name; a multirun's ranks would
then disagree on the sweep folder. The first process to resolve the stamp (and the launch id)
records it in the environment, which the ranks Lightning launches inherit.

Two runs started in the same second (``for s in 0 1; do python train.py seed=$s & done``) would
share a folder named by the time alone: ``launch_id`` adds a random suffix drawn once per launch.

A run resumed with ``ckpt_path=RUN/checkpoints/last.ckpt`` continues in ``RUN`` (the same TensorBoard
run, one curve), unless ``hydra.run.dir`` says otherwise: ``run_folder_of`` names it.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

ENV_VARIABLE = "LIGHTNING_SVI_LAUNCH_TIME"
ID_ENV_VARIABLE = "LIGHTNING_SVI_LAUNCH_ID"


def launch_time(pattern: str) -> str:
    """The launch time formatted by ``pattern`` (``strftime`` codes), recorded on first use."""
    recorded = os.environ.setdefault(ENV_VARIABLE, datetime.now().isoformat())
    return datetime.fromisoformat(recorded).strftime(pattern)


def launch_id() -> str:
    """Six random hex digits, the same for every rank of one launch (recorded on first use)."""
    return os.environ.setdefault(ID_ENV_VARIABLE, secrets.token_hex(3))


def run_folder_of(ckpt_path: str | None, default: str) -> str:
    """The run folder that wrote ``ckpt_path`` (``RUN`` of ``RUN/checkpoints/NAME.ckpt``, where ``RUN`` is
    a run folder: it has Hydra's ``.hydra/``), else ``default``."""
    if not ckpt_path:
        return default
    checkpoints = Path(str(ckpt_path)).parent
    run_dir = checkpoints.parent
    if checkpoints.name == "checkpoints" and (run_dir / ".hydra").is_dir():
        return str(run_dir)
    return default


def tags_suffix(tags: list[str] | None) -> str:
    """``${tags_suffix:${tags}}``: ``-a-b`` for ``tags=[a,b]``, nothing for none (the run folder's name)."""
    return "".join(f"-{tag}" for tag in tags or [])


def overrides_suffix(override_dirname: str) -> str:
    """``${overrides_suffix:${hydra.job.override_dirname}}``: ``,optim.lr=0.05`` (the command line's
    overrides other than the model and guide, already in the folder's name), as one folder name."""
    kept = [item for item in override_dirname.split(",") if item and not item.startswith(("model=", "guide="))]
    return "".join(f",{item}" for item in kept).replace("/", ".")


def register_resolver() -> None:
    """Make ``${launch_time:...}``, ``${launch_id:}``, ``${run_folder_of:...}``, ``${tags_suffix:...}`` and
    ``${overrides_suffix:...}`` available to configs composed in this process."""
    resolvers = {
        "launch_time": launch_time,
        "launch_id": launch_id,
        "run_folder_of": run_folder_of,
        "tags_suffix": tags_suffix,
        "overrides_suffix": overrides_suffix,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
