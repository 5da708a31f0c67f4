"""Let each DDP rank write its own θ and φ, to check that the ranks agree (``rank_dumps=true``)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch


class RankStateDump(pl.Callback):
    """Every rank writes ``rank<r>.pt`` under ``directory`` when training ends: the module's state
    dict (θ and φ, unconstrained, as trained), the step and the world size.

    The one thing in a run folder written by ranks other than zero; off unless asked for.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu() for name, tensor in pl_module.state_dict().items()}
        dump = {"global_rank": trainer.global_rank, "world_size": trainer.world_size, "step": trainer.global_step}
        torch.save({**dump, "state_dict": state}, self.directory / f"rank{trainer.global_rank}.pt")
