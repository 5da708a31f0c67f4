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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from lightning_svi.errors import UserInputError


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
