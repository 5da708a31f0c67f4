"""ELBO estimators chosen from config, each keeping the traces of its last loss evaluation.

The callbacks read log p, log q and per-site terms from those traces, so logging never runs the
model a second time.
"""

from __future__ import annotations

from functools import cached_property

import pyro.infer
import torch
from pyro.poutine import Trace


class LogProbs:
    """log p and log q of one step, per site (``log_p_sites``, ``log_q_sites``) and in total."""

    log_p_sites: dict[str, torch.Tensor]
    log_q_sites: dict[str, torch.Tensor]

    @cached_property
    def log_p(self) -> torch.Tensor:
        return sum(self.log_p_sites.values(), torch.tensor(0.0))

    @cached_property
    def log_q(self) -> torch.Tensor:
        return sum(self.log_q_sites.values(), torch.tensor(0.0))


class ComputedLogProbs(LogProbs):
    """Per-site sums computed elsewhere, e.g. as outputs of the compiled step's graph."""

    def __init__(self, log_p_sites: dict[str, torch.Tensor], log_q_sites: dict[str, torch.Tensor]) -> None:
        self.log_p_sites = log_p_sites
        self.log_q_sites = log_q_sites


class StepTraces(LogProbs):
    """The model and guide traces of one loss evaluation (one per particle, or one vectorized).

    ``log_p`` = Σ ``model_trace.log_prob_sum()`` and ``log_q`` = Σ ``guide_trace.log_prob_sum()``,
    averaged over particles, so that ``elbo = log_p − log_q`` holds for the same step. Values are
    detached: reading them does not keep the autograd graph alive.
    """

    def __init__(self, pairs: list[tuple[Trace, Trace]], num_particles: int) -> None:
        self.pairs = pairs
        self.num_particles = num_particles

    def _site_sums(self, which: int) -> dict[str, torch.Tensor]:
        sums: dict[str, torch.Tensor] = {}
        for pair in self.pairs:
            for name, site in pair[which].nodes.items():
                if site["type"] != "sample":
                    continue
                value = (
                    site["log_prob_sum"].detach()
                    if "log_prob_sum" in site
                    else site["fn"].log_prob(site["value"]).detach().sum()
                )
                sums[name] = sums.get(name, 0.0) + value / self.num_particles
        return sums

    @cached_property
    def log_p_sites(self) -> dict[str, torch.Tensor]:
        """Per-site log-density sums of the model trace (latent and observed sites)."""
        return self._site_sums(0)

    @cached_property
    def log_q_sites(self) -> dict[str, torch.Tensor]:
        """Per-site log-density sums of the guide trace."""
        return self._site_sums(1)


class RecordsTraces:
    """Mixin for a Pyro ELBO: remembers the (model, guide) traces of the last ``differentiable_loss``."""

    last_traces: StepTraces | None = None

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        self._pairs.append((model_trace, guide_trace))
        return model_trace, guide_trace

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        self._pairs: list[tuple[Trace, Trace]] = []
        loss = self._differentiable_loss(model, guide, *args, **kwargs)
        # Either one trace per particle, or one vectorized trace summing all particles: the
        # particle average divides by num_particles in both cases.
        self.last_traces = StepTraces(self._pairs, self.num_particles)
        return loss

    def _differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return super().differentiable_loss(model, guide, *args, **kwargs)


class TraceGraphWithLoss(pyro.infer.TraceGraph_ELBO):
    """``TraceGraph_ELBO`` with a ``differentiable_loss``: the value is −ELBO, the gradient is that of
    Pyro's surrogate loss (score-function terms with their variance-reducing baselines)."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        elbo, surrogate_loss = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        return surrogate_loss - surrogate_loss.detach() - torch.as_tensor(elbo).detach()


def _recording(base: type) -> type:
    return type(f"Recording{base.__name__}", (RecordsTraces, base), {})


ESTIMATORS: dict[str, type] = {
    "TraceEnum_ELBO": _recording(pyro.infer.TraceEnum_ELBO),
    "Trace_ELBO": _recording(pyro.infer.Trace_ELBO),
    "TraceGraph_ELBO": _recording(TraceGraphWithLoss),
    "TraceMeanField_ELBO": _recording(pyro.infer.TraceMeanField_ELBO),
}


def build_estimator(
    name: str, num_particles: int = 1, vectorize_particles: bool = False, max_plate_nesting: int | None = None
) -> pyro.infer.ELBO:
    """The ELBO estimator ``name`` (a key of ``ESTIMATORS``), recording its traces."""
    options: dict = {"num_particles": num_particles, "vectorize_particles": vectorize_particles}
    if max_plate_nesting is not None:
        options["max_plate_nesting"] = max_plate_nesting
    return ESTIMATORS[name](**options)
