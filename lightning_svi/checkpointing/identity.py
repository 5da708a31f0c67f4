"""What a checkpoint was written for — model class, guide class, parameter names and shapes — and the
check that refuses to resume a run from a checkpoint of another model, guide or data set."""

from __future__ import annotations

from typing import Any

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
