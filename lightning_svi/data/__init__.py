"""Data: CSV tables checked against a model's spec, data files read into tensors, and the Lightning
data modules over them.

The exports are imported on first use: ``lightning_svi.config.table`` is read before torch is imported,
and importing it runs this file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_svi.data.datamodule import FileDataModule, TensorDataModule
    from lightning_svi.data.readers import read_columns

_EXPORTS = {
    "FileDataModule": "lightning_svi.data.datamodule",
    "TensorDataModule": "lightning_svi.data.datamodule",
    "read_columns": "lightning_svi.data.readers",
}
__all__ = ["FileDataModule", "TensorDataModule", "read_columns"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
