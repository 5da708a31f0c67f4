"""Check a composed config before anything heavy is imported.

Each check names the key, the value it got and what is allowed, so that a typo costs the
user a second, not a stack trace from deep inside Pyro or Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lightning_svi.errors import ConfigError

ESTIMATOR_NAMES = ("TraceEnum_ELBO", "Trace_ELBO", "TraceGraph_ELBO", "TraceMeanField_ELBO")
GUIDE_KINDS = ("full", "empty", "delta", "normal", "diag_normal", "lowrank")
COMPILE_BACKENDS = ("inductor", "fx")
FULL_BATCH_GUIDES = ("diag_normal", "lowrank")
OPTIMIZER_NAMES = ("Adam", "AdamW", "ClippedAdam", "SGD", "RMSprop")
SCHEDULER_NAMES = ("none", "exponential", "cosine")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require_positive(key: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_number(value) or value <= 0:
        raise ConfigError(f"{key}={value!r}: must be a number > 0" + (" or null" if optional else "") + ".")


def _require_int(key: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key}={value!r}: must be an integer >= {minimum}" + (" or null" if optional else "") + ".")


def _require_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: unknown; allowed values are {', '.join(allowed)}.")


def check_optim(optim: DictConfig) -> None:
    _require_choice("optim.name", optim.name, OPTIMIZER_NAMES)
    _require_positive("optim.lr", optim.lr)
    _require_positive("optim.theta_lr", optim.get("theta_lr"), optional=True)
    _require_positive("optim.phi_lr", optim.get("phi_lr"), optional=True)
    scheduler = optim.get("scheduler")
    if scheduler is None:
        return
    if not isinstance(scheduler, Mapping):
        raise ConfigError(
            f"optim.scheduler={scheduler!r}: must be null or a mapping such as {{name: exponential, gamma: 0.1}}."
        )
    _require_choice("optim.scheduler.name", scheduler.get("name", "none"), SCHEDULER_NAMES)
    if scheduler.get("name", "none") == "exponential":
        gamma = scheduler.get("gamma")
        if not _is_number(gamma) or not 0 < gamma <= 1:
            raise ConfigError(f"optim.scheduler.gamma={gamma!r}: must be a number in (0, 1].")


def check_elbo(elbo: DictConfig) -> None:
    _require_choice("elbo.name", elbo.name, ESTIMATOR_NAMES)
    _require_int("elbo.num_particles", elbo.num_particles, 1)
    _require_int("elbo.max_plate_nesting", elbo.get("max_plate_nesting"), 0, optional=True)
    vectorize = elbo.get("vectorize_particles", False)
    if not isinstance(vectorize, bool):
        raise ConfigError(f"elbo.vectorize_particles={vectorize!r}: must be true or false.")


def check_trainer(trainer: DictConfig) -> None:
    _require_int("trainer.max_steps", trainer.max_steps, 1)
    _require_int("trainer.log_every_n_steps", trainer.get("log_every_n_steps", 10), 1)


def check_data(data: DictConfig) -> None:
    _require_int("data.batch_size", data.get("batch_size"), 1, optional=True)
    _require_int("data.seed", data.get("seed", 0), 0)
    _require_int("data.num_workers", data.get("num_workers", 0), 0)
    path = data.get("path")
    if path is not None and not isinstance(path, str):
        raise ConfigError(f"data.path={path!r}: must be a path to a CSV file, or null for the synthetic data.")


def check_checkpoint_path(path: Any) -> None:
    if path is None:
        return
    if not isinstance(path, str) or not Path(path).is_file():
        raise ConfigError(
            f"ckpt_path={path!r}: no such checkpoint file; pass a checkpoints/last.ckpt of an earlier run, or null."
        )


def check_model(model: DictConfig) -> None:
    if OmegaConf.is_missing(model, "_target_") or not isinstance(model.get("_target_"), str):
        raise ConfigError(
            "model._target_ is not set: with model=custom give the dotted path of your SVIModel subclass, "
            "e.g. model._target_=my_package.MyModel."
        )


def check_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first value in ``cfg`` that training could not use."""
    _require_int("seed", cfg.seed, 0)
    check_model(cfg.model)
    _require_choice("guide.kind", cfg.guide.kind, GUIDE_KINDS)
    check_optim(cfg.optim)
    check_elbo(cfg.elbo)
    check_trainer(cfg.trainer)
    check_data(cfg.data)
    _require_int("checkpoint.every_n_steps", cfg.checkpoint.every_n_steps, 1)
    _require_choice("compile.backend", cfg.compile.backend, COMPILE_BACKENDS)
    _require_int("tensorboard.image_every_n_steps", cfg.tensorboard.image_every_n_steps, 1, optional=True)
    _require_int("progress_bar_refresh_rate", cfg.get("progress_bar_refresh_rate", 10), 0)
    check_checkpoint_path(cfg.get("ckpt_path"))
    if cfg.data.get("batch_size") is not None and cfg.guide.kind in FULL_BATCH_GUIDES:
        raise ConfigError(
            f"guide={cfg.guide.kind} with data.batch_size={cfg.data.batch_size}: this guide flattens all latents "
            "into one vector and cannot follow a minibatch; use guide=normal, guide=delta or guide=full, "
            "or data.batch_size=null."
        )
