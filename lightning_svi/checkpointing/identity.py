"""What a checkpoint was written for — model class, guide class, parameter names and shapes, the data's
content, the optimizer — and the checks that refuse to resume a run from a checkpoint of another model,
guide, data set or optimizer."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from lightning_svi.checkpointing.atomic_io import CheckpointError

IDENTITY_KEY = "lightning_svi_identity"


def _class_path(module: nn.Module) -> str:
    """The class of a module; for a wrapped user program, the program's own dotted path."""
    program = getattr(module, "identity", None)
    return program if program is not None else f"{type(module).__module__}.{type(module).__qualname__}"


def checkpoint_identity(model: nn.Module, guide: nn.Module, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Plain strings and lists, so that ``torch.load(weights_only=True)`` reads it back."""
    return {
        "model": _class_path(model),
        "guide": _class_path(guide),
        "parameters": {name: list(tensor.shape) for name, tensor in state_dict.items()},
    }


def check_identity(saved: dict[str, Any] | None, current: dict[str, Any], ckpt_path: str | None) -> None:
    """Raise ``CheckpointError`` naming every difference between the checkpoint's identity and this run's."""
    where = f"ckpt_path={ckpt_path}"
    if saved is None:
        raise CheckpointError(
            f"{where}: refused; it does not say which model and guide wrote it (not a lightning-svi checkpoint)."
        )
    differences = [
        f"{key} is {saved[key]} in the checkpoint but {current[key]} in this run"
        for key in ("model", "guide")
        if saved.get(key) != current[key]
    ]
    saved_parameters, parameters = saved.get("parameters", {}), current["parameters"]
    missing = sorted(set(parameters) - set(saved_parameters))
    extra = sorted(set(saved_parameters) - set(parameters))
    if missing:
        differences.append(f"parameters {', '.join(missing)} are missing from the checkpoint")
    if extra:
        differences.append(f"the checkpoint has parameters {', '.join(extra)} that this run does not")
    differences += [
        f"parameter {name} has shape {saved_parameters[name]} in the checkpoint but {shape} in this run"
        for name, shape in parameters.items()
        if name in saved_parameters and list(saved_parameters[name]) != shape
    ]
    if differences:
        raise CheckpointError(
            f"{where}: refused; it was written for another model, guide or data set: {'; '.join(differences)}. "
            "Resume with the model, guide and data that wrote it, or start without ckpt_path."
        )


def data_fingerprint(data: Mapping[str, torch.Tensor]) -> str:
    """A hash of the data's content (names, dtypes, shapes and every byte): another data set with the
    same number of rows (``data.seed=1``) has another fingerprint."""
    hasher = hashlib.blake2b(digest_size=16)
    for name in sorted(data):
        tensor = data[name].detach().cpu().contiguous()
        hasher.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return hasher.hexdigest()


def _class_name(value: object) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


class TrainingIdentity(pl.Callback):
    """What a checkpoint was trained on besides its model and guide (``checkpoint_identity``): the data's
    content and the optimizer. Saved with every checkpoint; a resumed run on other data, or with another
    optimizer (whose state would not fit: ``KeyError: 'momentum'``), is refused before its first step."""

    def __init__(self, full_data: Mapping[str, torch.Tensor]) -> None:
        self.full_data = full_data
        self.current: dict[str, str] = {}
        self.saved: dict[str, str] | None = None
        self.ckpt_path: str | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the strategy has built the optimizer, before Lightning restores the optimizer's state.
        self.current = {"data": data_fingerprint(self.full_data), "optimizer": _class_name(trainer.optimizers[0])}
        self.ckpt_path = trainer.ckpt_path
        self._check()

    def state_dict(self) -> dict[str, str]:
        return dict(self.current)

    def load_state_dict(self, state_dict: dict[str, str]) -> None:
        self.saved = dict(state_dict)
        self._check()

    def _check(self) -> None:
        if self.saved is None or not self.current:
            return
        saved, current = self.saved, self.current
        differences = []
        if saved.get("data", current["data"]) != current["data"]:
            differences.append(
                f"it was trained on other data (data fingerprint {saved['data']}; this run's, {current['data']}, "
                "differs: another data.path, data.seed or data.synthetic)"
            )
        if saved.get("optimizer", current["optimizer"]) != current["optimizer"]:
            differences.append(
                f"the optimizer is {saved['optimizer']} in the checkpoint but {current['optimizer']} in this run"
            )
        if differences:
            raise CheckpointError(
                f"ckpt_path={self.ckpt_path}: refused; {'; '.join(differences)}. "
                "Resume with the data and optim that wrote it, or start without ckpt_path."
            )
