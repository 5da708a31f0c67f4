"""Check a composed config, and a built-in model's data file, before anything heavy is imported.

Each check names the key, the value it got and what is allowed, so that a typo costs the
user a second, not a stack trace from deep inside Pyro or Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lightning_svi.data.table import read_table, require_file
from lightning_svi.errors import ConfigError
from lightning_svi.models.specs import BUILTIN_MODELS
from lightning_svi.requirements import is_number, require_bool, require_choice, require_int, require_positive

ESTIMATOR_NAMES = ("TraceEnum_ELBO", "Trace_ELBO", "TraceGraph_ELBO", "TraceMeanField_ELBO")
GUIDE_KINDS = ("full", "empty", "delta", "normal", "diag_normal", "lowrank")
COMPILE_BACKENDS = ("inductor", "fx")
FULL_BATCH_GUIDES = ("diag_normal", "lowrank")
OPTIMIZER_NAMES = ("Adam", "AdamW", "ClippedAdam", "SGD", "RMSprop")
SCHEDULER_NAMES = ("none", "exponential", "cosine")


def check_optim(optim: DictConfig) -> None:
    require_choice("optim.name", optim.name, OPTIMIZER_NAMES)
    require_positive("optim.lr", optim.lr)
    require_positive("optim.theta_lr", optim.get("theta_lr"), optional=True)
    require_positive("optim.phi_lr", optim.get("phi_lr"), optional=True)
    scheduler = optim.get("scheduler")
    if scheduler is None:
        return
    if not isinstance(scheduler, Mapping):
        raise ConfigError(
            f"optim.scheduler={scheduler!r}: must be null or a mapping such as {{name: exponential, gamma: 0.1}}."
        )
    require_choice("optim.scheduler.name", scheduler.get("name", "none"), SCHEDULER_NAMES)
    if scheduler.get("name", "none") == "exponential":
        gamma = scheduler.get("gamma")
        if not is_number(gamma) or not 0 < gamma <= 1:
            raise ConfigError(f"optim.scheduler.gamma={gamma!r}: must be a number in (0, 1].")


def check_elbo(elbo: DictConfig) -> None:
    require_choice("elbo.name", elbo.name, ESTIMATOR_NAMES)
    require_int("elbo.num_particles", elbo.num_particles, 1)
    require_int("elbo.max_plate_nesting", elbo.get("max_plate_nesting"), 0, optional=True)
    require_bool("elbo.vectorize_particles", elbo.get("vectorize_particles", False))


def check_trainer(trainer: DictConfig) -> None:
    require_int("trainer.max_steps", trainer.max_steps, 1)
    require_int("trainer.log_every_n_steps", trainer.get("log_every_n_steps", 10), 1)


def check_data(data: DictConfig) -> None:
    require_int("data.batch_size", data.get("batch_size"), 1, optional=True)
    require_int("data.seed", data.get("seed", 0), 0)
    require_int("data.num_workers", data.get("num_workers", 0), 0)
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
    require_int("seed", cfg.seed, 0)
    check_model(cfg.model)
    require_choice("guide.kind", cfg.guide.kind, GUIDE_KINDS)
    check_optim(cfg.optim)
    check_elbo(cfg.elbo)
    check_trainer(cfg.trainer)
    check_data(cfg.data)
    require_int("checkpoint.every_n_steps", cfg.checkpoint.every_n_steps, 1)
    require_choice("compile.backend", cfg.compile.backend, COMPILE_BACKENDS)
    require_int("tensorboard.image_every_n_steps", cfg.tensorboard.image_every_n_steps, 1, optional=True)
    require_int("progress_bar_refresh_rate", cfg.get("progress_bar_refresh_rate", 10), 0)
    check_checkpoint_path(cfg.get("ckpt_path"))
    if cfg.data.get("batch_size") is not None and cfg.guide.kind in FULL_BATCH_GUIDES:
        raise ConfigError(
            f"guide={cfg.guide.kind} with data.batch_size={cfg.data.batch_size}: this guide flattens all latents "
            "into one vector and cannot follow a minibatch; use guide=normal, guide=delta or guide=full, "
            "or data.batch_size=null."
        )


def read_data_file(cfg: DictConfig) -> dict[str, list[float]] | None:
    """The columns of ``data.path`` for a built-in model, read and checked now, before torch is imported.

    None without a data file. None also for a user's own model once its file is known to exist: its
    table spec lives in its class, which imports torch, so ``load_data`` checks the file's content then.
    """
    path = cfg.data.get("path")
    if path is None:
        return None
    target = cfg.model._target_
    spec = BUILTIN_MODELS.get(target)
    if spec is None:
        require_file(Path(path), f"the columns of {target}.table")
        return None
    return read_table(Path(path), spec.table)
