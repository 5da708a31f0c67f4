"""A progress bar that counts optimizer steps against ``max_steps`` (SVI has no epochs); a plain line
every few steps when stdout is not a terminal (a CI log, a file), instead of carriage returns."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import convert_inf

# Without a terminal, about this many lines per run (and never more often than refresh_rate steps).
PLAIN_LINES_PER_RUN = 20


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, with ``max_steps`` as its total and the loss beside it, named "SVI steps"
    from its first drawing. ``plain`` (default: stdout is not a terminal) prints ``step n/N`` lines
    instead, about ``PLAIN_LINES_PER_RUN`` per run."""

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, plain: bool | None = None) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position)
        self.plain = not sys.stdout.isatty() if plain is None else plain
        self._printed_at = 0
        self._started_at = 0.0
        self._start_step = 0

    @property
    def train_description(self) -> str:
        return "SVI steps"

    @property
    def total_train_batches(self) -> int | float:
        total = super().total_train_batches
        return self.trainer.max_steps if math.isinf(total) and self.trainer.max_steps > 0 else total

    def init_train_tqdm(self) -> Any:
        if not self.plain:
            return super().init_train_tqdm()
        # Plain mode: a bar that draws nothing, so Lightning's own hooks have one to talk to.
        enabled, self._enabled = self._enabled, False
        try:
            return super().init_train_tqdm()
        finally:
            self._enabled = enabled

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: object) -> None:
        # Lightning's version draws an "Epoch 0" bar first; SVI's one epoch never ends.
        bar = self.train_progress_bar
        bar.reset(total=convert_inf(self.total_train_batches))
        bar.initial = 0
        bar.set_description(self.train_description, refresh=False)
        self._printed_at = self._start_step = trainer.global_step
        self._started_at = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.plain:
            self._print_line(trainer, pl_module)
            return
        # Steps, not batches: compiled mode runs several steps per batch, and a resumed run starts midway.
        super().on_train_batch_end(trainer, pl_module, outputs, batch, trainer.global_step - 1)

    def _print_line(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``step n/N (p%)  loss x  r steps/s`` each time the step passes a multiple of the interval, and at the end."""
        if not self.is_enabled:
            return
        step, total = trainer.global_step, trainer.max_steps
        every = max(self.refresh_rate, total // PLAIN_LINES_PER_RUN if total > 0 else 0, 1)
        if step // every == self._printed_at // every and step != total:
            return
        self._printed_at = step
        seconds = time.perf_counter() - self._started_at
        rate = (step - self._start_step) / seconds if seconds > 0 else 0.0
        loss = self.get_metrics(trainer, pl_module).get("loss", "?")
        share = f" ({100 * step / total:.0f}%)" if total > 0 else ""
        print(f"step {step}/{total}{share}  loss {loss}  {rate:.1f} steps/s", flush=True)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, int | str | float]:
        """The loss of the latest step, read only when the bar refreshes (one host sync per refresh)."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        if pl_module.last_loss is not None:
            metrics["loss"] = f"{float(pl_module.last_loss):.4g}"
        return metrics
