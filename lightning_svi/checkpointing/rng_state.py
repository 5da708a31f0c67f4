"""Random-number-generator state in the checkpoint, so that a resumed run draws what the original drew.

Pyro samples from torch's global generator; Python's and NumPy's are saved too because user models may
use them. The state is stored as tensors and lists of numbers, so the checkpoint still loads with
``torch.load(weights_only=True)``.

Under DDP every rank draws a stream of its own (``training.distributed.seed_ranks_apart``), so the
checkpoint holds every rank's state, and each resumed rank takes its own: with only rank 0's, every
resumed rank drew rank 0's noise, and the ranks' gradient estimates, averaged as if independent, were
one estimate counted W times.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_svi.data import datamodule


def collect_rng_state() -> dict[str, Any]:
    """torch (and CUDA), Python and NumPy generator states, in a form ``weights_only`` loading accepts."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal_state), gauss_next],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``collect_rng_state``."""
    torch.set_rng_state(state["torch"])
    version, internal_state, gauss_next = state["python"]
    random.setstate((version, tuple(internal_state), gauss_next))
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RngStateCheckpoint(pl.Callback):
    """Saves every rank's generators with every checkpoint and restores each rank's own just before
    the first resumed step.

    Saving gathers the ranks' states (one collective): Lightning builds a checkpoint on every rank at
    once (``Trainer.save_checkpoint``, between two barriers) and writes rank 0's. A rank the checkpoint
    holds no state for (a run resumed on more processes than it was saved from, or a checkpoint of one
    state from before per-rank states) keeps the stream ``seed_ranks_apart`` gave it. Restoring waits
    for ``on_train_start``: Lightning's setup (and the guide's warm-up in it) runs after the checkpoint
    is read and would otherwise move the generators on.
    """

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state = collect_rng_state()
        _, world_size = datamodule.rank_and_world_size()
        if world_size == 1:
            return {"ranks": [state]}
        states: list[dict[str, Any] | None] = [None] * world_size
        torch.distributed.all_gather_object(states, state)
        return {"ranks": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("ranks", [state_dict])  # a checkpoint of one state: rank 0's
        rank, _ = datamodule.rank_and_world_size()
        self.pending = states[rank] if rank < len(states) else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pending is not None:
            restore_rng_state(self.pending)
            self.pending = None
