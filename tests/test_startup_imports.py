"""What ``train.py`` does to reach its first step sooner: its config composed once, torch and Lightning imported
without the garbage collector walking them, and the heavy optional libraries imported only where they are used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_svi.config import single_composition
from tests.conftest import REPO

# A fresh interpreter: in pytest's, torch is imported already.
IMPORT_TORCH = """
import gc, json
from lightning_svi.cli import imports_uncollected

collections = []
gc.callbacks.append(lambda phase, info: collections.append(info["generation"]) if phase == "start" else None)
with imports_uncollected("torch"):
    import torch
first = {"collections": len(collections), "enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
with imports_uncollected("torch"):  # already imported: nothing paused, nothing more frozen
    import torch
again = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
print(json.dumps({"first": first, "again": again}))
"""

# What the layers below Lightning import only inside the functions that use them: a run pays for these where it
# draws a picture, fits a NUTS reference or exports to ArviZ, not before its first step. (compile/ imports
# inductor by design: only compiled runs load it.)
OPTIONAL_HEAVY = ("matplotlib", "scipy", "arviz", "pandas", "sympy", "torch._dynamo", "torch._inductor")
BELOW_LIGHTNING = ("errors", "lightning_state", "config", "core", "analysis", "models")
IMPORT_LAYERS = f"""
import importlib, pkgutil, sys
import lightning_svi
for module in pkgutil.walk_packages(lightning_svi.__path__, "lightning_svi."):
    if module.name.split(".")[1] in {BELOW_LIGHTNING!r}:
        importlib.import_module(module.name)
print(sorted(name for name in {OPTIONAL_HEAVY!r} if name in sys.modules))
"""


def test_torch_is_imported_without_a_collection_and_what_it_built_is_frozen_once() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORT_TORCH], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    assert report["first"]["collections"] == 0  # hundreds with the collector on
    assert report["first"]["enabled"]
    assert report["first"]["frozen"] > 100_000  # torch's modules, classes and functions
    assert report["again"] == {"enabled": True, "frozen": report["first"]["frozen"]}


def test_the_layers_below_lightning_import_plotting_scipy_and_arviz_only_where_they_use_them() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORT_LAYERS], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


OPENBLAS_THREADS = """
import json, os, sys
import lightning_svi
import numpy
print(json.dumps([os.environ.get("OPENBLAS_NUM_THREADS"), "numpy" in sys.modules]))
"""


def test_numpys_openblas_runs_one_thread_unless_the_user_chose_otherwise() -> None:
    """Set before numpy loads (train.py imports lightning_svi first), and a user's own setting is kept."""
    environment = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
    for chosen, expected in ((None, "1"), ("4", "4")):
        env = environment if chosen is None else {**environment, "OPENBLAS_NUM_THREADS": chosen}
        result = subprocess.run([sys.executable, "-c", OPENBLAS_THREADS], capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == [expected, True]


# train.py as a user runs it, lightning_svi.cli.run replaced by one that reports what Hydra handed it (no torch is
# imported): "once" as train.py is, "twice" with composed_once doing nothing (Hydra's own two compositions).
TRAIN_PY_CONFIG = """
import contextlib, json, runpy, sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
import lightning_svi.cli
from lightning_svi.config import single_composition

compositions = []
load_configuration = ConfigLoaderImpl.load_configuration
def counted(self, *args, **kwargs):
    compositions.append(kwargs["run_mode"].name)
    return load_configuration(self, *args, **kwargs)
ConfigLoaderImpl.load_configuration = counted

def run(cfg):
    hydra = HydraConfig.get()
    print(json.dumps({"compositions": compositions, "mode": hydra.mode.name, "config": OmegaConf.to_yaml(cfg),
                      "task": list(hydra.overrides.task), "hydra": list(hydra.overrides.hydra)}))
lightning_svi.cli.run = run
train_py, how = sys.argv[1:3]
sys.argv = [train_py, *sys.argv[3:]]
if how == "twice":
    single_composition.composed_once = lambda argv: contextlib.nullcontext()
runpy.run_path(train_py, run_name="__main__")
"""


def train_py_config(how: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    """``train.py OVERRIDES`` up to lightning-svi's ``run`` (``how``: once or twice); stdout's last line reports."""
    command = [sys.executable, "-c", TRAIN_PY_CONFIG, str(REPO / "train.py"), how, *overrides]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env={**os.environ, "HYDRA_FULL_ERROR": "0"})


def report(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("overrides", [[], ["model=gmm", "guide=normal", "optim.lr=0.05", "+tags=[a]"]])
def test_a_run_composes_its_config_once_and_gets_the_config_hydra_composes_twice(
    tmp_path: Path, overrides: list[str]
) -> None:
    runs = {
        how: report(train_py_config(how, *overrides, f"hydra.run.dir={tmp_path / how}", cwd=tmp_path))
        for how in ("once", "twice")
    }
    assert runs["twice"]["compositions"] == ["MULTIRUN", "RUN"]  # Hydra's get_mode, then the run
    assert runs["once"]["compositions"] == ["RUN"]
    once, twice = runs["once"], runs["twice"]
    assert once["config"] == twice["config"] and once["task"] == twice["task"] == overrides
    assert once["mode"] == twice["mode"] == "RUN"
    # Hydra notes the mode it chose among the overrides; with one composition the mode is the config's own
    assert twice["hydra"] == [f"hydra.run.dir={tmp_path / 'twice'}", "hydra.mode=RUN"]
    assert once["hydra"] == [f"hydra.run.dir={tmp_path / 'once'}"]


def test_a_mode_set_by_the_config_and_a_bad_sweep_take_hydras_path(tmp_path: Path) -> None:
    """hydra.mode=MULTIRUN without -m still sweeps; a sweep without -m is refused with Hydra's message."""
    for how in ("once", "twice"):
        swept = report(train_py_config(how, "hydra.mode=MULTIRUN", f"hydra.sweep.dir={tmp_path / how}", cwd=tmp_path))
        assert swept["mode"] == "MULTIRUN"
    refusals = [
        train_py_config(how, "seed=0,1", f"hydra.run.dir={tmp_path / 'refused'}", cwd=tmp_path)
        for how in ("once", "twice")
    ]
    assert refusals[0].returncode == refusals[1].returncode != 0
    assert "seed=0,1" in refusals[0].stderr and refusals[0].stderr == refusals[1].stderr


def test_a_hydra_release_other_than_the_known_one_keeps_hydras_own_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import hydra
    from hydra._internal.hydra import Hydra

    get_mode = Hydra.get_mode
    monkeypatch.setattr(hydra, "__version__", "1.4.0")
    with single_composition.composed_once(["model=gmm"]):
        assert Hydra.get_mode is get_mode
    monkeypatch.setattr(hydra, "__version__", single_composition.KNOWN_HYDRA + "8")
    with single_composition.composed_once(["model=gmm"]):
        assert Hydra.get_mode is not get_mode
    assert Hydra.get_mode is get_mode


LIGHTNING_ORDER = """
import inspect, json, sys
mapped = []
getmodule = inspect.getmodule
def counted(*args, **kwargs):
    mapped.append(len(sys.modules))
    return getmodule(*args, **kwargs)
inspect.getmodule = counted
from lightning_svi.cli import import_lightning
import_lightning()
names = list(sys.modules)  # in the order they were imported
print(json.dumps({"dynamo": names.index("torch._dynamo"), "scipy": names.index("scipy"),
                  "matplotlib": names.index("matplotlib"), "most_mapped": max(mapped), "all": len(names)}))
"""


def test_lightning_is_imported_with_dynamo_before_scipy_and_matplotlib() -> None:
    """So that inspect.getmodule, called as dynamo registers its operators, maps ~1,000 fewer modules to files."""
    result = subprocess.run([sys.executable, "-c", LIGHTNING_ORDER], capture_output=True, text=True, check=True)
    order = json.loads(result.stdout)
    assert order["dynamo"] < order["scipy"] and order["dynamo"] < order["matplotlib"]
    assert order["most_mapped"] < order["scipy"] + 50  # no getmodule call once scipy's modules are loaded
