"""Check a composed config, and a built-in model's data file, before anything heavy is imported.

Each check names the key, the value it got and what is allowed, so that a typo costs the
user a second, not a stack trace from deep inside Pyro or Lightning. What only torch can tell
(a user's own model: its options and its data file; what a checkpoint holds; whether a GPU is
there) is checked once training has imported it.

Components named by a ``_target_`` (estimator, optimizer, schedule, after-step hook) are checked
last, by ``check_components``, against their own signature (``targets.check_target``) and by
building them once on a dummy parameter, so that their own value checks speak before training;
that imports torch and Pyro, so ``train.py`` runs it after ``check_config`` and ``read_data_file``.
Callbacks and loggers import Lightning: their targets are checked when training builds them.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lightning_svi.config.command_line import require_creatable_folder
from lightning_svi.config.model_specs import BUILTIN_MODELS, ModelSpec
from lightning_svi.config.requirements import (
    Requirement,
    require_bool,
    require_choice,
    require_int,
    require_options,
    require_positive,
)
from lightning_svi.config.table import read_table, require_file
from lightning_svi.config.targets import plain, require_importable_package, target_path
from lightning_svi.errors import ConfigError

COMPILE_BACKENDS = ("inductor", "fx")
FULL_BATCH_GUIDES = ("diag_normal", "lowrank")
# Lightning's accelerator names; whether the machine has one is known only once torch is imported.
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
# Seeds NumPy accepts (Lightning seeds it with the training seed).
LARGEST_SEED = 2**32 - 1


def _options(node: Any, *exclude: str) -> dict[str, Any]:
    """A config node's keys and plain values, without ``exclude`` and Hydra's own ``_target_``-style keys."""
    values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    return {key: value for key, value in values.items() if key not in exclude and not re.fullmatch(r"_\w+_", str(key))}


def nothing_to_train(model_name: str) -> ConfigError:
    """Also raised by ``build_guide``, for a user's model: whether it has θ is known once it is built."""
    return ConfigError(
        f"guide=empty with model={model_name}: nothing to train, the model has no parameters θ and the "
        "empty guide has no φ; use guide=full, guide=normal or guide=delta."
    )


def check_model(model: DictConfig) -> ModelSpec | None:
    """The spec of a built-in model with its options checked; None for a user's model (checked once imported)."""
    if OmegaConf.is_missing(model, "_target_") or not isinstance(model.get("_target_"), str):
        raise ConfigError(
            "model._target_ is not set: give the dotted path of your Pyro model (a function or a class), "
            "e.g. model._target_=my_file.model."
        )
    target = model._target_
    spec = BUILTIN_MODELS.get(target)
    if spec is not None:
        require_options("model", _options(model), spec.options, f"model={spec.name}")
        return spec
    if target.startswith("lightning_svi."):
        names = "|".join(builtin.name for builtin in BUILTIN_MODELS.values())
        raise ConfigError(
            f"model._target_={target}: not a built-in model; choose one with model={names}, "
            "or your own with model._target_=my_file.model."
        )
    require_importable_package(target, "model")  # finding the package runs none of its code (which may import torch)
    return None


def check_guide(guide: DictConfig, model: ModelSpec | None) -> None:
    """A guide is a ``_target_`` (function, class, autoguide), a ``method`` of the model's object, or
    ``kind`` full or empty; a target's options are checked when it is built."""
    if guide.get("_target_") is not None or guide.get("method") is not None:
        return
    if guide.get("kind") is None:
        raise ConfigError(
            "guide: no guide given; with guide=custom set guide._target_=my_file.guide (a function, class or "
            "autoguide) or guide.method=NAME (a method of the model's object)."
        )
    require_choice("guide.kind", guide.kind, ("full", "empty"))
    if guide.kind == "empty" and model is not None and not model.has_parameters:
        raise nothing_to_train(model.name)


# The arguments every Pyro ELBO takes from its base class, which never checks them.
ELBO_ARGUMENTS: dict[str, Requirement] = {
    "num_particles": partial(require_int, minimum=1),
    "max_plate_nesting": partial(require_int, minimum=0, optional=True),
    "vectorize_particles": require_bool,
}
# Lightning's callbacks and loggers that lightning-svi cannot run without.
REQUIRED_CALLBACKS = {"summary": "it writes summary.json, which train() returns and sweeps maximise"}


def _is_mapping(node: Any) -> bool:
    return isinstance(node, Mapping)


def _check_target_node(node: Any, key: str, **how: Any) -> None:
    """Torch-free: a mapping with a ``_target_`` whose top-level package exists (``how``: see ``target_path``)."""
    require_importable_package(target_path(node, key, **how), key)


def check_elbo(elbo: DictConfig) -> None:
    _check_target_node(elbo, "elbo", example="pyro.infer.Trace_ELBO")
    for name, requirement in ELBO_ARGUMENTS.items():
        if name in elbo:
            requirement(f"elbo.{name}", elbo.get(name))


def check_optim(optim: DictConfig) -> None:
    _check_target_node(optim, "optim", example="torch.optim.Adam, _partial_: true")
    if "lr" in optim:
        require_positive("optim.lr", optim.lr)
    require_positive("optim.theta_lr", optim.get("theta_lr"), optional=True)
    require_positive("optim.phi_lr", optim.get("phi_lr"), optional=True)
    scheduler = optim.get("scheduler")
    if scheduler is not None:
        _check_target_node(
            scheduler, "optim.scheduler", optional=True, example="torch.optim.lr_scheduler.StepLR, step_size: 100"
        )
    after_step = optim.get("after_step")
    if isinstance(after_step, str):
        require_importable_package(after_step, "optim.after_step", "optim.after_step")
    elif after_step is not None:
        _check_target_node(after_step, "optim.after_step", optional=True, example="my_module.clip, _partial_: true")


def check_component_group(group: str, nodes: Any) -> None:
    """``callbacks`` and ``logger``: null, or a mapping of names to ``_target_`` nodes (null removes one)."""
    if nodes is None:
        return
    if not _is_mapping(nodes):
        raise ConfigError(
            f"{group}={nodes!r}: must be null or a mapping of names to {{_target_: ...}} nodes, "
            f"e.g. +{group}.mine={{_target_:my_module.MyClass}}."
        )
    for name, node in nodes.items():
        if node is not None:
            _check_target_node(node, f"{group}.{name}", optional=True)


def check_no_trainer_components(trainer: DictConfig) -> None:
    """Callbacks and loggers have groups of their own; in ``trainer`` they would replace lightning-svi's."""
    for key, group in (("callbacks", "callbacks"), ("logger", "logger")):
        if trainer.get(key) is not None:
            raise ConfigError(
                f"trainer.{key}={plain(trainer.get(key))!r}: lightning-svi gives the Trainer its {key} from the "
                f"{group} group: +{group}.NAME={{_target_: ...}} adds one, {group}.NAME=null removes one."
            )


def check_callbacks(callbacks: Any) -> None:
    check_component_group("callbacks", callbacks)
    for name, reason in REQUIRED_CALLBACKS.items():
        if callbacks is None or callbacks.get(name) is None:
            raise ConfigError(f"callbacks.{name}=null: lightning-svi's {name} callback cannot be removed; {reason}.")


def _require_devices(value: Any) -> None:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if (
        value == "auto"
        or (isinstance(value, int) and not isinstance(value, bool) and (value >= 1 or value == -1))
        or (isinstance(value, str) and value.strip() != "0" and re.fullmatch(r"\s*(-1|\d+(\s*,\s*\d+)*,?)\s*", value))
        or (isinstance(value, list) and value and all(isinstance(index, int) and index >= 0 for index in value))
    ):
        return
    raise ConfigError(
        f"trainer.devices={value!r}: must be auto, a number of devices >= 1 (-1: all of them), "
        "or a list of device indices such as [0,1]."
    )


def check_trainer(trainer: DictConfig) -> None:
    require_int("trainer.max_steps", trainer.max_steps, 1)
    require_int("trainer.log_every_n_steps", trainer.get("log_every_n_steps", 10), 1)
    accelerator = trainer.get("accelerator", "auto")
    if not isinstance(accelerator, Mapping):  # a mapping names an Accelerator class for Hydra to build
        require_choice("trainer.accelerator", accelerator, ACCELERATORS)
    _require_devices(trainer.get("devices", "auto"))
    require_int("trainer.num_nodes", trainer.get("num_nodes", 1), 1)


def check_data(data: DictConfig, model: ModelSpec | None) -> None:
    if OmegaConf.is_missing(data, "path"):
        raise ConfigError(
            "data.path is not set: data=file reads a data file, data.path=FILE (CSV, Parquet, .npz or .pt)."
        )
    if data.get("_target_") is not None and data.get("path") is not None:
        require_file(Path(data.path), "columns (CSV, Parquet) or named arrays (.npz, .pt)")
    require_int("data.batch_size", data.get("batch_size"), 1, optional=True)
    require_int("data.seed", data.get("seed", 0), 0, maximum=LARGEST_SEED)
    require_int("data.num_workers", data.get("num_workers", 0), 0)
    path = data.get("path")
    if path is not None and not isinstance(path, str):
        raise ConfigError(f"data.path={path!r}: must be a path to a data file, or null for a model's own data.")
    synthetic = data.get("synthetic")
    if synthetic is not None and not isinstance(synthetic, Mapping):
        raise ConfigError(
            f"data.synthetic={synthetic!r}: must be null or a mapping of options of the model's synthetic data, "
            "e.g. data.synthetic={num_groups:100}."
        )
    if synthetic is not None and model is not None:
        options = _options(synthetic)
        require_options("data.synthetic", options, model.synthetic, f"model={model.name}'s synthetic data")
        for check in model.synthetic_checks:
            check("data.synthetic", options)


def check_checkpoint_path(path: Any) -> None:
    if path is None:
        return
    if not isinstance(path, str) or not Path(path).is_file():
        raise ConfigError(
            f"ckpt_path={path!r}: no such checkpoint file; pass a checkpoints/last.ckpt of an earlier run, or null."
        )
    # torch.save writes a zip archive; what it holds is checked when torch loads it.
    if not zipfile.is_zipfile(path):
        raise ConfigError(
            f"ckpt_path={path}: not a readable checkpoint (not the zip archive torch.save writes). "
            "Pass a checkpoints/last.ckpt written by lightning-svi."
        )


def check_compile_cache_dir(path: Any) -> None:
    """``compile.cache_dir``: a folder this process may create or write into, or null (torch's default)."""
    if path is None:
        return
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"compile.cache_dir={path!r}: a folder for inductor's cache, or null for torch's default.")
    require_creatable_folder("compile.cache_dir", str(Path(path).expanduser()))


def check_steps_per_batch(steps: Any) -> None:
    """Any positive count, also with minibatches: a batch then carries one minibatch per step
    (``TensorDataModule.group_minibatches``)."""
    require_int("steps_per_batch", steps, 1, optional=True)


DIAGNOSTICS_REFERENCES = ("nuts",)


def check_diagnostics(diagnostics: Any) -> None:
    """The ``diagnostics`` block (guide diagnostics at the end of a run, see ``logging/diagnostics.py``)."""
    if diagnostics is None:
        return
    require_int("diagnostics.every_n_steps", diagnostics.get("every_n_steps"), 1, optional=True)
    require_int("diagnostics.num_particles", diagnostics.get("num_particles", 1000), 2)
    require_int("diagnostics.max_chunk", diagnostics.get("max_chunk", 1000), 2)
    reference = diagnostics.get("reference")
    if reference is not None:
        require_choice("diagnostics.reference", reference, DIAGNOSTICS_REFERENCES)
    require_int("diagnostics.reference_warmup", diagnostics.get("reference_warmup", 200), 1)
    require_int("diagnostics.reference_draws", diagnostics.get("reference_draws", 200), 2)


def check_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first value in ``cfg`` that training could not use, without importing
    torch; ``check_components`` checks the components next (after the data file is read)."""
    require_int("seed", cfg.seed, 0, maximum=LARGEST_SEED)
    model = check_model(cfg.model)
    check_guide(cfg.guide, model)
    check_optim(cfg.optim)
    check_elbo(cfg.elbo)
    check_trainer(cfg.trainer)
    check_no_trainer_components(cfg.trainer)
    check_callbacks(cfg.get("callbacks"))
    check_component_group("logger", cfg.get("logger"))
    check_data(cfg.data, model)
    require_int("checkpoint.every_n_steps", cfg.checkpoint.every_n_steps, 1)
    require_bool("compile.enabled", cfg.compile.enabled)
    require_choice("compile.backend", cfg.compile.backend, COMPILE_BACKENDS)
    check_compile_cache_dir(cfg.compile.get("cache_dir"))
    check_steps_per_batch(cfg.get("steps_per_batch"))
    require_int("tensorboard.image_every_n_steps", cfg.tensorboard.image_every_n_steps, 1, optional=True)
    require_int("tensorboard.sampled_every_n_steps", cfg.tensorboard.sampled_every_n_steps, 1, optional=True)
    require_int("progress_bar_refresh_rate", cfg.get("progress_bar_refresh_rate", 10), 0)
    require_bool("validate_every_step", cfg.get("validate_every_step", False))
    require_bool("validate_first_step", cfg.get("validate_first_step", True))
    require_bool("rank_dumps", cfg.get("rank_dumps", False))
    check_diagnostics(cfg.get("diagnostics"))
    check_checkpoint_path(cfg.get("ckpt_path"))
    if cfg.data.get("batch_size") is not None and cfg.guide.get("kind") in FULL_BATCH_GUIDES:
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
    if path is None or cfg.data.get("_target_") is not None:
        return None  # no file, or one that the data module's own reader checks
    target = cfg.model._target_
    spec = BUILTIN_MODELS.get(target)
    if spec is None:
        require_file(Path(path), f"the columns of {target}.table")
        return None
    return read_table(Path(path), spec.table)
