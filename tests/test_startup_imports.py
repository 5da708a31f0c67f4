"""What ``train.py`` does to reach its first step sooner: torch and Lightning imported without the garbage
collector walking them, and the heavy optional libraries imported only where they are used."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
