"""θ and φ: which parameters are the model's and which the guide's, decided by use.

A tutorial VAE object holds both networks, and a guide may read a parameter the model created, so
where a parameter was declared does not say which side it is on. The side is decided by which
program *uses* it: θ are the parameters the model's log density depends on at a fixed sample of the
latents, φ those the guide's log density depends on. One pass of each finds them (autograd
reports which parameters a value depends on). A parameter neither uses stays with the program
that declares it; one both use is θ, with a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from pyro import poutine
from torch import nn

from lightning_svi.core.params import NamedParameters, constrained, named_parameters
from lightning_svi.core.programs.inputs import Batch
from lightning_svi.core.programs.program import PyroProgram


def _used_by(value: torch.Tensor | float, candidates: list[nn.Parameter]) -> set[int]:
    if not isinstance(value, torch.Tensor) or not value.requires_grad or not candidates:
        return set()
    gradients = torch.autograd.grad(value, candidates, allow_unused=True)
    return {id(parameter) for parameter, gradient in zip(candidates, gradients, strict=True) if gradient is not None}


@dataclass
class ParameterSides:
    """θ (the model's parameters) and φ (the guide's), each by name with its constraint."""

    theta: NamedParameters
    phi: NamedParameters

    def theta_values(self) -> dict[str, torch.Tensor]:
        return constrained(self.theta)

    def phi_values(self) -> dict[str, torch.Tensor]:
        return constrained(self.phi)

    @property
    def theta_parameters(self) -> list[nn.Parameter]:
        return [parameter for parameter, _ in self.theta.values()]

    @property
    def phi_parameters(self) -> list[nn.Parameter]:
        return [parameter for parameter, _ in self.phi.values()]


def split_sides(model: nn.Module, guide: nn.Module, batch: Batch) -> ParameterSides:
    """θ and φ by use, from one guide pass and one model pass at the guide's sample (detached)."""
    model_named, guide_named = named_parameters(model), named_parameters(guide)
    model_ids = {id(parameter) for parameter, _ in model_named.values()}
    # The model's first: a parameter reachable from both (a shared object) is listed once.
    declared = [(name, entry, "model") for name, entry in model_named.items()]
    declared += [(name, entry, "guide") for name, entry in guide_named.items() if id(entry[0]) not in model_ids]
    candidates = [parameter for _, (parameter, _), _ in declared]
    # A network both programs can reach (a VAE object's) goes by the name pyro.module gave it.
    pyro_names = {
        id(parameter): name
        for module in (model, guide)
        for sub in module.modules()
        if isinstance(sub, PyroProgram)
        for name, (parameter, _) in sub.named_pyro_params().items()
    }
    devices = [device for device in {parameter.device for parameter in candidates} if device.type == "cuda"]
    # A pass of its own: the training run draws the same random numbers as without it.
    with poutine.block(), torch.random.fork_rng(devices=devices):
        guide_trace = poutine.trace(guide).get_trace(batch)
        sample = guide_trace.copy()
        for site in sample.nodes.values():
            if site["type"] == "sample":
                site["value"] = site["value"].detach()
        model_trace = poutine.trace(poutine.replay(model, trace=sample)).get_trace(batch)
        used_by_model = _used_by(model_trace.log_prob_sum(), candidates)
        used_by_guide = _used_by(guide_trace.log_prob_sum(), candidates)
    theta: NamedParameters = {}
    phi: NamedParameters = {}
    for name, (parameter, constraint), declared_by in declared:
        key = id(parameter)
        if key in used_by_model:
            side = theta
            if key in used_by_guide:
                warnings.warn(
                    f"parameter {name!r} is used by both the model and the guide; it is trained with θ (the model's).",
                    stacklevel=2,
                )
        elif key in used_by_guide:
            side = phi
        else:
            side = theta if declared_by == "model" else phi
        side[_unique(pyro_names.get(key, name), side)] = (parameter, constraint)
    return ParameterSides(theta=theta, phi=phi)


def _unique(name: str, taken: NamedParameters) -> str:
    """``name``, or ``name#2``... where a parameter of another program already has it."""
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}#{number}"
    return candidate
