"""A gigabyte of counts through ``train.py``: checked before torch, in seconds, in about its own size.

The pre-torch table check once held every cell in Python lists: a 200 MB file with a bad last row took
338 s and 10.9 GB to be refused. Slow tests: each writes a 1 GB file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.reliability.refusals import run_measured, run_train_py_measured

GIGABYTE = 10**9
# Peak resident memory of the whole process (Python, NumPy, Hydra: about 60 MB) over the file's size.
MAX_PEAK_OVER_SIZE = 1.5
MAX_CPU_SECONDS = 60  # about 20 s on an idle core


def write_counts(path: Path, size: int, last_line: str) -> int:
    """A successes,trials file of about ``size`` bytes ending in ``last_line``; returns its number of lines."""
    rng = np.random.default_rng(0)
    trials = rng.integers(1, 100_000, size=500_000)
    successes = rng.integers(0, trials + 1)
    block = "".join(f"{s},{t}\n" for s, t in zip(successes.tolist(), trials.tolist(), strict=True)).encode()
    repeats = size // len(block)
    with path.open("wb") as file:
        file.write(b"successes,trials\n")
        for _ in range(repeats):
            file.write(block)
        file.write(last_line.encode() + b"\n")
    return 1 + repeats * len(trials) + 1


@pytest.mark.slow
def test_a_gigabyte_with_a_bad_last_row_is_refused_before_torch_in_about_its_size(tmp_path: Path) -> None:
    path = tmp_path / "counts.csv"
    num_lines = write_counts(path, GIGABYTE, "5,4")
    size = path.stat().st_size
    result = run_train_py_measured(f"data.path={path}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.status == 2, result.stderr[-3000:]
    assert result.error_lines == [
        f"lightning-svi: error: data.path={path}, line {num_lines}: successes=5, trials=4 violates successes <= trials."
    ]
    assert "torch" not in result.imported
    print(f"{size / 1e9:.2f} GB refused: {result.cpu_seconds:.1f} s CPU, peak {result.peak_rss_bytes / 1e9:.2f} GB")
    assert result.cpu_seconds < MAX_CPU_SECONDS, result.cpu_seconds
    assert result.peak_rss_bytes < MAX_PEAK_OVER_SIZE * size, (result.peak_rss_bytes / 1e6, size / 1e6)


CHECK_TABLE = """
import sys
from lightning_svi.config.model_specs import BETA_BINOMIAL
from lightning_svi.config.table import read_table
table = read_table(sys.argv[1], BETA_BINOMIAL.table)
print(len(table["trials"]), table["trials"].dtype, table["trials"][:3].tolist())
"""


@pytest.mark.slow
def test_a_gigabyte_of_valid_counts_is_checked_in_about_its_size(tmp_path: Path) -> None:
    path = tmp_path / "counts.csv"
    num_lines = write_counts(path, GIGABYTE, "0,1")
    size = path.stat().st_size
    result = run_measured(["-c", CHECK_TABLE, str(path)], cwd=tmp_path)
    assert result.status == 0, result.stderr[-3000:]
    num_rows, dtype, first = result.stdout.split(maxsplit=2)
    assert int(num_rows) == num_lines - 1 and dtype == "float32" and first.startswith("[")
    print(f"{size / 1e9:.2f} GB checked: {result.cpu_seconds:.1f} s CPU, peak {result.peak_rss_bytes / 1e9:.2f} GB")
    assert result.cpu_seconds < MAX_CPU_SECONDS, result.cpu_seconds
    assert result.peak_rss_bytes < MAX_PEAK_OVER_SIZE * size, (result.peak_rss_bytes / 1e6, size / 1e6)
