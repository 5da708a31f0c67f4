"""Seconds from ``python train.py`` to its first line and to its first training step, as a user sees them.

    python scripts/startup_time.py                 # the default run and compiled mode, 3 launches each
    python scripts/startup_time.py --repeats 5 -- model=gmm
    python scripts/startup_time.py --commands default   # the default run alone (a minute, no compiling)

Each launch runs ``train.py`` in a fresh process from a temporary folder, with its output through a
pipe (plain progress lines), ``progress_bar_refresh_rate=1`` and 10 steps; the time of the first
line on stdout and of the first ``step n/N`` line (printed after the first Lightning batch, a few
steps at most) are taken from the parent. Compiled launches also report the summary's
``timing.compile_seconds`` and whether inductor's cache held the compiled step; the first compiled
launch uses an empty cache (``compile.cache_dir``), the others the one it filled.

Python's bytecode cache: where the environment sets ``PYTHONDONTWRITEBYTECODE`` (as some sandboxes
and containers do), every launch compiles the source of modules without a cached ``.pyc``,
lightning-svi's among them; ``--write-bytecode`` launches without it, as a user's machine
normally runs, so that the first launch writes the cache and the later ones read it. The first
line of the output says which.

On a shared machine the wall-clock seconds stretch with the load, so each launch also reports the CPU
seconds the ``train.py`` process had used when its first step line arrived (``/proc/PID/stat``, Linux; its
own threads, not inductor's compile workers), which the load stretches far less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TRAIN_PY = Path(__file__).resolve().parents[1] / "train.py"
STEPS = ["trainer.max_steps=10", "progress_bar_refresh_rate=1", "callbacks.diagnostics=null"]
# --commands: each one's row title and the overrides it adds to those of every launch
COMMANDS = {
    "default": ("python train.py", []),
    "compiled": ("python train.py compile.enabled=true", ["compile.enabled=true"]),
}


@dataclass(frozen=True)
class Launch:
    first_line: float
    first_step: float
    cpu_at_first_step: float | None
    compile_seconds: float | None
    cache_hit: bool | None


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds process ``pid`` has used so far; None where there is no ``/proc``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15 of proc(5)


def launch_environment(write_bytecode: bool) -> dict[str, str]:
    """This process's environment, without ``PYTHONDONTWRITEBYTECODE`` where ``write_bytecode``."""
    environment = dict(os.environ)
    if write_bytecode:
        environment.pop("PYTHONDONTWRITEBYTECODE", None)
    return environment


def launch(overrides: list[str], folder: Path, environment: dict[str, str]) -> Launch:
    """One ``python train.py`` in ``folder``, timed from just before the process starts."""
    command = [sys.executable, str(TRAIN_PY), *STEPS, f"hydra.run.dir={folder / 'run'}", *overrides]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=folder, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    first_line = first_step = cpu_at_first_step = None
    output = []
    for line in process.stdout:
        now = time.perf_counter() - started
        output.append(line)
        first_line = now if first_line is None else first_line
        if first_step is None and line.startswith("step "):
            first_step, cpu_at_first_step = now, cpu_seconds(process.pid)
    if process.wait() != 0 or first_step is None:
        raise SystemExit(f"train.py {' '.join(overrides)} failed:\n{''.join(output[-20:])}")
    timing = json.loads((folder / "run" / "summary.json").read_text())["timing"]
    return Launch(first_line, first_step, cpu_at_first_step, timing["compile_seconds"], timing.get("compile_cache_hit"))


def measure(overrides: list[str], repeats: int, environment: dict[str, str]) -> list[Launch]:
    with tempfile.TemporaryDirectory() as cache:
        launches = []
        for index in range(repeats):
            with tempfile.TemporaryDirectory() as folder:
                launches.append(launch([*overrides, f"compile.cache_dir={cache}"], Path(folder), environment))
            print(f"  {' '.join(overrides) or 'default'} #{index + 1}: {launches[-1]}", file=sys.stderr)
        return launches


def row(title: str, launches: list[Launch]) -> str:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} s ({min(values):.1f}–{max(values):.1f})"

    compiled = [launch.compile_seconds for launch in launches if launch.compile_seconds is not None]
    compile_cell = "–"
    if compiled:
        hits = ["hit" if launch.cache_hit else "miss" for launch in launches]
        compile_cell = ", ".join(f"{seconds:.1f} s ({hit})" for seconds, hit in zip(compiled, hits, strict=True))
    first_lines = [launch.first_line for launch in launches]
    first_steps = [launch.first_step for launch in launches]
    cpu = [launch.cpu_at_first_step for launch in launches if launch.cpu_at_first_step is not None]
    cpu_cell = cell(cpu) if cpu else "–"
    return f"| {title} | {cell(first_lines)} | {cell(first_steps)} | {cpu_cell} | {compile_cell} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--commands", nargs="+", choices=list(COMMANDS), default=list(COMMANDS))
    parser.add_argument(
        "--write-bytecode", action="store_true", help="launch without PYTHONDONTWRITEBYTECODE (as a user's machine)"
    )
    parser.add_argument("overrides", nargs="*", help="train.py overrides for every launch (after --)")
    args = parser.parse_args(argv)
    environment = launch_environment(args.write_bytecode)
    writes = "PYTHONDONTWRITEBYTECODE" not in environment
    print(f"Python's bytecode cache: {'written and read' if writes else 'not written (PYTHONDONTWRITEBYTECODE set)'}")
    rows = [
        row(COMMANDS[name][0], measure([*args.overrides, *COMMANDS[name][1]], args.repeats, environment))
        for name in args.commands
    ]
    print(
        "| command | first line (median, range) | first training step (median, range) "
        "| CPU at the first step (median, range) | compile (each launch) |"
    )
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
