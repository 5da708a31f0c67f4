"""scripts/startup_time.py: a row per command, its times in order, and inductor's cache filled by the first launch.

No time is asserted: a shared machine's seconds say nothing about the code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from scripts.startup_time import cpu_seconds, launch_environment
from tests.conftest import REPO

CELL = re.compile(r"^(\d+\.\d) s \((\d+\.\d)–(\d+\.\d)\)$")


@pytest.mark.slow
def test_each_command_gets_its_first_line_before_its_first_step_and_the_second_compile_hits_the_cache() -> None:
    command = [sys.executable, str(REPO / "scripts" / "startup_time.py"), "--repeats", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines() if line.startswith("| python")]
    assert [row[0].strip() for row in rows] == ["python train.py", "python train.py compile.enabled=true"]
    for _, first_line, first_step, cpu, _ in rows:
        line_median, step_median, cpu_median = (
            float(CELL.match(cell.strip()).group(1)) for cell in (first_line, first_step, cpu)
        )
        assert 0 < line_median < step_median
        assert cpu_median > 0.5  # the process has at least imported torch by its first step
    assert rows[0][4].strip() == "–"
    assert re.fullmatch(r"\d+\.\d s \(miss\), \d+\.\d s \(hit\)", rows[1][4].strip())


def test_commands_picks_the_rows_to_launch() -> None:
    """--commands default launches only the default run: no compiling, a table of one row."""
    command = [sys.executable, str(REPO / "scripts" / "startup_time.py"), "--commands", "default", "--repeats", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines() if line.startswith("| python")]
    assert [row[0].strip() for row in rows] == ["python train.py"]
    cache = "written and read"
    if "PYTHONDONTWRITEBYTECODE" in os.environ:
        cache = "not written (PYTHONDONTWRITEBYTECODE set)"
    assert result.stdout.splitlines()[0] == f"Python's bytecode cache: {cache}"
    assert all(CELL.match(cell.strip()) for cell in rows[0][1:4]) and rows[0][4].strip() == "–"


def test_cpu_seconds_counts_a_process_work_and_is_none_for_a_process_that_is_gone() -> None:
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\ninput()",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while (used := cpu_seconds(busy.pid)) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0.5 <= used < 5
    finally:
        busy.communicate(b"\n")
    assert cpu_seconds(busy.pid) is None  # reaped: no /proc entry


def test_write_bytecode_launches_without_pythondontwritebytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    assert "PYTHONDONTWRITEBYTECODE" not in launch_environment(write_bytecode=True)
    assert launch_environment(write_bytecode=False)["PYTHONDONTWRITEBYTECODE"] == "1"
