"""How good is the fit: importance-weighted evidence, PSIS k̂ and ESS of the guide, a NUTS reference, ``posterior.nc``.

Logged every ``every_n_steps`` steps (null: at the end only) and when training ends, on rank 0, on the full data
(a minibatch scale would be folded into the weights), with the training random stream left as it was: a run draws
the same training samples with or without diagnostics. At the end the numbers go into ``summary.json``
(``final.iw_*`` and a ``diagnostics`` section) right after its first writing; the NUTS reference (optional) and
``posterior.nc`` come last, after the summary's posterior section, so that a failure there leaves every number
before it on disk. None of it ever fails a run: what cannot be computed says why in ``summary.json``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from lightning_svi.analysis.arviz_export import netcdf_available, write_posterior_netcdf
from lightning_svi.analysis.importance import ImportanceEstimate, NotADensity, importance_estimate
from lightning_svi.analysis.reference import nuts_reference, reference_figure
from lightning_svi.core.rng import untouched_rng
from lightning_svi.core.svi_model import Batch
from lightning_svi.errors import one_line
from lightning_svi.logging.step_logger import log_figure, log_scalars
from lightning_svi.logging.summary import RunSummary

REFERENCE_TAG = "diagnostics/reference"
REFERENCES = ("nuts",)


def estimate_metrics(estimate: ImportanceEstimate) -> dict[str, float]:
    """The TensorBoard scalars of one estimate."""
    return {
        "evidence/iw_log_evidence": estimate.log_evidence,
        "evidence/iw_log_evidence_se": estimate.log_evidence_se,
        "evidence/iw_gap": estimate.gap,
        "diagnostics/psis_khat": estimate.khat,
        "diagnostics/ess": estimate.ess,
    }


def estimate_sections(
    compute: Callable[[], ImportanceEstimate],
) -> tuple[ImportanceEstimate | None, dict[str, Any], dict[str, Any]]:
    """The estimate ``compute`` returns, with ``summary.json``'s ``final.iw_*`` keys and ``diagnostics`` section
    for it; where it cannot be computed the keys are null and the section says why (``skipped``, ``error``).
    Shared by the end of a run and ``evaluate.py``."""
    started = time.perf_counter()
    final: dict[str, Any] = dict.fromkeys(("iw_log_evidence", "iw_log_evidence_se", "iw_gap", "iw_gap_se"))
    try:
        estimate = compute()
    except NotADensity as reason:
        return None, final, {"skipped": str(reason)}
    except Exception as error:
        return None, final, {"error": one_line(error)}
    final.update(
        iw_log_evidence=estimate.log_evidence,
        iw_log_evidence_se=estimate.log_evidence_se,
        iw_gap=estimate.gap,
        iw_gap_se=estimate.gap_se,
    )
    diagnostics: dict[str, Any] = {
        "num_particles": estimate.num_particles,
        "psis_khat": estimate.khat,
        "reading": estimate.reading,
        "ess": estimate.ess,
        "elbo": estimate.elbo,
        "seconds": time.perf_counter() - started,
    }
    notes = [estimate.note] if estimate.note else []
    if not math.isfinite(estimate.khat):  # JSON has no infinity: psis_khat is null, the note says why
        notes.append("psis_khat is infinite: fewer than 10 weights in the tail, one draw carries nearly all the weight")
    if notes:
        diagnostics["note"] = "; ".join(notes)
    return estimate, final, diagnostics


class GuideDiagnostics(pl.Callback):
    """Importance-weighted evidence with ``num_particles`` guide draws (at most ``max_chunk`` per vectorized pass),
    k̂ and ESS; ``reference="nuts"``: a NUTS run of ``reference_warmup`` + ``reference_draws`` steps at the end;
    ``path``: where ``posterior.nc`` goes (null: not written). Put it after the summary callback."""

    def __init__(
        self,
        full_data: Batch,
        run_summary: RunSummary,
        every_n_steps: int | None = None,
        num_particles: int = 1000,
        max_chunk: int = 1000,
        reference: str | None = None,
        reference_warmup: int = 200,
        reference_draws: int = 200,
        path: str | None = "posterior.nc",
    ) -> None:
        self.full_data = full_data
        self.run_summary = run_summary
        self.every_n_steps = every_n_steps
        self.num_particles = num_particles
        self.max_chunk = max_chunk
        self.reference = reference
        self.reference_warmup = reference_warmup
        self.reference_draws = reference_draws
        self.path = Path(path) if path else None
        self.estimate: ImportanceEstimate | None = None
        self._logged_at: int | None = None
        self._ended = False
        self._off = False  # the estimate failed during training: not tried again until the end

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if not self.every_n_steps or self._off or not trainer.is_global_zero:
            return
        # Several steps may run per batch: log once each time the step count passes a multiple.
        if step // self.every_n_steps > (self._logged_at or 0) // self.every_n_steps:
            try:
                self.estimate = self.log_estimate(trainer, pl_module)
            except Exception as error:  # diagnostics never end a training run
                rank_zero_warn(f"diagnostics during training turned off: {one_line(error)}")
                self._off = True

    def log_estimate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> ImportanceEstimate:
        self._logged_at = trainer.global_step
        data = {name: tensor.to(pl_module.device) for name, tensor in self.full_data.items()}
        with untouched_rng(pl_module.device), torch.no_grad():
            estimate = importance_estimate(pl_module.model, pl_module.guide, data, self.num_particles, self.max_chunk)
        log_scalars(trainer, estimate_metrics(estimate), trainer.global_step)
        return estimate

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ended = True
        if not trainer.is_global_zero:
            return

        def estimate() -> ImportanceEstimate:
            if self.estimate is None or self._logged_at != trainer.global_step:  # not yet at this step
                self.estimate = self.log_estimate(trainer, pl_module)
            return self.estimate

        _, final, diagnostics = estimate_sections(estimate)
        self.run_summary.extend(trainer, final=final, diagnostics=diagnostics)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The heavy parts, after the summary's posterior section: the NUTS reference, then ``posterior.nc``."""
        if not self._ended or not trainer.is_global_zero:
            return
        self._ended = False
        data = {name: tensor.to(pl_module.device) for name, tensor in self.full_data.items()}
        if self.reference == "nuts":
            self.run_summary.extend(trainer, reference=self.nuts(trainer, pl_module, data))
        if self.path is not None:
            self.write_posterior(pl_module, data)

    def nuts(self, trainer: pl.Trainer, pl_module: pl.LightningModule, data: Batch) -> dict[str, Any]:
        try:
            with untouched_rng(pl_module.device):
                reference = nuts_reference(
                    pl_module.model, pl_module.guide, data, self.reference_warmup, self.reference_draws
                )
            log_figure(trainer, REFERENCE_TAG, reference_figure(reference), trainer.global_step)
            return reference
        except Exception as error:  # e.g. a model too large for NUTS
            return {"method": "nuts", "error": one_line(error)}

    def write_posterior(self, pl_module: pl.LightningModule, data: Batch) -> None:
        if not netcdf_available():
            rank_zero_warn(
                f"{self.path.name} skipped: ArviZ's file needs xarray and h5netcdf (pip install -e .[arviz])"
            )
            return
        try:
            with untouched_rng(pl_module.device):
                log_weights = self.estimate.log_weights if self.estimate is not None else None
                write_posterior_netcdf(pl_module.model, pl_module.guide, data, self.path, log_weights)
        except Exception as error:
            rank_zero_warn(f"{self.path.name} not written: {one_line(error)}")
