"""Shared helpers: compose the real Hydra configs, train in-process or through ``train.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
QUIET = ["progress_bar_refresh_rate=0"]


def compose_config(*overrides: str) -> DictConfig:
    """The config ``python train.py OVERRIDES`` would run, without Hydra's own keys."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[*QUIET, *overrides])


@pytest.fixture
def train_in_process(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Train a composed config into ``tmp_path/run`` (or ``run_dir``) and return its summary."""
    from lightning_svi.training.run import train

    def run(*overrides: str, run_dir: Path | None = None) -> dict[str, Any]:
        return train(compose_config(*overrides), run_dir or tmp_path / "run")

    return run


def run_train_py(*args: str, cwd: Path, timeout: float = 300, importtime: bool = False) -> subprocess.CompletedProcess:
    """``python train.py ARGS`` as a user types it, from ``cwd``; with ``importtime``, under
    ``python -X importtime``, which lists every module imported on stderr (see ``imported_modules``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, *(["-X", "importtime"] if importtime else []), str(REPO / "train.py"), *QUIET, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def imported_modules(stderr: str) -> set[str]:
    """The modules that ``python -X importtime`` reported on ``stderr``."""
    lines = [line for line in stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[-1].strip() for line in lines[1:]}  # the first line is the header


def guide_of_kind(kind: str, model: Any, **options: Any) -> Any:
    """The guide that ``guide=KIND`` builds for a built-in ``model``, from the shipped YAML."""
    from omegaconf import OmegaConf

    from lightning_svi.core.programs.build import BuiltModel, build_guide

    node = OmegaConf.merge(OmegaConf.load(CONF_DIR / "guide" / f"{kind}.yaml"), options)
    return build_guide(node, BuiltModel(model, model, model.name), columns=[], num_rows=model.num_data)


def exact_beta_binomial_guide(model: Any, data: dict) -> Any:
    """A beta-binomial's full guide with φ set to the exact posterior's parameters."""
    import torch
    from pyro.distributions import constraints
    from torch.distributions import transform_to

    guide = model.full_guide()
    posterior = model.exact_posterior(data)["rate"]
    with torch.no_grad():
        guide.qa_unconstrained.copy_(transform_to(constraints.positive).inv(posterior.concentration1))
        guide.qb_unconstrained.copy_(transform_to(constraints.positive).inv(posterior.concentration0))
    return guide


@pytest.fixture
def module_local_params() -> Any:
    """Pyro's module-local parameters, as training sets them, for a test that builds models and guides by
    hand; the global param store back afterwards."""
    import pyro

    pyro.settings.set(module_local_params=True)
    yield
    pyro.settings.set(module_local_params=False)


@pytest.fixture
def one_torch_thread() -> Any:
    """Tiny tensors: one torch thread is several times faster than two on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "summary.json").read_text())


def read_events(run_dir: Path) -> Any:
    """The run's TensorBoard event files, loaded by TensorBoard itself (every scalar, histogram and image)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0, "images": 0}
    )
    accumulator.Reload()
    return accumulator


def read_histogram_tags(run_dir: Path) -> set[str]:
    """The tags of the histograms in the run's TensorBoard event files."""
    return set(read_events(run_dir).Tags()["histograms"])


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in the run's TensorBoard event files, read by TensorBoard itself."""
    accumulator = read_events(run_dir)
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }
