"""What ``train.py`` runs: check the config, then train, turning known failures into one-paragraph errors."""

from __future__ import annotations

import errno
import gc
import importlib
import math
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig

from lightning_svi.config.checks import check_config, read_data_file
from lightning_svi.config.run_folder import remove_if_fresh
from lightning_svi.config.targets import plain
from lightning_svi.config.trainer_keys import check_trainer_keys
from lightning_svi.errors import ConfigError, UserInputError
from lightning_svi.logging.report import hydra_value, print_report, shell_word, start_line

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
# What writing a checkpoint or summary.json into the run folder fails with when the disk cannot take it.
RUN_FOLDER_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


def _fail(message: str, code: int) -> NoReturn:
    print(f"lightning-svi: error: {message}", file=sys.stderr)
    if code == EXIT_BAD_INPUT and HydraConfig.initialized():
        remove_if_fresh(Path(HydraConfig.get().runtime.output_dir))  # refused before training: no folder left
    sys.exit(code)


def run(cfg: DictConfig) -> float | None:
    """Train ``cfg`` into Hydra's output folder; return ``optimized_metric`` (what a sweeper optimises)."""
    # Like ``python -m``: a user's model module in the folder train.py is run from can be imported.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    try:
        check_config(cfg)
        check_trainer_keys(cfg.trainer)
        check_run_keys(cfg)
        table = read_data_file(cfg)
        num_rows = len(next(iter(table.values()))) if table else None
        if _rank_zero():
            print(start_line(cfg, dict(hydra_config.runtime.choices), num_rows, run_dir), file=sys.stderr, flush=True)
        with imports_uncollected("torch"):
            from lightning_svi.training.components import check_components

        check_components(cfg)  # imports torch and Pyro: after every torch-free check
    except UserInputError as error:
        _fail(str(error), EXIT_BAD_INPUT)
    # Heavy imports (torch, Pyro, Lightning) only once the config and the data file are known to be sound.
    with imports_uncollected("pytorch_lightning"):
        import_lightning()
        from lightning_svi.checkpointing.divergence_guard import TrainingDiverged
        from lightning_svi.checkpointing.stop_signals import StoppedBySignal
        from lightning_svi.training.run import train

    overrides = list(hydra_config.overrides.task)
    try:
        summary = train(cfg, run_dir, table)
    except UserInputError as error:
        _fail(str(error), EXIT_BAD_INPUT)
    except TrainingDiverged as error:
        _report(run_dir, overrides)
        _fail(f"training diverged at {error}", EXIT_DIVERGED)
    except StoppedBySignal as stop:
        _report(run_dir, overrides)
        resume = shell_word(f"ckpt_path={hydra_value(str(run_dir / 'checkpoints' / 'last.ckpt'))}")
        if stop.signal_name == "SIGINT":
            print(f"lightning-svi: interrupted (Ctrl-C); resume with {resume}", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        print(f"lightning-svi: pre-empted (SIGTERM); resume with {resume}", file=sys.stderr)
        sys.exit(0)
    except OSError as error:  # a full disk, a read-only run folder
        if error.errno not in RUN_FOLDER_WRITE_ERRORS:
            raise
        checkpoint = run_dir / "checkpoints" / "last.ckpt"
        kept = f"the last checkpoint written, {checkpoint}, is kept" if checkpoint.is_file() else "no checkpoint"
        _fail(f"cannot write into the run folder ({error.strerror}: {error.filename}); {kept}.", EXIT_FAILED)
    _report(run_dir, overrides, summary)
    return objective(summary, cfg.get("optimized_metric") or "final.elbo")


@contextmanager
def imports_uncollected(package: str) -> Iterator[None]:
    """Python's cyclic garbage collector paused while ``package`` (torch, Lightning) is first imported, and the
    objects the import built then frozen (``gc.freeze``: later collections skip them).

    Importing torch, Pyro and Lightning builds some 700,000 objects that live as long as the process, and the
    collector walked them about a thousand times on the way: 1.4 s of a 10 s import on this machine (measured with
    ``gc.callbacks``). Done once per process: a launcher's next job (whose imports are already done) freezes nothing.
    """
    if package in sys.modules or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def import_lightning() -> None:
    """Lightning, with the ``torch._dynamo`` it imports loaded before the scipy and matplotlib that torchmetrics loads.

    Dynamo's import registers some 130 torch operators, each of which has ``inspect.getmodule`` map every module
    loaded so far to its file (``os.path.realpath`` per module, once). Lightning's own order loads scipy and matplotlib
    first, about 1,000 modules more to map: 0.20 s of CPU in ``getmodule`` instead of 0.13 s (medians of 3 imports).
    """
    importlib.import_module("torch._dynamo")
    importlib.import_module("pytorch_lightning")


# summary.json's sections that hold the numbers a sweeper can optimise
OBJECTIVE_SECTIONS = ("final", "timing", "diagnostics")
TAG = re.compile(r"^[A-Za-z0-9_.+-]+$")


def check_run_keys(cfg: DictConfig) -> None:
    """``tags`` (words that can be part of a folder name) and ``optimized_metric`` (``SECTION.KEY``)."""
    tags = cfg.get("tags") or []
    if not isinstance(tags, (list, ListConfig)) or not all(TAG.match(str(tag)) for tag in tags):
        raise ConfigError(
            f"tags={plain(tags)}: must be a list of words of letters, digits, '_', '.', '+' or '-', "
            "e.g. tags=[baseline,lr-test]."
        )
    metric = cfg.get("optimized_metric") or "final.elbo"
    section, _, key = str(metric).partition(".")
    if section not in OBJECTIVE_SECTIONS or not key:
        raise ConfigError(
            f"optimized_metric={metric}: must be SECTION.KEY of summary.json with SECTION one of "
            f"{', '.join(OBJECTIVE_SECTIONS)}, e.g. final.elbo or final.gap."
        )


def objective(summary: dict, metric: str) -> float:
    """The number ``metric`` (``SECTION.KEY``) names in the summary; NaN where the run has none (a
    sweeper counts that trial as failed)."""
    section, _, key = metric.partition(".")
    value = (summary.get(section) or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _rank_zero() -> bool:
    """Whether this process is rank 0 (Lightning's re-launched DDP ranks have a non-zero rank in the environment)."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _report(run_dir: Path, overrides: list[str], summary: dict | None = None) -> None:
    """The end-of-run report (``logging/report.py``), once, on rank 0."""
    if _rank_zero():
        print_report(run_dir, overrides, summary)
