"""θ and φ as the user reasons about them: constrained values, named as their author knows them."""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule
from torch import nn
from torch.distributions import transform_to

from lightning_svi.core.programs.program import PyroProgram

NamedParameters = dict[str, tuple[nn.Parameter, constraints.Constraint]]

# Wrapper attributes that are not part of the names a user knows their parameters by.
_WRAPPER_PREFIXES = ("program.", "owner.")


def _display_name(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def named_parameters(module: nn.Module) -> NamedParameters:
    """Every parameter of ``module`` once, under the name its author knows it by, with its constraint:
    a ``pyro.param`` under its Pyro name, a ``PyroParam`` under its attribute path (``alpha``, not
    ``alpha_unconstrained``), a network weight under its module path."""
    named: NamedParameters = {}
    seen: set[int] = set()

    def add(name: str, parameter: nn.Parameter, constraint: constraints.Constraint) -> None:
        if id(parameter) not in seen:
            seen.add(id(parameter))
            named[name] = (parameter, constraint)

    for prefix, sub in module.named_modules():
        if isinstance(sub, PyroProgram):
            for name, (parameter, constraint) in sub.named_pyro_params().items():
                add(name, parameter, constraint)
        elif isinstance(sub, PyroModule):
            for name, (constraint, _) in sub._pyro_params.items():
                full_name = _display_name(f"{prefix}.{name}" if prefix else name)
                add(full_name, sub._parameters[f"{name}_unconstrained"], constraint)
    for name, parameter in module.named_parameters():
        add(_display_name(name), parameter, constraints.real)
    return named


def constrained(named: NamedParameters) -> dict[str, torch.Tensor]:
    """Detached constrained values of ``named``: what the user reasons about."""
    values = {}
    for name, (parameter, constraint) in named.items():
        # ``getattr(module, name)`` without its trip through Pyro's effect handlers (40 µs a
        # parameter, on every logging step).
        value = parameter.detach()
        values[name] = value if constraint is constraints.real else transform_to(constraint)(value)
    return values


def constrained_values(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached constrained values of every parameter of ``module``, by ``named_parameters``' names."""
    return constrained(named_parameters(module))
