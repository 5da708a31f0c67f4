"""Lightning's private loop state, as ``lightning_svi.lightning_state`` reads and writes it.

These fail loudly when a Lightning release moves or renames the counters: upgrade
``lightning_state`` (and its ``CHECKED_AGAINST``) together with the pin in pyproject.toml.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from lightning_svi.lightning_state import CHECKED_AGAINST, count_step, stop_after_this_step


class _ManualSteps(pl.LightningModule):
    """Takes one optimizer step per batch by hand, counted with ``count_step``, and records the
    loop's counters as the module sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.automatic_optimization = False
        self.seen: list[int] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        optimizer = self.optimizers().optimizer
        (self.weight - batch.sum()).pow(2).backward()
        optimizer.step()
        optimizer.zero_grad()
        count_step(self.trainer)
        self.seen.append(self.trainer.global_step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.arange(100.0), batch_size=1)


def _bare_trainer(tmp_path) -> pl.Trainer:
    """Seven steps and nothing else: no logger, checkpoints, progress bar or summary."""
    return pl.Trainer(
        max_steps=7,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def test_the_lightning_version_is_in_the_series_the_private_state_was_checked_against() -> None:
    series = ".".join(CHECKED_AGAINST.split(".")[:2])
    assert pl.__version__.startswith(series + "."), (
        f"pytorch-lightning {pl.__version__}: check lightning_svi/lightning_state.py against it, then update "
        "CHECKED_AGAINST and the pin in pyproject.toml"
    )


def test_count_step_moves_global_step_and_max_steps_stops_on_it(tmp_path) -> None:
    module = _ManualSteps()
    trainer = _bare_trainer(tmp_path)
    trainer.fit(module)
    # Each hand-taken step counts once, as soon as it is taken.
    assert module.seen == list(range(1, 8))
    assert trainer.global_step == 7


class _StopsItself(_ManualSteps):
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        super().training_step(batch, batch_idx)
        if self.trainer.global_step == 3:
            stop_after_this_step(self.trainer)


def test_stop_after_this_step_ends_fit_as_sigterm_does(tmp_path) -> None:
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    module = _StopsItself()
    trainer = _bare_trainer(tmp_path)
    with pytest.raises(SIGTERMException):
        trainer.fit(module)
    assert trainer.global_step == 3
