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


def register_resolver() -> None:
    """Make ``${launch_time:...}`` available to configs composed in this process."""
    if not OmegaConf.has_resolver("launch_time"):
        OmegaConf.register_new_resolver("launch_time", launch_time)
