"""``train(cfg, run_dir)``: the whole run as a recipe — seed, data, model, guide, estimator,
callbacks, logger, trainer, fit."""

from __future__ import annotations

import gc
import inspect
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyro
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pyro.infer.util import is_validation_enabled
from pytorch_lightning.accelerators import AcceleratorRegistry
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_svi.checkpointing.atomic_io import AtomicCheckpointIO
from lightning_svi.checkpointing.rank_state import RankStateDump
from lightning_svi.checkpointing.resume import check_steps_to_go, checkpoint_to_resume
from lightning_svi.checkpointing.stop_signals import StoppedBySignal, received_signal
from lightning_svi.config.targets import check_target, constructing, instantiated, locate, parameters, target_name
from lightning_svi.config.targets import options as target_options
from lightning_svi.core.estimators import build_estimator
from lightning_svi.core.optim import build_after_step
from lightning_svi.core.patches import (
    bernoulli_logits_of_sigmoids,
    log_contractions_by_broadcast,
    plain_sums_without_dice_factors,
    positive_as_exp,
)
from lightning_svi.core.programs.build import build_guide, build_model, guide_name, pair_programs
from lightning_svi.core.svi_model import SVIModel
from lightning_svi.data.datamodule import FileDataModule, TensorDataModule, load_data
from lightning_svi.errors import ConfigError
from lightning_svi.logging.hparams import run_hparams
from lightning_svi.logging.report import quiet_known_noise
from lightning_svi.logging.step_logger import EarlyStoppingChecks
from lightning_svi.logging.summary import RunSummary
from lightning_svi.training.module import SVIModule

# A checkpoint written after step n is meant to hold the state after n updates, which is what
# Lightning warns (on every run) that a manually optimized module's checkpoints contain.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")


def reset_global_state(seed: int) -> None:
    """Start every job alike, also when a launcher runs several jobs in one process."""
    pyro.settings.set(module_local_params=True)
    pyro.enable_validation(True)
    pyro.clear_param_store()
    pl.seed_everything(seed, workers=True, verbose=False)
    pyro.set_rng_seed(seed)


@contextmanager
def pyro_settings_restored() -> Iterator[None]:
    """Pyro's global settings as they were before a run, after it: code that trains in-process
    (a notebook, a test, a launcher's next job) gets back the mode it had."""
    local_params, validation = pyro.settings.get("module_local_params"), is_validation_enabled()
    try:
        yield
    finally:
        pyro.settings.set(module_local_params=local_params)
        pyro.enable_validation(validation)


@contextmanager
def heap_frozen() -> Iterator[None]:
    """Everything built before the fit (config, data, programs, trainer, callbacks) out of the garbage
    collector's walks while it runs (``gc.freeze``), as ``train.py`` has its imports: the collections
    that each step's short-lived objects set off then walk what training made, not the whole heap (on
    Pyro's HMM example a collection pass per few steps, several percent of its step). Unfrozen after
    the fit, imports included, so a launcher's next job in the same process can collect what this run
    left in cycles; that job's fit freezes the heap again."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def svi_model_class(cfg: DictConfig) -> type[SVIModel] | None:
    """The ``SVIModel`` class ``model._target_`` names (a built-in model, or one written for the
    framework: it brings its own data set and CSV spec), else None (any other Pyro program)."""
    model_class = locate(cfg.model._target_, "model")
    return model_class if inspect.isclass(model_class) and issubclass(model_class, SVIModel) else None


def build_datamodule(cfg: DictConfig, table: dict[str, list[float]] | None = None) -> TensorDataModule:
    """``data._target_`` (a reader of data files, or the user's own DataModule); else an ``SVIModel``'s
    embedded data set or its CSV file; else the data file ``data.path`` read as ``data=file`` does."""
    if cfg.data.get("_target_"):
        return instantiated(cfg.data, "data")
    model_class = svi_model_class(cfg)
    if model_class is None and cfg.data.get("path") is not None:
        return FileDataModule(
            cfg.data.path, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers, seed=cfg.seed
        )
    if model_class is None:
        raise ConfigError(
            f"model._target_={cfg.model._target_} brings no data set: give one with data=file data.path=FILE "
            "(CSV, Parquet, .npz or .pt; its columns become the model's arguments) or data._target_=YOUR.DataModule."
        )
    synthetic = OmegaConf.to_container(cfg.data.synthetic, resolve=True) if cfg.data.get("synthetic") else None
    data = load_data(model_class, cfg.data.path, cfg.data.seed, synthetic, table)
    return TensorDataModule(data, cfg.data.batch_size, cfg.data.num_workers, seed=cfg.seed)


def build_module(cfg: DictConfig, datamodule: TensorDataModule) -> tuple[SVIModule, str]:
    """The model, guide and estimator of ``cfg`` joined into an ``SVIModule``, and the model's name."""
    columns = list(datamodule.full_batch())
    plate = cfg.data.get("plate")
    built = build_model(cfg.model, columns, datamodule.num_rows, plate)
    guide = build_guide(cfg.guide, built, columns, datamodule.num_rows, plate)
    pair_programs(built.module, guide)
    model = built.module
    estimator = build_estimator(cfg.elbo)
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    scheduler = optim.pop("scheduler", None)
    module = SVIModule(
        model,
        guide,
        estimator,
        datamodule.full_batch(),
        optim=optim,
        scheduler=scheduler,
        validate_every_step=cfg.validate_every_step,
        validate_first_step=cfg.get("validate_first_step", True),
        compile_backend=cfg.compile.backend if cfg.compile.enabled else None,
        after_step=build_after_step(cfg.optim),
        steps_per_batch=cfg.get("steps_per_batch"),
        observed_every=tuple(n for n in (cfg.checkpoint.every_n_steps, cfg.tensorboard.image_every_n_steps) if n),
    )
    return module, built.name


# What a callback's or logger's constructor may take by name from the run, where its node leaves it unset.
RUN_TIME_ARGUMENTS = ("full_data", "run_dir", "names", "hparams", "run_summary")
# Options of a callback or logger that are paths: relative ones are inside the run folder.
RUN_FOLDER_PATHS = ("path", "dirpath", "save_dir")


def build_component(node: DictConfig, key: str, run_dir: Path, run_time: dict[str, Any]) -> Any:
    """A callback or logger from its ``_target_`` node: its keys checked against its signature, the
    ``run_time`` objects it takes by name given to it, relative paths put inside ``run_dir``."""
    found = check_target(node, key, supplied=run_time)
    given = target_options(node)
    paths = {
        name: str(run_dir / value)
        for name in RUN_FOLDER_PATHS
        if isinstance(value := given.get(name), str) and not Path(value).is_absolute()
    }
    takes = parameters(found) or {}
    extra = {name: value for name, value in run_time.items() if name in takes and name not in given}
    with constructing(node, key):
        # Run-time objects are passed to the target itself, not through Hydra, which would turn a
        # dict of tensors into a DictConfig.
        return instantiate(node, _partial_=True, _convert_="all", **paths)(**extra)


def build_callbacks(cfg: DictConfig, run_dir: Path, model_name: str, full_data: dict) -> list[pl.Callback]:
    """The callbacks of ``cfg.callbacks`` in order, the run's objects given to those that take them."""
    names = {"model": model_name, "guide": guide_name(cfg.guide), "elbo": target_name(cfg.elbo), "seed": cfg.seed}
    names["tags"] = [str(tag) for tag in cfg.get("tags") or []]  # summary.json's "tags"
    run_time: dict[str, Any] = {
        "full_data": full_data,
        "run_dir": run_dir,
        "names": names,
        "hparams": run_hparams(cfg, model_name, len(full_data["index"])),
    }
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        callback = build_component(node, f"callbacks.{name}", run_dir, run_time)
        if isinstance(callback, RunSummary):
            run_time["run_summary"] = callback  # HParamsLogger reads the final metrics from it
        callbacks.append(callback)
    if cfg.get("rank_dumps"):
        callbacks.append(RankStateDump(run_dir / "rank_state"))
    return callbacks


def trainer_callbacks(callbacks: list[pl.Callback]) -> list[pl.Callback]:
    """``callbacks`` as the Trainer gets them; with an ``EarlyStopping``, also ``EarlyStoppingChecks``, which
    runs its checks on logged steps (Lightning runs them at epoch ends, and SVI has none). Lightning runs
    checkpoint callbacks after all others, so ``LastCheckpoint`` writes the last step before the end-of-run work.

    No grouping of our callbacks behind one: Lightning's per-step hook calls measured 461 µs a step with
    a group forwarding each hook only to its implementers, 364 µs without (issue 15)."""
    if any(isinstance(callback, EarlyStopping) for callback in callbacks):
        return [*callbacks, EarlyStoppingChecks()]
    return list(callbacks)


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    """The loggers of ``cfg.logger``, their event writers open (and tensorboard imported) before the timed loop."""
    loggers = [
        build_component(node, f"logger.{name}", run_dir, {"run_dir": run_dir})
        for name, node in (cfg.get("logger") or {}).items()
        if node is not None
    ]
    for logger in loggers:
        logger.experiment  # noqa: B018
    return loggers


def check_accelerator(trainer: DictConfig) -> None:
    """``trainer.accelerator`` names a device this machine has; Lightning's own refusal names neither the key
    nor what would run here (``MisconfigurationException: No supported gpu backend found!``)."""
    name = trainer.get("accelerator")
    if not isinstance(name, str) or name in ("auto", "cpu"):
        return
    kinds = ("cuda", "mps") if name == "gpu" else (name,)
    registered = AcceleratorRegistry.available_accelerators()
    if not any(kind in registered and AcceleratorRegistry[kind]["accelerator"].is_available() for kind in kinds):
        raise ConfigError(
            f"trainer.accelerator={name}: this machine has no {name} that torch can use; "
            "train here with trainer=cpu (trainer=ddp_cpu for several processes), or trainer.accelerator=auto."
        )


def train(cfg: DictConfig, run_dir: Path, table: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """Fit ``cfg`` and write TensorBoard events, checkpoints and ``summary.json`` under ``run_dir``.

    ``table`` holds the columns of ``data.path`` where the caller has read and checked them already
    (``train.py`` does so before importing torch). Returns the summary (``summary["final"]["elbo"]``
    is what a sweeper maximises).
    """
    quiet_known_noise()
    with pyro_settings_restored(), inductor_cache(cfg.compile.get("cache_dir")):
        return _train(cfg, Path(run_dir), table)


@contextmanager
def inductor_cache(folder: str | None) -> Iterator[None]:
    """``compile.cache_dir`` as inductor's cache folder for this run (DDP's processes inherit it)."""
    if folder is None:
        yield
        return
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(folder).expanduser().resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR")
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


def _train(cfg: DictConfig, run_dir: Path, table: dict[str, list[float]] | None) -> dict[str, Any]:
    ckpt_path = checkpoint_to_resume(cfg.ckpt_path, run_dir, cfg.get("resume", False))
    if ckpt_path is not None:
        check_steps_to_go(ckpt_path, cfg.trainer)  # before anything is built or written
    reset_global_state(cfg.seed)
    datamodule = build_datamodule(cfg, table)
    module, model_name = build_module(cfg, datamodule)
    full_data = datamodule.full_batch()
    loggers = build_loggers(cfg, run_dir)
    callbacks = build_callbacks(cfg, run_dir, model_name, full_data)
    run_summary = next(callback for callback in callbacks if isinstance(callback, RunSummary))
    try:
        check_accelerator(cfg.trainer)
        trainer: pl.Trainer = instantiated(
            cfg.trainer,
            "trainer",
            callbacks=trainer_callbacks(callbacks),
            logger=loggers or False,
            default_root_dir=str(run_dir),
            plugins=[AtomicCheckpointIO()],
        )
    except ConfigError as error:  # no such device here, a value the Trainer refuses
        run_summary.write_unstarted("failed", str(error))
        raise
    try:
        with (
            heap_frozen(),
            positive_as_exp(),
            plain_sums_without_dice_factors(),
            bernoulli_logits_of_sigmoids(),
            log_contractions_by_broadcast(),
        ):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        raise StoppedBySignal(received_signal(trainer) or "SIGTERM") from None
    # Every rank returns the summary: rank 0 wrote it, the others may get here first.
    return run_summary.summary
