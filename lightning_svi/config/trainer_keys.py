"""``trainer.KEY`` checked against ``pytorch_lightning.Trainer``'s arguments before torch is imported.

Importing Lightning to read ``Trainer.__init__``'s signature takes seconds; the names are listed here
instead, and ``tests/test_trainer_keys.py`` checks the list against the real signature.
"""

from __future__ import annotations

import difflib
from typing import Any

from lightning_svi.errors import ConfigError

TRAINER_TARGETS = (
    "pytorch_lightning.Trainer",
    "pytorch_lightning.trainer.trainer.Trainer",
    "lightning.pytorch.Trainer",
)
# pytorch_lightning.Trainer.__init__'s parameters (Lightning 2.6).
TRAINER_ARGUMENTS = (
    "accelerator", "strategy", "devices", "num_nodes", "precision", "logger", "callbacks", "fast_dev_run",
    "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "limit_train_batches", "limit_val_batches",
    "limit_test_batches", "limit_predict_batches", "overfit_batches", "val_check_interval",
    "check_val_every_n_epoch", "num_sanity_val_steps", "log_every_n_steps", "enable_checkpointing",
    "enable_progress_bar", "enable_model_summary", "accumulate_grad_batches", "gradient_clip_val",
    "gradient_clip_algorithm", "deterministic", "benchmark", "inference_mode", "use_distributed_sampler",
    "profiler", "detect_anomaly", "barebones", "plugins", "sync_batchnorm", "reload_dataloaders_every_n_epochs",
    "default_root_dir", "enable_autolog_hparams", "model_registry",
)  # fmt: skip
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def check_trainer_keys(trainer: Any) -> None:
    """Raise ``ConfigError`` naming the first ``trainer.KEY`` that ``pytorch_lightning.Trainer`` does not take
    (``+trainer.foo=1``), with the closest argument names; a Trainer of another ``_target_`` is left to its class."""
    if trainer is None or trainer.get("_target_") not in TRAINER_TARGETS:
        return
    for key in trainer:
        if key in TRAINER_ARGUMENTS or key in HYDRA_KEYS:
            continue
        close = difflib.get_close_matches(str(key), TRAINER_ARGUMENTS, n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ConfigError(
            f"trainer.{key}: not an argument of pytorch_lightning.Trainer; {hint}"
            "see https://lightning.ai/docs/pytorch/stable/common/trainer.html#trainer-flags for the ones it takes."
        )
