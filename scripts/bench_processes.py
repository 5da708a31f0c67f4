"""Each bench measurement in a process of its own, so that its peak resident memory is its own.

``in_child`` forks the bench after its imports (torch, Pyro, Lightning, lightning-svi): the child starts
where a fresh run stands after importing them, without paying for the imports again, and with them
frozen out of the garbage collector's walks as ``python train.py`` has them (``cli.imports_uncollected``;
the plain Pyro and NumPyro loops then run on the same frozen heap). ``train_py`` runs
``python train.py`` for what must be a script of its own (DDP relaunches the running script). Either way
the peak is ``os.wait4``'s ``ru_maxrss``: the largest of the process and the children it waited for.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def in_child(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``function(*args)`` in a forked child: its result (picklable) and the child's peak RSS in MiB."""
    sys.stdout.flush()
    sys.stderr.flush()  # or the child would write the parent's buffered lines again
    gc.freeze()  # what the bench has built so far, its imports first: never collected in the child
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's exit handlers
        os.close(read_end)
        status = 0
        try:
            payload = (True, function(*args))
        except BaseException:
            payload, status = (False, traceback.format_exc()), 1
        with os.fdopen(write_end, "wb") as pipe:
            pickle.dump(payload, pipe)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read()  # before waiting: a child blocked on a full pipe would never exit
    _, wait_status, usage = os.wait4(pid, 0)
    if not report:
        raise RuntimeError(f"bench child died without a report (exit code {os.waitstatus_to_exitcode(wait_status)})")
    succeeded, value = pickle.loads(report)
    if not succeeded:
        raise RuntimeError(f"in a bench child process:\n{value}")
    return value, usage.ru_maxrss / 1024  # KiB on Linux


def train_py(overrides: list[str], run_dir: Path, threads: int) -> tuple[dict, float]:
    """``python train.py OVERRIDES hydra.run.dir=RUN_DIR``: the run's ``summary.json`` and the peak RSS in MiB
    of its largest process. ``threads`` torch threads per process (``OMP_NUM_THREADS``)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    log = run_dir.with_name(run_dir.name + ".log")
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *overrides, f"hydra.run.dir={run_dir}"],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        _, wait_status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(wait_status)
    if process.returncode != 0:
        raise RuntimeError(
            f"train.py {' '.join(overrides)} exited with {process.returncode}:\n{log.read_text()[-3000:]}"
        )
    return json.loads((run_dir / "summary.json").read_text()), usage.ru_maxrss / 1024
