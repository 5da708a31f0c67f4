"""The optimizer over two parameter groups, θ (model) and φ (guide), each with its own learning rate;
its learning-rate schedule; and the hook called after every optimizer step.

``optim`` is a ``_target_`` node: any ``torch.optim`` class (or Pyro's ``pyro.optim.ClippedAdam``-style
wrappers, unwrapped to the torch class they wrap) with its own options, plus the keys lightning-svi reads
itself (``FRAMEWORK_KEYS``), which are not passed to the optimizer::

    optim:
      _target_: torch.optim.Adam
      _partial_: true
      lr: 0.1
      betas: [0.9, 0.999]
      theta_lr: null                  # θ's rate, if not lr
      phi_lr: null                    # φ's rate, if not lr
      scheduler:                      # null: a constant rate
        _target_: lightning_svi.core.optim.exponential_decay
        _partial_: true
        gamma: 0.1
      after_step: null                # e.g. my_module.clip_params, called after every step
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from lightning_svi.config.targets import check_target, constructing, locate, options, plain, target_path
from lightning_svi.errors import ConfigError

FRAMEWORK_KEYS = ("theta_lr", "phi_lr", "scheduler", "after_step")
# What lightning-svi passes the optimizer and the schedule itself.
OPTIMIZER_SUPPLIED = ("params",)
SCHEDULER_SUPPLIED = ("optimizer", "max_steps")
# The torch optimizers with a fused implementation on CPU and CUDA.
FUSED = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def optimizer_class(target: Any) -> Any:
    """The torch optimizer class ``target`` stands for: itself, or the class a Pyro wrapper such as
    ``pyro.optim.ClippedAdam`` (a function returning a ``PyroOptim``) wraps."""
    if isinstance(target, type) or not callable(target) or not getattr(target, "__module__", "").startswith("pyro."):
        return target
    from pyro.optim import PyroOptim

    try:
        wrapped = target({})
    except Exception:
        return target
    return wrapped.pt_optim_constructor if isinstance(wrapped, PyroOptim) else target


def check_optimizer(optim_cfg: Any, key: str = "optim") -> type[torch.optim.Optimizer]:
    """The optimizer class of ``optim_cfg`` with its keys checked against its signature."""
    target = target_path(optim_cfg, key)
    found = optimizer_class(locate(target, key))
    if not (isinstance(found, type) and issubclass(found, torch.optim.Optimizer)):
        raise ConfigError(f"{key}._target_={target}: not a torch.optim.Optimizer class.")
    check_target(
        optim_cfg,
        key,
        framework_keys=FRAMEWORK_KEYS,
        supplied=OPTIMIZER_SUPPLIED,
        resolve=optimizer_class,
        complete=True,
    )
    return found


def build_optimizer(theta: list[nn.Parameter], phi: list[nn.Parameter], optim_cfg: Any) -> torch.optim.Optimizer:
    """The optimizer of ``optim_cfg`` over groups named ``theta`` and ``phi`` (empty ones left out), each
    with its own learning rate where ``theta_lr`` / ``phi_lr`` set one."""
    return _construct(check_optimizer(optim_cfg), theta, phi, optim_cfg)


def _construct(
    optimizer: type[torch.optim.Optimizer], theta: list[nn.Parameter], phi: list[nn.Parameter], optim_cfg: Any
) -> torch.optim.Optimizer:
    settings = plain(optim_cfg)
    arguments = options(optim_cfg, FRAMEWORK_KEYS)
    groups = [
        {"name": "theta", "params": theta, **_rate(settings.get("theta_lr"))},
        {"name": "phi", "params": phi, **_rate(settings.get("phi_lr"))},
    ]
    groups = [group for group in groups if group["params"]]
    if issubclass(optimizer, FUSED) and not {"fused", "foreach"} & arguments.keys():
        # One kernel for all parameters: about a third of the single-tensor loop's time for small models.
        arguments["fused"] = all(p.device.type in ("cpu", "cuda") for group in groups for p in group["params"])
    with constructing(optim_cfg, "optim", FRAMEWORK_KEYS):
        return optimizer(groups, **arguments)


def try_optimizer_and_schedule(optim_cfg: Any, max_steps: int) -> None:
    """Build the optimizer of ``optim_cfg`` (on a dummy parameter) and its schedule once, so that the
    values they refuse are reported, naming their key, before training imports Lightning.

    The trial optimizer is a subclass that keeps its parameter groups without torch's
    ``add_param_group``: the first call of that imports ``torch._dynamo`` (0.7-2 s), which the checks
    need not pay; the constructor's own value checks run as they are."""
    optimizer = check_optimizer(optim_cfg)
    trial = type(f"Trial{optimizer.__name__}", (optimizer,), {"add_param_group": _add_group_unchecked})
    dummy = nn.Parameter(torch.zeros(1))
    build_scheduler(_construct(trial, [dummy], [], optim_cfg), max_steps, optim_cfg.get("scheduler"))


def _add_group_unchecked(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> None:
    optimizer.param_groups.append({**optimizer.defaults, **group})


def _rate(lr: float | None) -> dict[str, float]:
    return {} if lr is None else {"lr": lr}


def exponential_decay(
    optimizer: torch.optim.Optimizer, max_steps: int, gamma: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """``ExponentialLR`` whose ``gamma`` is the decay over the whole run (0.1: the rate ends at a tenth),
    so the schedule does not depend on ``max_steps``."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
        raise ValueError(f"gamma must be a number in (0, 1], the factor over the whole run; got {gamma!r}")
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma ** (1.0 / max_steps))


def check_scheduler(scheduler_cfg: Any, key: str = "optim.scheduler") -> Callable[..., Any]:
    return check_target(scheduler_cfg, key, supplied=SCHEDULER_SUPPLIED, complete=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer, max_steps: int, scheduler_cfg: Any
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule of ``scheduler_cfg`` (stepped once per optimizer step), or None for a
    constant rate. Its target is called with the optimizer, and with ``max_steps`` if it takes it."""
    if scheduler_cfg is None:
        return None
    schedule = check_scheduler(scheduler_cfg)
    arguments = options(scheduler_cfg)
    if "max_steps" in _parameter_names(schedule):
        arguments["max_steps"] = max_steps
    with constructing(scheduler_cfg, "optim.scheduler"):
        return schedule(optimizer, **arguments)


def _parameter_names(function: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()


def build_after_step(optim_cfg: Any) -> Callable[[], None] | None:
    """The function ``optim.after_step`` names, to call after every optimizer step (e.g. Pyro's
    ``sparse_gamma_def`` example clips its parameters after each step); None if it is not set.

    A dotted path (``my_module.clip_params``) names the function itself; a ``_target_`` node is built by
    Hydra (``_partial_: true`` binds options to a function, without it the target is called and must
    return the function)."""
    hook_cfg = optim_cfg.get("after_step") if isinstance(optim_cfg, Mapping) or OmegaConf.is_dict(optim_cfg) else None
    if hook_cfg is None:
        return None
    key = "optim.after_step"
    if isinstance(hook_cfg, str):
        hook = locate(hook_cfg, key, label=key)
    else:
        check_target(hook_cfg, key)
        with constructing(hook_cfg, key):
            hook = instantiate(hook_cfg)
    if not callable(hook):
        raise ConfigError(
            f"{key}._target_={hook_cfg['_target_']}: returned {hook!r}, not a function; "
            "add _partial_: true to call the target itself after every step."
        )
    return hook
