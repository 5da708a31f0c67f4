"""Random-number state kept apart from the training stream."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def untouched_rng(device: torch.device) -> Iterator[None]:
    """Sampling done for logging leaves the seeded random stream as it was, so a run draws the same
    training samples whether or not (and how often) it draws pictures."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
