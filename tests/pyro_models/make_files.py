"""Write each model's data set into a folder as the files ``data=file data.path=...`` reads.

``python -m tests.pyro_models.make_files FOLDER [--seed S]`` (or ``write_files(folder, seed)`` from a test).
Column names are the models' argument names, so the default mapping (data columns passed by name) fits:

- ``coin.csv``, ``gmm.csv``: one column ``data`` (one value per row);
- ``regression.npz``: ``x`` (170, 3) float32, ``y`` (170,) float32;
- ``hmm.npz``: ``sequences`` (20, 30, 6) float32, ``lengths`` (20,) int64 (``model_1`` runs ``range(lengths.max())``,
  so the loader must keep integer arrays integer);
- ``vae.npz``: ``x`` (256, 784) float32.
"""

from __future__ import annotations

import argparse
import csv
import importlib
from pathlib import Path

import numpy as np
import torch

from tests.pyro_models import MODELS

CSV_MODELS = ("coin", "gmm")  # one 1-D column each


def file_name(name: str) -> str:
    """The file ``write_files`` writes for model ``name``."""
    return f"{name}.csv" if name in CSV_MODELS else f"{name}.npz"


def to_numpy(value: torch.Tensor) -> np.ndarray:
    """float32 for floating tensors, int64 for integer ones."""
    array = value.detach().cpu().numpy()
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array.astype(np.int64)


def write_file(name: str, folder: str | Path, seed: int = 0) -> Path:
    """Write model ``name``'s ``make_data(seed)`` into ``folder``; return the file's path."""
    columns = importlib.import_module(f"tests.pyro_models.{name}").make_data(seed)
    path = Path(folder) / file_name(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if name in CSV_MODELS:
        arrays = {key: to_numpy(value) for key, value in columns.items()}
        if any(array.ndim != 1 for array in arrays.values()):
            raise ValueError(f"{name}: CSV needs 1-D columns, got {[a.shape for a in arrays.values()]}")
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(list(arrays))
            writer.writerows(zip(*(array.tolist() for array in arrays.values()), strict=True))
    else:
        np.savez(path, **{key: to_numpy(value) for key, value in columns.items()})
    return path


def write_files(folder: str | Path, seed: int = 0, names: tuple[str, ...] = MODELS) -> dict[str, Path]:
    """Write every model's data set into ``folder``; ``{name: path}``."""
    return {name: write_file(name, folder, seed) for name in names}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    options = parser.parse_args(argv)
    for name, path in write_files(options.folder, options.seed, tuple(options.models)).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
