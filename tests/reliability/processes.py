"""``train.py`` as a background process that a test can watch, signal and always clean up."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from tests.conftest import QUIET, REPO


def checkpoint_step(path: Path) -> int | None:
    """The ``global_step`` of the checkpoint at ``path``, or None while there is none."""
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


@contextmanager
def train_py_process(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """``python train.py ARGS`` in its own process group; whatever is left of the group is killed on exit."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *QUIET, *args],
        cwd=cwd,
        env={**environment, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # children (DDP ranks) share the group
        process.communicate(timeout=30)


def wait_for_checkpoint(process: subprocess.Popen, path: Path, min_step: int, timeout: float = 120) -> int:
    """Poll until the checkpoint at ``path`` has reached ``min_step``; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    step = None
    while time.monotonic() < deadline:
        step = checkpoint_step(path)
        if step is not None and step >= min_step:
            return step
        if process.poll() is not None:
            raise AssertionError(f"train.py ended (status {process.returncode}) before {path.name} reached {min_step}")
        time.sleep(0.05)
    raise AssertionError(f"{path.name} at step {step}, not yet {min_step}, after {timeout} s")


def process_group_is_gone(group: int, timeout: float = 10) -> bool:
    """Whether every process of ``group`` has exited (and been reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
