"""Checkpoint writes interrupted half-way (an exception, a SIGKILL) leave the previous checkpoint readable."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import lightning_svi.checkpointing.atomic_io
from lightning_svi.checkpointing.atomic_io import AtomicCheckpointIO, CheckpointError


def test_crash_in_the_middle_of_a_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1, "weights": torch.ones(1000)}, path)
    before = path.read_bytes()

    def half_a_save(obj: object, file) -> None:
        file.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt

    monkeypatch.setattr(lightning_svi.checkpointing.atomic_io.torch, "save", half_a_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "weights": torch.zeros(1000)}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left behind
    assert io.load_checkpoint(path)["global_step"] == 1


WRITER = textwrap.dedent(
    """
    import sys, torch
    from lightning_svi.checkpointing.atomic_io import AtomicCheckpointIO
    io, step = AtomicCheckpointIO(), 0
    while True:
        step += 1
        io.save_checkpoint({"global_step": step, "weights": torch.full((4_000_000,), float(step))}, sys.argv[1])
        print(step, flush=True)
    """
)


def _kill_a_writer(path: Path, after_seconds: float) -> None:
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "1", "the writer did not start"
        time.sleep(after_seconds)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_sigkill_while_writing_checkpoints_never_leaves_a_corrupt_one(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    killed_mid_write = False
    for attempt in range(10):  # 16 MB writes with fsync: most kills land inside one; stop at the first that did
        _kill_a_writer(path, after_seconds=1.0 + 0.13 * attempt)
        checkpoint = AtomicCheckpointIO().load_checkpoint(path)
        assert torch.equal(checkpoint["weights"], torch.full((4_000_000,), float(checkpoint["global_step"])))
        leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        killed_mid_write = bool(leftovers)
        for leftover in leftovers:
            leftover.unlink()
        if killed_mid_write:
            break
    assert killed_mid_write, "no kill landed in the middle of a write"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "not a readable checkpoint"), (b"PK\x03\x04 truncated", "not a readable checkpoint")],
    ids=["empty", "truncated"],
)
def test_unreadable_checkpoint_is_a_user_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "last.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"ckpt_path={path}: {message}"):
        AtomicCheckpointIO().load_checkpoint(path)


class NotATensor:
    """Unpickling this would need to import and build an arbitrary class."""


def test_checkpoint_with_arbitrary_objects_is_refused_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"global_step": 1, "payload": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="refused; it holds objects other than tensors"):
        AtomicCheckpointIO().load_checkpoint(path)
