"""build_optimizer: θ and φ groups, the fused kernel by default where torch has one, the user's choice kept."""

from __future__ import annotations

import pytest
import torch

from lightning_svi.optim import build_optimizer


def parameters() -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    return [torch.nn.Parameter(torch.ones(2))], [torch.nn.Parameter(torch.zeros(3))]


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_fused_by_default_with_named_groups_and_their_rates(name: str) -> None:
    theta, phi = parameters()
    optimizer = build_optimizer(theta, phi, name=name, lr=0.1, phi_lr=0.01)
    assert [group["name"] for group in optimizer.param_groups] == ["theta", "phi"]
    assert [group["lr"] for group in optimizer.param_groups] == [0.1, 0.01]
    assert optimizer.defaults["fused"] is True


def test_fused_adam_takes_the_same_steps_as_the_single_tensor_loop() -> None:
    runs = []
    for options in ({"foreach": False}, {}):
        theta, phi = parameters()
        optimizer = build_optimizer(theta, phi, lr=0.1, **options)
        for step in range(5):
            for parameter in theta + phi:
                parameter.grad = torch.full_like(parameter, float(step) - 2.0)
            optimizer.step()
        runs.append(torch.cat([theta[0].detach(), phi[0].detach()]))
    torch.testing.assert_close(runs[0], runs[1])


def test_an_explicit_foreach_choice_is_kept() -> None:
    theta, phi = parameters()
    optimizer = build_optimizer(theta, phi, foreach=True)
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults["fused"]
