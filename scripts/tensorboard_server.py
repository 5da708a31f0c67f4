"""Run the ``tensorboard`` server over a log folder for as long as a ``with`` block lasts: for the
tests that read the board through TensorBoard's own HTTP API, and for the README screenshot."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


@contextmanager
def tensorboard_server(logdir: Path, timeout: float = 90.0, host: str = "127.0.0.1") -> Iterator[str]:
    """Start ``tensorboard --logdir LOGDIR`` on a free port of ``host``, wait until it has loaded
    scalars (at most ``timeout`` seconds), yield its base URL, and stop it (and its data server).

    The server runs as ``python -m tensorboard.main`` under this interpreter: the package is a
    dependency, while its ``tensorboard`` script is on PATH only in an activated environment."""
    port = free_port(host)
    url = f"http://{host}:{port}"
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", host, "--port", str(port)]
    # A file, not a pipe: nobody reads the server's messages while it runs, and a full pipe would block it.
    with tempfile.TemporaryFile(mode="w+") as messages:
        server = subprocess.Popen(command, stdout=messages, stderr=messages, start_new_session=True)
        try:
            _wait_for_scalars(server, messages, url, timeout)
            yield url
        finally:
            _stop(server)


def _wait_for_scalars(server: subprocess.Popen, messages: IO[str], url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            messages.seek(0)
            raise RuntimeError(f"tensorboard exited with status {server.returncode}: {messages.read()[-2000:]}")
        try:
            if any(get_json(f"{url}/data/plugin/scalars/tags", timeout=2.0).values()):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"tensorboard at {url} served no scalars within {timeout:.0f} s")


def _stop(server: subprocess.Popen) -> None:
    """Stop the server's own process group: the server and the data server it started."""
    with suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
