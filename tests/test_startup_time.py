"""scripts/startup_time.py: a row per command, its times in order, and inductor's cache filled by the first launch.

No time is asserted: a shared machine's seconds say nothing about the code.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

CELL = re.compile(r"^(\d+\.\d) s \((\d+\.\d)–(\d+\.\d)\)$")


@pytest.mark.slow
def test_each_command_gets_its_first_line_before_its_first_step_and_the_second_compile_hits_the_cache() -> None:
    command = [sys.executable, str(REPO / "scripts" / "startup_time.py"), "--repeats", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines() if line.startswith("| python")]
    assert [row[0].strip() for row in rows] == ["python train.py", "python train.py compile.enabled=true"]
    for _, first_line, first_step, _ in rows:
        line_median, step_median = (float(CELL.match(cell.strip()).group(1)) for cell in (first_line, first_step))
        assert 0 < line_median < step_median
    assert rows[0][3].strip() == "–"
    assert re.fullmatch(r"\d+\.\d s \(miss\), \d+\.\d s \(hit\)", rows[1][3].strip())
