"""``train(cfg, run_dir)``: the whole run as a recipe — seed, data, model, guide, estimator,
callbacks, logger, trainer, fit."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pyro
import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_svi.callbacks import (
    EvidenceLogger,
    FinalCheckpoint,
    GradientNormLogger,
    HParamsLogger,
    NonFiniteGuard,
    ParameterLogger,
    PosteriorPictureLogger,
    RngStateCheckpoint,
    RunSummary,
    ScalarLayoutWriter,
    StepProgressBar,
    TraceLogger,
)
from lightning_svi.callbacks.group import CallbackGroup
from lightning_svi.callbacks.hparams import run_hparams
from lightning_svi.callbacks.rank_state import RankStateDump
from lightning_svi.checkpoint_io import AtomicCheckpointIO
from lightning_svi.data.datamodule import TensorDataModule, load_data
from lightning_svi.errors import ConfigError
from lightning_svi.estimators import build_estimator
from lightning_svi.models.base import SVIModel
from lightning_svi.module import SVIModule
from lightning_svi.positive_transform import positive_as_exp
from lightning_svi.programs.build import build_guide, build_model, guide_name, pair_programs
from lightning_svi.resume import checkpoint_to_resume
from lightning_svi.tensorboard_logger import BufferedTensorBoardLogger

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


def builtin_model_class(cfg: DictConfig) -> type[SVIModel] | None:
    """The built-in ``SVIModel`` class ``model._target_`` names (it brings its own data), else None."""
    target = cfg.model.get("_target_")
    if not isinstance(target, str) or not target.startswith("lightning_svi."):
        return None
    model_class = get_class(target)
    return model_class if issubclass(model_class, SVIModel) else None


def build_datamodule(cfg: DictConfig, table: dict[str, list[float]] | None = None) -> TensorDataModule:
    """``data._target_`` (a reader of data files, or the user's own DataModule); else a built-in
    model's embedded data set or its CSV file (``data.path``)."""
    if cfg.data.get("_target_"):
        return instantiate(cfg.data)
    model_class = builtin_model_class(cfg)
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
    estimator = build_estimator(**cfg.elbo)
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
        steps_per_batch=cfg.get("steps_per_batch"),
        observed_every=tuple(n for n in (cfg.checkpoint.every_n_steps, cfg.tensorboard.image_every_n_steps) if n),
    )
    return module, built.name


def build_callbacks(cfg: DictConfig, run_dir: Path, model_name: str, full_data: dict) -> list[pl.Callback]:
    """lightning-svi's own callbacks, in the order their hooks run."""
    names = {"model": model_name, "guide": guide_name(cfg.guide), "elbo": cfg.elbo.name, "seed": cfg.seed}
    run_summary = RunSummary(run_dir / "summary.json", names, full_data)
    num_rows = len(full_data["index"])
    callbacks = [
        TraceLogger(sampled_every_n_steps=cfg.tensorboard.sampled_every_n_steps),
        ParameterLogger(),
        GradientNormLogger(),
        EvidenceLogger(full_data),
        NonFiniteGuard(),
        run_summary,
        HParamsLogger(run_hparams(cfg, model_name, num_rows), run_summary),
        ScalarLayoutWriter(full_data),
        PosteriorPictureLogger(full_data, cfg.tensorboard.image_every_n_steps),
        RngStateCheckpoint(),
        FinalCheckpoint(run_dir / "checkpoints" / "last.ckpt", cfg.checkpoint.every_n_steps),
    ]
    if cfg.get("rank_dumps"):
        callbacks.append(RankStateDump(run_dir / "rank_state"))
    return callbacks


def train(cfg: DictConfig, run_dir: Path, table: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """Fit ``cfg`` and write TensorBoard events, checkpoints and ``summary.json`` under ``run_dir``.

    ``table`` holds the columns of ``data.path`` where the caller has read and checked them already
    (``train.py`` does so before importing torch). Returns the summary (``summary["final"]["elbo"]``
    is what a sweeper maximises).
    """
    run_dir = Path(run_dir)
    reset_global_state(cfg.seed)
    datamodule = build_datamodule(cfg, table)
    module, model_name = build_module(cfg, datamodule)
    full_data = datamodule.full_batch()
    logger = BufferedTensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
    logger.experiment  # noqa: B018 - opens the event writer (and imports tensorboard) before the timed loop
    callbacks = build_callbacks(cfg, run_dir, model_name, full_data)
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0, every_n_train_steps=cfg.checkpoint.every_n_steps
    )
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        # Lightning's own progress bar and checkpoint callbacks stay visible to it; ours are one group.
        callbacks=[StepProgressBar(refresh_rate=cfg.progress_bar_refresh_rate), CallbackGroup(callbacks), checkpoints],
        logger=logger,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
    )
    ckpt_path = checkpoint_to_resume(cfg.ckpt_path, run_dir)
    with positive_as_exp():
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    # Every rank returns the summary: rank 0 wrote it, the others may get here first.
    return next(callback.summary for callback in callbacks if isinstance(callback, RunSummary))
