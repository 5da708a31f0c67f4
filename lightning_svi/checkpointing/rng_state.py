"""Random-number-generator state in the checkpoint, so that a resumed run draws what the original drew.

Pyro samples from torch's global generator; Python's and NumPy's are saved too because user models may
use them. The state is stored as tensors and lists of numbers, so the checkpoint still loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


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
    """Saves the generators with every checkpoint and restores them just before the first resumed step.

    Restoring waits for ``on_train_start``: Lightning's setup (and the guide's warm-up in it) runs after
    the checkpoint is read and would otherwise move the generators on.
    """

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return collect_rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pending is not None:
            restore_rng_state(self.pending)
            self.pending = None
