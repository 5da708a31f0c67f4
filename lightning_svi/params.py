"""θ and φ as the user reasons about them: constrained values, named as declared."""

from __future__ import annotations

import torch
from pyro.nn import PyroModule
from torch import nn
from torch.distributions import transform_to


def constrained_values(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached constrained values of every parameter of ``module``.

    A ``PyroParam`` appears under its declared name (``alpha``, not ``alpha_unconstrained``) with its
    constraint applied; a plain ``nn.Parameter`` (a network weight) appears as it is.
    """
    values: dict[str, torch.Tensor] = {}
    covered: set[str] = set()
    for prefix, sub in module.named_modules():
        if not isinstance(sub, PyroModule):
            continue
        for name, (constraint, _) in sub._pyro_params.items():
            full_name = f"{prefix}.{name}" if prefix else name
            # What ``getattr(sub, name)`` returns, without its trip through Pyro's effect handlers
            # (40 µs a parameter, on every logging step).
            unconstrained = sub._parameters[f"{name}_unconstrained"].detach()
            values[full_name] = transform_to(constraint)(unconstrained)
            covered.add(f"{full_name}_unconstrained")
    for name, parameter in module.named_parameters():
        if name not in covered:
            values[name] = parameter.detach()
    return values


def side_parameters(model: nn.Module, guide: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(θ, φ): the model's parameters, and the guide's that the model does not own."""
    theta = list(model.parameters())
    owned = {id(parameter) for parameter in theta}
    phi = [parameter for parameter in guide.parameters() if id(parameter) not in owned]
    return theta, phi
