"""What every reference loop shares: the plain ``svi.step`` loop, its timing, and the param store read back."""

from __future__ import annotations

import time
from typing import Any

import pyro
import torch

FINAL_WINDOW = 20  # the final ELBO is the mean of the last FINAL_WINDOW steps' -loss


def as_number(value: torch.Tensor) -> float | list:
    """A tensor as a float (scalar) or nested lists, like ``summary.json`` writes θ and φ."""
    value = value.detach().cpu()
    return value.item() if value.dim() == 0 else value.tolist()


def param_store_values() -> dict[str, float | list]:
    """Every param-store entry, constrained (``pyro.param(name)``), as floats or nested lists."""
    store = pyro.get_param_store()
    return {name: as_number(value) for name, value in store.items()}


def run_steps(svi: pyro.infer.SVI, steps: int, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``svi.step(*args, **kwargs)`` ``steps`` times; the losses, the final ELBO and the params afterwards."""
    start = time.perf_counter()
    losses = [svi.step(*args, **kwargs) for _ in range(steps)]
    seconds = time.perf_counter() - start
    window = losses[-FINAL_WINDOW:]
    mean = sum(window) / len(window)
    return {
        "steps": steps,
        "elbo": -mean,
        "loss": mean,
        # the spread of the window's single-step estimates (Monte Carlo noise plus the last steps' drift)
        "elbo_std": (sum((loss - mean) ** 2 for loss in window) / max(len(window) - 1, 1)) ** 0.5,
        "losses": losses,
        "params": param_store_values(),
        "seconds": seconds,
    }
