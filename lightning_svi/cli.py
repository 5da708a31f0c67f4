"""What ``train.py`` runs: check the config, then train, turning known failures into one-paragraph errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lightning_svi.config.checks import check_config, read_data_file
from lightning_svi.errors import UserInputError

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


def _fail(message: str, code: int) -> NoReturn:
    print(f"lightning-svi: error: {message}", file=sys.stderr)
    sys.exit(code)


def run(cfg: DictConfig) -> float | None:
    """Train ``cfg`` into Hydra's output folder; return the final ELBO (the sweep objective)."""
    # Like ``python -m``: a user's model module in the folder train.py is run from can be imported.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        check_config(cfg)
        table = read_data_file(cfg)
        from lightning_svi.training.components import check_components

        check_components(cfg)  # imports torch and Pyro: after every torch-free check
    except UserInputError as error:
        _fail(str(error), EXIT_BAD_INPUT)
    # Heavy imports (torch, Pyro, Lightning) only once the config and the data file are known to be sound.
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from lightning_svi.checkpointing.divergence_guard import TrainingDiverged
    from lightning_svi.training.run import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = train(cfg, run_dir, table)
    except UserInputError as error:
        _fail(str(error), EXIT_BAD_INPUT)
    except TrainingDiverged as error:
        _fail(f"training diverged at {error}", EXIT_DIVERGED)
    except SIGTERMException:
        checkpoint = run_dir / "checkpoints" / "last.ckpt"
        print(f"lightning-svi: pre-empted (SIGTERM); resume with ckpt_path={checkpoint}", file=sys.stderr)
        sys.exit(0)
    return summary["final"]["elbo"]
