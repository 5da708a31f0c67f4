"""``train.py`` refusing bad input, watched from outside: its exit status, its stderr, what it imported,
the CPU time it took, and the folders it left."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import QUIET, REPO, imported_modules

ERROR_PREFIX = "lightning-svi: error: "


@dataclass(frozen=True)
class Refusal:
    status: int
    stderr: str
    stdout: str
    cpu_seconds: float  # user + system time of the process, which a loaded machine does not inflate much
    peak_rss_bytes: int
    imported: frozenset[str]

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith(ERROR_PREFIX)]

    @property
    def other_lines(self) -> list[str]:
        """What stderr says besides the error lines and ``-X importtime``'s report."""
        return [
            line
            for line in self.stderr.splitlines()
            if line.strip() and not line.startswith((ERROR_PREFIX, "import time:"))
        ]


def run_measured(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> Refusal:
    """Run ``python -X importtime ARGV`` from ``cwd`` and measure it (``os.wait4``: this child's own rusage);
    killed after ``timeout`` seconds."""
    stdout_path, stderr_path = cwd / ".refusal.stdout", cwd / ".refusal.stderr"
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-X", "importtime", *argv], cwd=cwd, env=environment, stdout=stdout, stderr=stderr
        )
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            _, wait_status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(wait_status)
    stderr_text, stdout_text = stderr_path.read_text(), stdout_path.read_text()
    stdout_path.unlink()
    stderr_path.unlink()
    return Refusal(
        status=process.returncode,
        stderr=stderr_text,
        stdout=stdout_text,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_bytes=usage.ru_maxrss * 1024,  # kilobytes on Linux
        imported=frozenset(imported_modules(stderr_text)),
    )


def run_train_py_measured(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Refusal:
    """``python train.py ARGS`` as a user types it (flags such as ``-m`` first), measured by ``run_measured``."""
    flags = [arg for arg in args if arg.startswith("-")]
    overrides = [arg for arg in args if not arg.startswith("-")]
    return run_measured([str(REPO / "train.py"), *flags, *QUIET, *overrides], cwd, env)
