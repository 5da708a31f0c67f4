"""``train(cfg, run_dir)``: the whole run as a recipe — seed, data, model, guide, estimator,
callbacks, logger, trainer, fit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyro
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_svi.callbacks import (
    EvidenceLogger,
    GradientNormLogger,
    NonFiniteGuard,
    ParameterLogger,
    RunSummary,
    StepProgressBar,
    TraceLogger,
)
from lightning_svi.data.datamodule import TensorDataModule, load_data
from lightning_svi.estimators import build_estimator
from lightning_svi.guides import build_guide
from lightning_svi.models.loading import load_model_class
from lightning_svi.module import SVIModule


def reset_global_state(seed: int) -> None:
    """Start every job alike, also when a launcher runs several jobs in one process."""
    pyro.settings.set(module_local_params=True)
    pyro.clear_param_store()
    pl.seed_everything(seed, workers=True, verbose=False)
    pyro.set_rng_seed(seed)


def build_module(cfg: DictConfig, datamodule: TensorDataModule) -> SVIModule:
    """The model, guide and estimator of ``cfg`` joined into an ``SVIModule``."""
    model = instantiate(cfg.model, num_data=datamodule.num_rows)
    guide_options = {key: value for key, value in cfg.guide.items() if key != "kind"}
    guide = build_guide(cfg.guide.kind, model, **guide_options)
    estimator = build_estimator(**cfg.elbo)
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    scheduler = optim.pop("scheduler", None)
    return SVIModule(model, guide, estimator, datamodule.full_batch(), optim=optim, scheduler=scheduler)


def build_callbacks(cfg: DictConfig, run_dir: Path, model_name: str, full_data: dict) -> list[pl.Callback]:
    names = {"model": model_name, "guide": cfg.guide.kind, "elbo": cfg.elbo.name, "seed": cfg.seed}
    return [
        StepProgressBar(refresh_rate=cfg.progress_bar_refresh_rate),
        TraceLogger(),
        ParameterLogger(),
        GradientNormLogger(),
        EvidenceLogger(full_data),
        NonFiniteGuard(),
        RunSummary(run_dir / "summary.json", names, full_data),
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            save_last=True,
            save_top_k=0,
            every_n_train_steps=cfg.checkpoint.every_n_steps,
        ),
    ]


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Fit ``cfg`` and write TensorBoard events, checkpoints and ``summary.json`` under ``run_dir``.

    Returns the summary (``summary["final"]["elbo"]`` is what a sweeper maximises).
    """
    run_dir = Path(run_dir)
    reset_global_state(cfg.seed)
    model_class = load_model_class(cfg.model._target_)
    synthetic = OmegaConf.to_container(cfg.data.synthetic, resolve=True) if cfg.data.get("synthetic") else None
    data = load_data(model_class, cfg.data.path, cfg.data.seed, synthetic)
    datamodule = TensorDataModule(data, cfg.data.batch_size, cfg.data.num_workers, seed=cfg.seed)
    module = build_module(cfg, datamodule)
    full_data = datamodule.full_batch()
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
    callbacks = build_callbacks(cfg, run_dir, model_class.name, full_data)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(run_dir))
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    return json.loads((run_dir / "summary.json").read_text())
