"""What ``train.py`` does to start faster: torch and Lightning imported without the garbage collector walking them."""

from __future__ import annotations

import json
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


def test_torch_is_imported_without_a_collection_and_what_it_built_is_frozen_once() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORT_TORCH], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    assert report["first"]["collections"] == 0  # hundreds with the collector on
    assert report["first"]["enabled"]
    assert report["first"]["frozen"] > 100_000  # torch's modules, classes and functions
    assert report["again"] == {"enabled": True, "frozen": report["first"]["frozen"]}
