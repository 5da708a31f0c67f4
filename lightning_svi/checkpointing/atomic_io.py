"""Checkpoint files that a crash cannot corrupt and that cannot run code when loaded.

Lightning writes through fsspec: a temporary file in the system temp folder, then a move. When that
folder is on another file system (a node-local ``/tmp``, a run folder on shared storage) the move is
a copy, and a SIGKILL during the copy leaves half a ``last.ckpt``. Here the temporary file sits next
to its target, is flushed to disk, and replaces it with one ``os.replace``: a reader sees the old
checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from lightning_svi.checkpointing.divergence_guard import non_finite_tensors
from lightning_svi.errors import UserInputError

# ``save_checkpoint``'s temporary file: ``.last.ckpt.<pid>.tmp`` next to ``last.ckpt``.
TEMPORARY_NAME = re.compile(r"^\..+\.(\d+)\.tmp$")


class CheckpointError(UserInputError):
    """A checkpoint that cannot be read, or that was written for another model, guide or data set."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Atomic, fsync'ed writes; loads with ``torch.load(weights_only=True)`` (tensors and plain containers only)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)

    def load_checkpoint(
        self, path: str | Path, map_location: Callable | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """The checkpoint at ``path``, refused (``CheckpointError``) when its archive fails its CRC check,
        when it holds anything but tensors and plain containers, or non-finite θ, φ or optimizer state."""
        _check_archive(path)
        checkpoint = _load(path, map_location)
        named = [(f"parameter {name!r}", tensor) for name, tensor in checkpoint.get("state_dict", {}).items()]
        named.append(("optimizer_states", checkpoint.get("optimizer_states", [])))
        for where, value in named:
            found = next(non_finite_tensors(value, where), None)
            if found is not None:
                raise CheckpointError(
                    f"ckpt_path={path}: refused; the checkpoint holds non-finite values ({found} has NaN or "
                    "infinite elements), which lightning-svi never writes: the file was changed after it was "
                    "written. Resume from another checkpoint, or start without ckpt_path."
                )
        return checkpoint


def _check_archive(path: str | Path) -> None:
    """torch.load reads a zip archive without checking its CRCs: a flipped byte in a tensor loads silently."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return  # not a zip archive: torch.load says so below
    if damaged is not None:
        raise CheckpointError(
            f"ckpt_path={path}: corrupted; the CRC of {damaged} inside the archive does not match its content "
            "(the file was damaged after it was written). Resume from another checkpoint, or start without ckpt_path."
        )


def _load(path: str | Path, map_location: Callable | None) -> dict[str, Any]:
    """``torch.load(weights_only=True)``, its failures as one-line ``CheckpointError``s."""
    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickler_reason(error)
        if reason.startswith("Unsupported global"):
            raise CheckpointError(
                f"ckpt_path={path}: refused; it holds objects other than tensors, numbers and plain containers, "
                f"and loading those could run code ({reason}). Resume only from checkpoints lightning-svi wrote."
            ) from None
        raise CheckpointError(
            f"ckpt_path={path}: not a readable checkpoint ({reason}). Pass a checkpoints/last.ckpt written by "
            "lightning-svi."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"ckpt_path={path}: not a readable checkpoint ({first_line}). "
            "Pass a checkpoints/last.ckpt written by lightning-svi."
        ) from None


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in ``folder`` (their process is gone);
    return them."""
    removed = []
    for path in folder.glob(".*.tmp") if folder.is_dir() else ():
        match = TEMPORARY_NAME.match(path.name)
        if match is not None and not _process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes nothing while it starts: its own leftover is from an earlier life
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """The one line of torch's long ``weights_only`` message that says what was wrong."""
    match = re.search(r"WeightsUnpickler error:\s*([^\n]+?)(?:\. |\n|$)", str(error))
    return match.group(1).strip() if match else str(error).strip().splitlines()[0]


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
