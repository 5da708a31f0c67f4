"""scripts/bench.py's plumbing, on tiny runs: a row per setting, a cell per mode, ratios to plain Pyro,
"–" where a mode does not apply, and each run's peak memory.

No timing is asserted: the rates of a few steps on a shared machine say nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

BENCH = REPO / "scripts" / "bench.py"
TINY = ["--steps", "5", "--rounds", "1", "--warmup", "2", "--compile-backend", "fx"]
RATE_CELL = re.compile(r"^\d+/s \((\d+\.\d\d)x\)$")
RSS_CELL = re.compile(r"^(\d+) MiB$")
NOT_APPLICABLE = "–"
PLAIN_PYRO = "plain Pyro SVI.step"
COMPILED = "compiled (log every 10)"
FORUM = "beta-Bernoulli, 5,000 obs, 1 particle"
GMM = "GMM, K = 3, 10,000 points, enumerated, 1 particle"
COIN = "Pyro tutorial: SVI Part I coin (10 flips)"
MINIBATCHES = "beta-Bernoulli, 1,000,000 obs, minibatches of 10,000"
DDP = "beta-Bernoulli, 5,000 obs, DDP on 2 CPU processes"
RSS_TABLE = "peak RSS (largest round)"
HIDE_NUMPYRO = (  # runs the script as `python SCRIPT` would, its folder first on the path
    "import os, runpy, sys; sys.modules['numpyro'] = None; sys.argv = sys.argv[1:]; "
    "sys.path.insert(0, os.path.dirname(sys.argv[0])); runpy.run_path(sys.argv[0], run_name='__main__')"
)


def run_bench(*args: str, hide_numpyro: bool = False) -> str:
    """The bench's standard output; this checkout's lightning_svi comes first on the path."""
    command = [sys.executable, str(BENCH), *args]
    if hide_numpyro:  # importlib's find_spec answers None for a module that sys.modules maps to None
        command[1:1] = ["-c", HIDE_NUMPYRO]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def rate_table(stdout: str, first: str = "setting") -> dict[str, dict[str, str]]:
    """The markdown table whose first column is headed ``first``: row title -> column title -> cell."""
    lines = stdout[stdout.index(f"| {first} |") :].split("\n\n")[0].splitlines()
    columns = [cell.strip() for cell in lines[0].strip("|").split("|")][1:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    return {row[0]: dict(zip(columns, row[1:], strict=True)) for row in rows}


def peaks_mib(row: dict[str, str]) -> dict[str, int]:
    matches = {column: RSS_CELL.match(cell) for column, cell in row.items()}
    assert all(matches.values()), row
    return {column: int(match.group(1)) for column, match in matches.items()}


def ratios(row: dict[str, str]) -> dict[str, float]:
    matches = {column: RATE_CELL.match(cell) for column, cell in row.items()}
    assert all(matches.values()), row
    return {column: float(match.group(1)) for column, match in matches.items()}


@pytest.mark.parametrize(
    ("setting", "title"), [("forum-5k-1p", FORUM), pytest.param("gmm-10k", GMM, marks=pytest.mark.slow)]
)
def test_a_rate_per_mode_and_the_numpyro_column_left_out_when_numpyro_is_missing(setting: str, title: str) -> None:
    stdout = run_bench("--settings", setting, "--modes", "log-off", "compiled", "numpyro", *TINY, hide_numpyro=True)
    assert re.search(r"NumPyro column left out: numpyro(, jax)?(, funsor)? not installed", stdout)
    assert "threads: torch 1" in stdout and "1 rounds x 5 steps" in stdout
    table = rate_table(stdout)
    assert list(table) == [title]
    row_ratios = ratios(table[title])
    assert list(row_ratios) == [PLAIN_PYRO, "lightning-svi (logging off)", "compiled (log every 10)"]
    assert row_ratios[PLAIN_PYRO] == 1.0
    assert "| seconds outside the timed loop |" in stdout
    assert list(peaks_mib(rate_table(stdout, RSS_TABLE)[title])) == list(row_ratios)


def test_a_tutorial_row_and_a_minibatch_row_each_with_the_peak_memory_of_every_run() -> None:
    stdout = run_bench("--settings", "coin", "forum-1m-batch10k", "--modes", "compiled", *TINY, hide_numpyro=True)
    table = rate_table(stdout)
    assert list(table) == [COIN, MINIBATCHES]
    for row in table.values():
        assert list(ratios(row)) == [PLAIN_PYRO, COMPILED]
    memory = rate_table(stdout, RSS_TABLE)
    assert list(memory) == [COIN, MINIBATCHES]
    for row in memory.values():  # each run in a process of its own: at least torch and Pyro's imports
        assert all(peak > 100 for peak in peaks_mib(row).values())
    assert f"- {MINIBATCHES}: plain Pyro: minibatches sliced from a fresh permutation per pass" in stdout
    # Issue 18's targets that these modes can answer: the tutorial's compiled rate against its plain loop.
    targets = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| compiled ≥ 5x")]
    assert [[cell.strip() for cell in row[:3]] for row in targets] == [
        ["compiled ≥ 5x plain Pyro, or a fall-back with its reason", COIN, f"{ratios(table[COIN])[COMPILED]:.2f}x"]
    ]
    low, high = (float(value) for value in re.fullmatch(r"(\S+)–(\S+)x", targets[0][3].strip()).groups())
    assert low <= ratios(table[COIN])[COMPILED] <= high
    assert targets[0][4].strip().startswith(("met", "not met"))


@pytest.mark.slow
def test_the_ddp_row_runs_train_py_on_two_processes() -> None:
    stdout = run_bench("--settings", "forum-5k-ddp", "--modes", "default", *TINY)
    table = rate_table(stdout)
    assert list(table) == [DDP]
    assert list(ratios(table[DDP])) == [PLAIN_PYRO, "lightning-svi (log every 10)"]
    assert list(peaks_mib(rate_table(stdout, RSS_TABLE)[DDP])) == [PLAIN_PYRO, "lightning-svi (log every 10)"]
    ddp_note = "(python train.py trainer=ddp_cpu: gloo, and shared memory for the steps' all-reduce); plain Pyro on one"
    assert f"- {DDP}: lightning-svi on 2 processes {ddp_note}" in stdout


@pytest.mark.slow
def test_numpyro_column_for_the_beta_bernoulli_and_the_enumerated_mixture() -> None:
    pytest.importorskip("numpyro")
    pytest.importorskip("funsor")
    stdout = run_bench("--settings", "forum-5k-1p", "gmm-10k", "coin", "--modes", "numpyro", *TINY)
    assert ", numpyro " in stdout.splitlines()[0]  # the versions line
    table = rate_table(stdout)
    assert list(table) == [FORUM, GMM, COIN]
    for title in (FORUM, GMM):
        assert list(ratios(table[title])) == [PLAIN_PYRO, "NumPyro jit(svi.update)"]
        assert list(peaks_mib(rate_table(stdout, RSS_TABLE)[title])) == [PLAIN_PYRO, "NumPyro jit(svi.update)"]
    # No NumPyro program for a tutorial: its cells say so, and only plain Pyro ran.
    assert table[COIN]["NumPyro jit(svi.update)"] == NOT_APPLICABLE
    assert rate_table(stdout, RSS_TABLE)[COIN]["NumPyro jit(svi.update)"] == NOT_APPLICABLE
    assert RATE_CELL.match(table[COIN][PLAIN_PYRO])
