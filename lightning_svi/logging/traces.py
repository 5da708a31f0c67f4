"""Log −ELBO, ELBO, log p and log q, and their per-site terms, from the training pass's own traces."""

from __future__ import annotations

import pytorch_lightning as pl

from lightning_svi.logging.step_logger import Metrics, StepLogger


class TraceLogger(StepLogger):
    """``train/loss``, ``train/elbo``, ``trace/log_p``, ``trace/log_q``, ``trace/log_p/<site>``, ``trace/log_q/<site>``.

    All taken from the same step, so ``train/elbo = trace/log_p − trace/log_q`` holds tag by tag.
    Under parallel enumeration the sites that depend on an enumerated site appear in ``log_p`` as one
    summed-out term, ``trace/log_p/marginal(<sites>)``, and one by one at a posterior sample of the
    enumerated values as ``trace/log_p_sampled/<site>`` (terms of log p(x, z, a), not of the ELBO).

    The posterior draw behind ``trace/log_p_sampled`` is the one piece of logging that runs the
    model again (Pyro's backward sampler and a replay), which costs about a step of a small model;
    it is logged on the first logging step at or past each multiple of ``sampled_every_n_steps``
    and on the last step (never when None). Everything else comes from the training pass.
    """

    def __init__(self, per_site: bool = True, sampled_every_n_steps: int | None = 1000) -> None:
        self.per_site = per_site
        self.sampled_every_n_steps = sampled_every_n_steps
        self._sampled_at: int | None = None

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
            if self._samples_at(trainer, step):
                self._sampled_at = step
                sampled = traces.log_p_sampled_sites
                metrics.update({f"trace/log_p_sampled/{site}": value for site, value in sampled.items()})
        return metrics

    def _samples_at(self, trainer: pl.Trainer, step: int) -> bool:
        every = self.sampled_every_n_steps
        if every is None:
            return False
        last = self._sampled_at
        return last is None or step == trainer.max_steps or step // every > last // every
