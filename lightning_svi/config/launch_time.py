"""``${launch_time:FORMAT}``: the time ``train.py`` was launched, the same in every DDP rank.

Lightning's ``ddp`` strategy re-runs ``train.py`` for ranks 1..W-1, a few seconds after rank 0.
With Hydra's ``${now:...}`` each rank would stamp its own folder name; a multirun's ranks would
then disagree on the sweep folder. The first process to resolve this stamp records it in the
environment, which the ranks Lightning launches inherit.
"""

from __future__ import annotations

import os
from datetime import datetime

from omegaconf import OmegaConf

ENV_VARIABLE = "LIGHTNING_SVI_LAUNCH_TIME"


def launch_time(pattern: str) -> str:
    """The launch time formatted by ``pattern`` (``strftime`` codes), recorded on first use."""
    recorded = os.environ.setdefault(ENV_VARIABLE, datetime.now().isoformat())
    return datetime.fromisoformat(recorded).strftime(pattern)


def tags_suffix(tags: list[str] | None) -> str:
    """``${tags_suffix:${tags}}``: ``-a-b`` for ``tags=[a,b]``, nothing for none (the run folder's name)."""
    return "".join(f"-{tag}" for tag in tags or [])


def overrides_suffix(override_dirname: str) -> str:
    """``${overrides_suffix:${hydra.job.override_dirname}}``: ``,optim.lr=0.05`` (the command line's
    overrides other than the model and guide, already in the folder's name), as one folder name."""
    kept = [item for item in override_dirname.split(",") if item and not item.startswith(("model=", "guide="))]
    return "".join(f",{item}" for item in kept).replace("/", ".")


def register_resolver() -> None:
    """Make ``${launch_time:...}``, ``${tags_suffix:...}`` and ``${overrides_suffix:...}`` available to configs
    composed in this process."""
    resolvers = {"launch_time": launch_time, "tags_suffix": tags_suffix, "overrides_suffix": overrides_suffix}
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
