"""Write ``summary.json`` at the end of a run, also when it stops early or fails.

The summary (status, θ, φ, final, timing) is on disk first, when training ends; the posterior
section, the one heavy part, is computed afterwards (once Lightning has run every other callback's
end of training, the final checkpoint included) and the file rewritten with it. A crash or a kill
during the posterior work leaves the complete first summary.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_svi.analysis.posterior import posterior_summary
from lightning_svi.checkpointing.divergence_guard import TrainingDiverged
from lightning_svi.checkpointing.stop_signals import received_signal
from lightning_svi.core.svi_model import Batch
from lightning_svi.errors import UserInputError, one_line
from lightning_svi.logging.evidence import log_evidence
from lightning_svi.logging.step_logger import StepLogger, as_floats

FINAL_KEYS = ("loss", "elbo", "log_p", "log_q")


def to_json_value(value: torch.Tensor | float | None) -> Any:
    """A number for a scalar, nested lists for a tensor, None for None or a non-finite scalar."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    return _finite_or_none(value)


# A parameter with more elements (a network's weights) is summarised, not listed: the tutorial VAE's
# summary.json was 22 MB of weights. The checkpoint holds every value.
LISTED_ELEMENTS = 1_000


def parameter_json(value: torch.Tensor) -> Any:
    """θ or φ for ``summary.json``: as ``to_json_value``, or shape and moments past ``LISTED_ELEMENTS``."""
    if value.numel() <= LISTED_ELEMENTS:
        return to_json_value(value)
    value = value.detach().float()
    moments = {"mean": value.mean(), "sd": value.std(), "min": value.min(), "max": value.max()}
    return {"shape": list(value.shape), **{key: to_json_value(number) for key, number in moments.items()}}


def _finite_or_none(value: Any) -> Any:
    """None for each non-finite float, at any depth of nested lists (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite_or_none(item) for item in value]
    return value


def to_json_tree(value: Any) -> Any:
    """``to_json_value`` applied to every leaf of nested dicts."""
    if isinstance(value, dict):
        return {key: to_json_tree(item) for key, item in value.items()}
    return to_json_value(value)


def write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    """Write to a temporary file and rename it, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(temporary, path)


class RunSummary(StepLogger):
    """Keeps the last ``window`` logged steps and writes the run's ``summary.json`` (rank 0).

    ``final`` averages loss, ELBO, log p and log q over that window; ``gap`` is the closed-form
    log evidence under the final θ minus that average ELBO. Every rank keeps the same summary in
    ``summary`` (the logged values are averaged over ranks), so every rank can return it; the
    posterior section, drawn after training, is rank 0's alone.
    """

    def __init__(self, path: Path, names: dict[str, Any], full_data: Batch, window: int = 10) -> None:
        self.path = Path(path)
        self.names = names
        self.full_data = full_data
        # (step, loss, log p, log q) of the last logged steps
        self.recent: deque[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = deque(maxlen=window)
        self.started_at = time.perf_counter()
        self.timed_from: float | None = None
        self.timed_until: float | None = None
        self.steps_before_timing = 0  # the step count when timing starts, after the first batch
        self.steps_timed = 0  # optimizer steps, not batches: compiled mode runs several per batch
        self.summary: dict[str, Any] | None = None  # what was last written, for other callbacks to read
        self.posterior_pending = False  # the run ended well: its posterior section comes after the summary
        self.drawing_posterior = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """The loop's rate is timed from the end of its first batch (a fresh run's first step, which
        carries its one-off work: ``observed_steps``) to the end of its last."""
        now = time.perf_counter()
        if self.timed_from is None:
            self.timed_from = now
            self.steps_before_timing = trainer.global_step
        self.timed_until = now
        self.steps_timed = trainer.global_step - self.steps_before_timing

    def after_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        if pl_module.last_traces is not None:
            # The step's own tensors, read once when the summary is written: no op and no host sync
            # on the logging step.
            traces = pl_module.last_traces
            self.recent.append((step, pl_module.last_loss, traces.log_p, traces.log_q))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer, pl_module, "completed" if trainer.global_step >= trainer.max_steps else "stopped")
        self.posterior_pending = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The posterior section, after every callback's ``on_train_end`` (pictures, final checkpoint)
        and Lightning's teardown (the module is back on the CPU): rank 0 adds it to the summary it
        wrote and rewrites the file."""
        if not self.posterior_pending or self.summary is None or not trainer.is_global_zero:
            return
        self.posterior_pending, self.drawing_posterior = False, True
        summary = dict(self.summary)
        summary["posterior"] = self.posterior(pl_module)
        self.summary = summary
        write_json_atomically(self.path, summary)
        self.drawing_posterior = False

    def extend(self, trainer: pl.Trainer, final: dict[str, Any] | None = None, **sections: Any) -> None:
        """Add numbers computed after the summary was first written (``final`` keys, whole sections such as
        ``diagnostics``) and rewrite the file on rank 0: what was written before stays on disk until then."""
        if self.summary is None:
            return
        summary = dict(self.summary)
        if final:
            summary["final"] = {**summary["final"], **to_json_tree(final)}
        summary.update({key: to_json_tree(value) for key, value in sections.items()})
        self.summary = summary
        if trainer.is_global_zero:
            write_json_atomically(self.path, summary)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, UserInputError):
            return  # refused before training (e.g. a mismatched checkpoint): keep any earlier summary.json
        if self.drawing_posterior or self.posterior_pending:
            return  # training ended well (a failure or Ctrl-C in the end-of-run work): keep its complete summary
        if isinstance(exception, SIGTERMException):
            # Ctrl-C stops like SIGTERM (``stop_signals``), after a step and with a checkpoint.
            status, error = ("interrupted" if received_signal(trainer) == "SIGINT" else "preempted"), None
        elif isinstance(exception, TrainingDiverged):
            status, error = "diverged", str(exception)
        elif isinstance(exception, KeyboardInterrupt):
            status, error = "interrupted", str(exception)
        else:
            status, error = "failed", str(exception)
        try:
            self.write(trainer, pl_module, status, error=error)
        except OSError:
            # A full disk or a read-only run folder: no summary rather than an earlier one that says otherwise.
            self.path.unlink(missing_ok=True)
            raise

    def write_unstarted(self, status: str, error: str) -> None:
        """``summary.json`` of a run that failed before Lightning could start it (a Trainer that cannot be
        built here): the run's names, its status and the error; no steps, θ, φ or final values."""
        self.summary = {**self.names, "steps": 0, "status": status, "final": {}, "theta": {}, "phi": {}, "error": error}
        write_json_atomically(self.path, self.summary)

    def final_metrics(self, pl_module: pl.LightningModule) -> dict[str, float | None]:
        rows = [
            {"loss": loss, "elbo": -loss, "log_p": log_p, "log_q": log_q} for loss, log_p, log_q in self._recent_rows()
        ]
        rows = rows[len(rows) - self._rows_at_the_end(pl_module.trainer.max_steps) :]
        final: dict[str, float | None] = {
            key: sum(row[key] for row in rows) / len(rows) if rows else None for key in FINAL_KEYS
        }
        evidence = log_evidence(pl_module, self.full_data)
        final["log_evidence"] = None if evidence is None else float(evidence)
        final["gap"] = None if evidence is None or final["elbo"] is None else final["log_evidence"] - final["elbo"]
        return {key: to_json_value(value) for key, value in final.items()}

    def _recent_rows(self) -> list[list[float]]:
        values = as_floats([value for _, *row in self.recent for value in row])  # one copy to the host
        return [values[start : start + 3] for start in range(0, len(values), 3)]

    def _rows_at_the_end(self, max_steps: int) -> int:
        """How many of the kept logged steps lie in the run's last 5 % (at least the last one): a short
        run's average is of its end, not of its second half."""
        if not self.recent:
            return 0
        last = self.recent[-1][0]
        span = max(max_steps // 20, 1)
        return max(sum(1 for step, *_ in self.recent if step > last - span), 1)

    def posterior(self, pl_module: pl.LightningModule) -> dict[str, Any]:
        """``posterior_summary`` as JSON values; ``{"error": "..."}`` where it raised, never a failed run."""
        try:
            data = {name: tensor.to(pl_module.device) for name, tensor in self.full_data.items()}
            summary = posterior_summary(pl_module.model, pl_module.guide, data)
            return {site: to_json_tree(values) for site, values in summary.items()}
        except Exception as error:  # e.g. a model that cannot run on its full data at once
            return {"error": one_line(error)}

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, status: str, error: str | None = None) -> None:
        loop_seconds = (self.timed_until or 0.0) - (self.timed_from or 0.0)
        sides = pl_module.sides
        summary = {
            **self.names,
            "steps": trainer.global_step,
            "world_size": trainer.world_size,
            "status": status,
            "final": self.final_metrics(pl_module),
            # θ and φ are known once the warm-up has run; a run that failed before has none.
            "theta": {name: parameter_json(value) for name, value in sides.theta_values().items()} if sides else {},
            "phi": {name: parameter_json(value) for name, value in sides.phi_values().items()} if sides else {},
            "timing": {
                "wall_seconds": time.perf_counter() - self.started_at,
                "steps_per_second": self.steps_timed / loop_seconds if loop_seconds > 0 else None,
                # compile.enabled=true: tracing and compiling the step, before the loop (not in its rate)
                "compile_seconds": pl_module.engine.compile_seconds if pl_module.engine else None,
                # compile.backend=inductor: whether its cache (compile.cache_dir) held the compiled step
                "compile_cache_hit": pl_module.engine.compile_cache_hit if pl_module.engine else None,
            },
        }
        if getattr(pl_module, "compile_fallback", None) is not None:  # compile.enabled=true, but it trained eagerly
            summary["compile"] = {"fallback": pl_module.compile_fallback}
        if error is not None:
            summary["error"] = error
        self.summary = summary
        if trainer.is_global_zero:
            write_json_atomically(self.path, summary)
