"""The plain Pyro reference loops of every model, with the settings they are compared at.

``python -m tests.pyro_models.reference [NAME ...] [--seed S]`` runs them and prints the final ELBO (the mean of
the last 20 steps' -loss), its spread, the runtime and the learned parameters.

``SETTINGS[name]`` is what ``reference_svi`` runs by default (steps, lr) and what a ``train.py`` run must use to be
the same computation: the estimator, ``max_plate_nesting``, one particle, Adam's betas, no learning-rate schedule.
``OVERRIDES[name]`` spells that as ``train.py`` overrides in the keys of ``conf/`` (optim.*, elbo.*, trainer.*).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

import pyro

from tests.pyro_models import MODELS

SETTINGS: dict[str, dict[str, Any]] = {
    # Trace_ELBO, pyro.param guide; the guide family contains the exact posterior Beta(16, 14)
    "coin": {"steps": 300, "lr": 0.02, "betas": (0.9, 0.999), "elbo": "Trace_ELBO", "max_plate_nesting": 0},
    # exact loss (AutoDelta globals, assignments summed out): deterministic given the initial locs
    "gmm": {"steps": 200, "lr": 0.1, "betas": (0.8, 0.99), "elbo": "TraceEnum_ELBO", "max_plate_nesting": 1},
    "regression": {"steps": 300, "lr": 0.1, "betas": (0.9, 0.999), "elbo": "Trace_ELBO", "max_plate_nesting": 1},
    # exact loss (AutoDelta tables, hidden states summed out), full batch
    "hmm": {"steps": 150, "lr": 0.1, "betas": (0.9, 0.999), "elbo": "TraceEnum_ELBO", "max_plate_nesting": 2},
    "vae": {"steps": 300, "lr": 0.01, "betas": (0.9, 0.999), "elbo": "Trace_ELBO", "max_plate_nesting": 1},
}

# Seeds whose reference run reaches the intended optimum (see each module's reference_svi docstring).
GOOD_SEEDS: dict[str, tuple[int, ...]] = {"gmm": (1, 2, 3, 4, 5, 10, 11, 13, 14), "hmm": (2,)}


def overrides(name: str, steps: int | None = None) -> list[str]:
    """``train.py`` overrides that make its loop the reference loop's: the estimator, one particle, Adam's
    learning rate and betas, no schedule, ``steps`` steps (default: the reference's)."""
    settings = SETTINGS[name]
    beta1, beta2 = settings["betas"]
    return [
        "elbo=trace_enum" if settings["elbo"] == "TraceEnum_ELBO" else "elbo=trace",
        "elbo.num_particles=1",
        "elbo.vectorize_particles=false",
        f"elbo.max_plate_nesting={settings['max_plate_nesting']}",
        f"optim.lr={settings['lr']}",
        f"optim.betas=[{beta1},{beta2}]",
        "optim.scheduler=null",
        f"trainer.max_steps={steps or settings['steps']}",
    ]


def reference(name: str) -> Callable[..., dict[str, Any]]:
    """``tests.pyro_models.<name>.reference_svi``."""
    return importlib.import_module(f"tests.pyro_models.{name}").reference_svi


def run(name: str, seed: int = 0, **options: Any) -> dict[str, Any]:
    """Model ``name``'s reference loop at its ``SETTINGS`` (``options`` override steps, lr, ...), with Pyro's
    global parameter store as a plain Pyro user has it, whatever an earlier test in the process set."""
    settings = {key: SETTINGS[name][key] for key in ("steps", "lr")}
    if "betas" in reference(name).__kwdefaults__:
        settings["betas"] = SETTINGS[name]["betas"]
    with pyro.settings.context(module_local_params=False):
        return reference(name)(seed=seed, **{**settings, **options})


def _short(value: Any, width: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description="Run the plain Pyro reference loops.")
    parser.add_argument("names", nargs="*", help=f"some of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--seed", type=int, default=None, help="default: each model's first good seed, else 0")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tiny tensors: 1 is fastest)")
    options = parser.parse_args(argv)
    torch.set_num_threads(options.threads)
    for name in options.names or MODELS:
        seed = options.seed if options.seed is not None else GOOD_SEEDS.get(name, (0,))[0]
        result = run(name, seed=seed)
        print(
            f"{name}: seed {seed}, {result['steps']} steps, lr {result['lr']}: "
            f"final ELBO {result['elbo']:.4f} (spread of the last 20: {result['elbo_std']:.4f}), "
            f"{result['seconds']:.1f} s ({result['steps'] / result['seconds']:.0f} steps/s)"
        )
        params = result["params"] if name != "vae" else result["param_shapes"]
        for key, value in params.items():
            print(f"    {key}: {_short(value)}")
        for key in ("inferred_mean", "log_evidence", "map_estimates", "median", "loss_per_image"):
            if key in result:
                print(f"    {key}: {_short(result[key])}")


if __name__ == "__main__":
    main()
