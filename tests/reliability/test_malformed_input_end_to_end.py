"""A few malformed inputs through ``train.py`` as a user runs it: exit 2, one line, no traceback, no run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_train_py

BAD_FILES = [
    ("binary_garbage", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a UTF-8 text file"),
    ("huge_count", b"successes,trials\n1,1e308\n", "line 2, column trials: '1e308' is not allowed"),
]


@pytest.mark.parametrize(("content", "message"), [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_malformed_csv_file_exits_2_with_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    csv = tmp_path / "counts.csv"
    csv.write_bytes(content)
    result = run_train_py(f"data.path={csv}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("lightning-svi: error:")]
    assert len(error_lines) == 1 and message in error_lines[0] and f"data.path={csv}" in error_lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "run" / "tensorboard").exists()


BAD_OVERRIDES = [
    ("optim.scheduler=5", "optim.scheduler=5: must be null or a mapping"),
    ("data.num_workers=-1", "data.num_workers=-1: must be an integer >= 0"),
]


@pytest.mark.parametrize(("override", "message"), BAD_OVERRIDES, ids=[case[0] for case in BAD_OVERRIDES])
def test_malformed_override_exits_2_with_one_line(tmp_path: Path, override: str, message: str) -> None:
    result = run_train_py(override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"lightning-svi: error: {message}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
