"""build_optimizer, build_scheduler, build_after_step: any torch optimizer (and Pyro's wrappers) by
``_target_`` over θ and φ groups, the fused kernel by default where torch has one, the user's choice
kept; schedules by ``_target_``; the hook called after every step."""

from __future__ import annotations

import pytest
import torch
from pyro.optim.adagrad_rmsprop import AdagradRMSProp
from pyro.optim.clipped_adam import ClippedAdam

from lightning_svi.core.optim import build_after_step, build_optimizer, build_scheduler
from lightning_svi.errors import ConfigError
from tests import after_step_hooks
from tests.conftest import compose_config


def parameters() -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    return [torch.nn.Parameter(torch.ones(2))], [torch.nn.Parameter(torch.zeros(3))]


def optim(target: str = "torch.optim.Adam", **options: object) -> dict:
    return {"_target_": target, "_partial_": True, "lr": 0.1, **options}


@pytest.mark.parametrize("target", ["torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD"])
def test_fused_by_default_with_named_groups_and_their_rates(target: str) -> None:
    theta, phi = parameters()
    optimizer = build_optimizer(theta, phi, optim(target, phi_lr=0.01, theta_lr=None, scheduler=None))
    assert [group["name"] for group in optimizer.param_groups] == ["theta", "phi"]
    assert [group["lr"] for group in optimizer.param_groups] == [0.1, 0.01]
    assert optimizer.defaults["fused"] is True


def test_fused_adam_takes_the_same_steps_as_the_single_tensor_loop() -> None:
    runs = []
    for options in ({"foreach": False}, {}):
        theta, phi = parameters()
        optimizer = build_optimizer(theta, phi, optim(**options))
        for step in range(5):
            for parameter in theta + phi:
                parameter.grad = torch.full_like(parameter, float(step) - 2.0)
            optimizer.step()
        runs.append(torch.cat([theta[0].detach(), phi[0].detach()]))
    torch.testing.assert_close(runs[0], runs[1])


def test_an_explicit_foreach_choice_is_kept() -> None:
    theta, phi = parameters()
    optimizer = build_optimizer(theta, phi, optim(foreach=True))
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults["fused"]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("torch.optim.Adagrad", torch.optim.Adagrad),
        ("pyro.optim.ClippedAdam", ClippedAdam),  # Pyro's PyroOptim wrapper, unwrapped to the torch class
        ("pyro.optim.AdagradRMSProp", AdagradRMSProp),
        ("pyro.optim.clipped_adam.ClippedAdam", ClippedAdam),
        ("pyro.optim.RMSprop", torch.optim.RMSprop),
    ],
)
def test_any_torch_optimizer_and_pyros_own_get_theta_and_phi_groups(target: str, expected: type) -> None:
    theta, phi = parameters()
    options = {"lr": 0.2} if "AdagradRMSProp" not in target else {"eta": 0.2}
    config = {"_target_": target, "_partial_": True, **options, "phi_lr": 0.05}
    optimizer = build_optimizer(theta, phi, config)
    assert type(optimizer) is expected
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert set(groups) == {"theta", "phi"}
    assert groups["theta"]["params"] == theta and groups["phi"]["params"] == phi
    assert groups["phi"]["lr"] == 0.05
    if "lr" in options:
        assert groups["theta"]["lr"] == 0.2
    for parameter in theta + phi:
        parameter.grad = torch.ones_like(parameter)
    before = theta[0].detach().clone()
    optimizer.step()
    assert not torch.equal(before, theta[0].detach())


def test_empty_groups_are_left_out() -> None:
    theta, _ = parameters()
    optimizer = build_optimizer(theta, [], optim())
    assert [group["name"] for group in optimizer.param_groups] == ["theta"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (optim("torch.optim.Adamm"), "optim._target_=torch.optim.Adamm: cannot be imported (torch.optim has no"),
        (optim(foo=1), "optim.foo=1: torch.optim.Adam takes no argument 'foo'; it takes lr, betas, eps"),
        (optim(lr=-1.0), "optim.lr=-1.0: refused by torch.optim.Adam (ValueError: Invalid learning rate: -1.0)"),
        (optim(betas=[1.5, 0.9]), "optim.betas=[1.5, 0.9]: refused by torch.optim.Adam (ValueError: Invalid beta"),
        (optim("torch.optim.SGD", momentum=-0.5), "optim.momentum=-0.5: refused by torch.optim.SGD"),
        (optim("torch.nn.Linear"), "optim._target_=torch.nn.Linear: not a torch.optim.Optimizer class"),
    ],
)
def test_a_bad_optimizer_config_is_one_line_naming_the_key(config: dict, message: str) -> None:
    theta, phi = parameters()
    with pytest.raises(ConfigError) as raised:
        build_optimizer(theta, phi, config)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def lr_after(steps: int, scheduler_cfg: dict | None, max_steps: int = 10) -> float:
    theta, phi = parameters()
    optimizer = build_optimizer(theta, phi, optim(lr=1.0))
    scheduler = build_scheduler(optimizer, max_steps, scheduler_cfg)
    for _ in range(steps):
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return optimizer.param_groups[0]["lr"]


def test_the_shipped_exponential_schedule_decays_by_gamma_over_the_whole_run() -> None:
    scheduler_cfg = compose_config("optim.scheduler.gamma=0.1").optim.scheduler
    assert lr_after(10, scheduler_cfg, max_steps=10) == pytest.approx(0.1)
    assert lr_after(5, scheduler_cfg, max_steps=10) == pytest.approx(0.1**0.5)


def test_the_shipped_cosine_schedule_reaches_eta_min_at_max_steps() -> None:
    scheduler_cfg = compose_config("optim/scheduler=cosine", "trainer.max_steps=10").optim.scheduler
    assert lr_after(10, scheduler_cfg) == pytest.approx(0.0, abs=1e-12)


def test_any_torch_scheduler_by_target_and_none_for_a_constant_rate() -> None:
    step_lr = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 2, "gamma": 0.5}
    assert lr_after(4, step_lr) == pytest.approx(0.25)
    assert lr_after(4, None) == 1.0


@pytest.mark.parametrize(
    ("scheduler_cfg", "message"),
    [
        (
            {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True},
            "optim.scheduler: torch.optim.lr_scheduler.StepLR needs step_size",
        ),
        (
            {"_target_": "lightning_svi.core.optim.exponential_decay", "_partial_": True, "gamma": 2.0},
            "optim.scheduler.gamma=2.0: refused by lightning_svi.core.optim.exponential_decay",
        ),
        (
            {"_target_": "torch.optim.lr_scheduler.ExponentialLR", "_partial_": True, "gama": 0.9},
            "optim.scheduler.gama=0.9: torch.optim.lr_scheduler.ExponentialLR takes no argument 'gama'",
        ),
    ],
)
def test_a_bad_schedule_is_one_line_naming_the_key(scheduler_cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as raised:
        lr_after(1, scheduler_cfg)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "after_step",
    [
        "tests.after_step_hooks.record_call",
        {"_target_": "tests.after_step_hooks.record_call", "_partial_": True, "scale": 2.0},
        {"_target_": "tests.after_step_hooks.make_hook", "scale": 3.0},
    ],
)
def test_after_step_hook_by_dotted_path_partial_or_factory(after_step: object) -> None:
    after_step_hooks.CALLS.clear()
    hook = build_after_step({**optim(), "after_step": after_step})
    hook()
    assert len(after_step_hooks.CALLS) == 1
    assert build_after_step(optim()) is None
    assert build_after_step({**optim(), "after_step": None}) is None


def test_an_after_step_target_that_returns_no_function_is_refused() -> None:
    with pytest.raises(ConfigError, match="add _partial_: true"):
        build_after_step({**optim(), "after_step": {"_target_": "tests.after_step_hooks.record_call"}})
