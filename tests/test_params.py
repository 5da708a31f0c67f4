"""θ and φ as logged: the constrained values the model and guide themselves read, named as declared."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from torch import nn

from lightning_svi.core.params import constrained_values

CONSTRAINTS = {
    "positive": constraints.positive,
    "greater_than_2": constraints.greater_than(2.0),
    "unit_interval": constraints.unit_interval,
    "interval": constraints.interval(-1.0, 3.0),
    "simplex": constraints.simplex,
    "lower_cholesky": constraints.lower_cholesky,
    "real": constraints.real,
}


class Constrained(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        for name, constraint in CONSTRAINTS.items():
            shape = (3, 3) if name == "lower_cholesky" else (4,)
            initial = torch.distributions.transform_to(constraint)(torch.randn(shape, generator=generator))
            setattr(self, name, PyroParam(initial, constraint=constraint))
        self.net = nn.Linear(2, 1)


def test_constrained_values_equal_what_the_module_reads_bit_for_bit() -> None:
    pyro.settings.set(module_local_params=True)
    module = Constrained()
    values = constrained_values(module)
    assert set(values) == {*CONSTRAINTS, "net.weight", "net.bias"}
    for name in CONSTRAINTS:
        assert torch.equal(values[name], getattr(module, name).detach()), name
        assert CONSTRAINTS[name].check(values[name]).all(), name
    assert torch.equal(values["net.weight"], module.net.weight.detach())
    assert not any(value.requires_grad for value in values.values())


@pytest.mark.parametrize("name", ["positive", "greater_than_2"])
def test_values_follow_the_parameters_after_an_update(name: str) -> None:
    module = Constrained()
    with torch.no_grad():
        module._parameters[f"{name}_unconstrained"].add_(1.0)
    assert torch.equal(constrained_values(module)[name], getattr(module, name).detach())
