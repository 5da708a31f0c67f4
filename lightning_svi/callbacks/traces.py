"""Log −ELBO, ELBO, log p and log q, and their per-site terms, from the training pass's own traces."""

from __future__ import annotations

import pytorch_lightning as pl

from lightning_svi.callbacks.logging import StepLogger, log_scalars


class TraceLogger(StepLogger):
    """``train/loss``, ``train/elbo``, ``trace/log_p``, ``trace/log_q``, ``trace/log_p/<site>``, ``trace/log_q/<site>``.

    All taken from the same step, so ``train/elbo = trace/log_p − trace/log_q`` holds tag by tag.
    Under parallel enumeration the sites that depend on an enumerated site appear in ``log_p`` as one
    summed-out term, ``trace/log_p/marginal(<sites>)``, and one by one at a posterior sample of the
    enumerated values as ``trace/log_p_sampled/<site>`` (terms of log p(x, z, a), not of the ELBO).
    """

    def __init__(self, per_site: bool = True) -> None:
        self.per_site = per_site

    def after_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        if pl_module.last_traces is None:
            return
        traces = pl_module.last_traces
        metrics = {
            "train/loss": pl_module.last_loss,
            "train/elbo": -pl_module.last_loss,
            "trace/log_p": traces.log_p,
            "trace/log_q": traces.log_q,
        }
        if self.per_site:
            metrics.update({f"trace/log_p/{site}": value for site, value in traces.log_p_sites.items()})
            metrics.update({f"trace/log_q/{site}": value for site, value in traces.log_q_sites.items()})
            metrics.update({f"trace/log_p_sampled/{site}": value for site, value in traces.log_p_sampled_sites.items()})
        log_scalars(trainer, metrics, step)
