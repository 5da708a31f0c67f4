"""Log −ELBO, ELBO, log p and log q, and their per-site terms, from the training pass's own traces."""

from __future__ import annotations

import pytorch_lightning as pl

from lightning_svi.core.estimators import LogProbs
from lightning_svi.logging.step_logger import Cadence, Metrics, StepLogger, log_scalars


class TraceLogger(StepLogger):
    """``train/loss``, ``train/elbo``, ``trace/log_p``, ``trace/log_q``, ``trace/log_p/<site>``, ``trace/log_q/<site>``.

    All taken from the same step, so ``train/elbo = trace/log_p − trace/log_q`` holds tag by tag.
    Under parallel enumeration the sites that depend on an enumerated site appear in ``log_p`` as one
    summed-out term, ``trace/log_p/marginal(<sites>)``, and one by one at a posterior sample of the
    enumerated values as ``trace/log_p_sampled/<site>`` (terms of log p(x, z, a), not of the ELBO).

    The posterior draw behind ``trace/log_p_sampled`` is the one piece of logging that runs the
    model again (Pyro's backward sampler and a replay), which costs about a step of a small model
    (a hundred compiled steps of the 10,000-point GMM); it is logged on the first logging step at or
    past each multiple of ``sampled_every_n_steps`` and, at the end of training, for the last step
    (never when None). Everything else comes from the training pass.
    """

    def __init__(self, per_site: bool = True, sampled_every_n_steps: int | None = 1000) -> None:
        self.per_site = per_site
        # The last step's draw waits for the end of training (``on_train_end``).
        self.sampled = Cadence(sampled_every_n_steps, "sampled_every_n_steps", last_step=False)

    def after_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> Metrics | None:
        if pl_module.last_traces is None:
            return None
        traces = pl_module.last_traces
        metrics: Metrics = {
            "train/loss": pl_module.last_loss,
            "train/elbo": -pl_module.last_loss,
            "trace/log_p": traces.log_p,
            "trace/log_q": traces.log_q,
        }
        if self.per_site:
            metrics.update({f"trace/log_p/{site}": value for site, value in traces.log_p_sites.items()})
            metrics.update({f"trace/log_q/{site}": value for site, value in traces.log_q_sites.items()})
            if self.sampled.due(trainer, step):
                metrics.update(_sampled(traces))
        return metrics

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The last step's draw, made after the loop (out of its timing), from the traces and
        parameters that step left; also for a run stopped before ``max_steps``."""
        step, traces, sampled = trainer.global_step, pl_module.last_traces, self.sampled
        if self.per_site and sampled.every_n_steps is not None and traces is not None and sampled.latest != step:
            sampled.latest = step
            log_scalars(trainer, _sampled(traces), step)


def _sampled(traces: LogProbs) -> Metrics:
    return {f"trace/log_p_sampled/{site}": value for site, value in traces.log_p_sampled_sites.items()}
