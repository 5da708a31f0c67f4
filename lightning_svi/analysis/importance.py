"""Importance-weighted log evidence, for any model and guide taking a ``batch`` dict.

With the guide q_φ as proposal and K draws z_k ~ q, the log weights are log w_k = log p_θ(x, z_k) − log q_φ(z_k),
and

    log p̂_θ(x) = log (1/K) Σ_k w_k  ≤  log p_θ(x)  on average   (the IWAE bound, Burda et al. 2016),

which tightens to the evidence as K grows, while the mean of the log weights is the ELBO of the same draws. Sites
that ``TraceEnum_ELBO`` sums out are summed out here too, per draw, by the same contraction; a latent site the guide
leaves out is drawn from its prior by the model, so its prior term belongs to the proposal and cancels from the
weight (with the empty guide the weights are likelihoods under the prior: valid, noisy).

The weights also say how good the guide is: Pareto-smoothed importance sampling's k̂ (Yao, Vehtari, Simpson & Gelman
2018, "Yes, but did it work?") — below 0.5 good, 0.5–0.7 usable, above 0.7 the guide misses posterior mass — and
their effective sample size. Draws run vectorized along a plate left of the model's plates, in chunks of bounded
memory; a model that does not broadcast over that plate is run one draw at a time, with fewer draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from pyro.infer.importance import LogWeightsMixin
from pyro.infer.traceenum_elbo import _compute_model_factors
from pyro.ops import packed
from pyro.ops.contract import contract_tensor_tree
from pyro.ops.stats import fit_generalized_pareto
from pyro.poutine import Trace

from lightning_svi.analysis.posterior import CHUNK_ELEMENTS, DRAWN_ELEMENTS, Batch, Sites, chunk_size, draw_in_chunks
from lightning_svi.core.sites import is_latent

PARTICLE_PLATE = "num_particles_vectorized"  # the plate Pyro's ELBO vectorizes particles along
NUM_PARTICLES = 1000
MAX_CHUNK = 1000  # particles in one vectorized pass, at most
SEQUENTIAL_PARTICLES = 200  # particles when the model does not vectorize: one model run each
MIN_PARTICLES = 100  # particles however large the model (k-hat needs a tail of its largest weights)
KHAT_GOOD, KHAT_USABLE = 0.5, 0.7


def khat_reading(khat: float | None) -> str | None:
    """Yao et al.'s reading of k̂: ``good`` (< 0.5), ``usable`` (0.5–0.7), else the guide misses posterior mass."""
    if khat is None or math.isnan(khat):
        return None
    if khat < KHAT_GOOD:
        return "good"
    if khat <= KHAT_USABLE:
        return "usable"
    return "guide misses posterior mass"


def psis_khat(log_weights: torch.Tensor) -> float:
    """k̂ of the largest weights: a generalized Pareto fitted to the tail (Pyro's ``fit_generalized_pareto``).

    The tail is chosen as ``pyro.infer.importance.psis_diagnostic`` chooses it (the largest min(0.2 K, 3 √K)
    weights); that function draws its own weights (without summing out enumerated sites) and returns only k̂, so the
    selection is repeated here for the weights computed once. ``inf`` when fewer than 10 weights are in the tail."""
    count = log_weights.numel()
    ordered = torch.sort(log_weights.double() - log_weights.max())[0]
    cutoff_index = -math.ceil(min(0.2 * count, 3.0 * math.sqrt(count))) - 1
    cutoff = max(math.log(1.0e-15), ordered[max(cutoff_index, -count)].item())
    tail = ordered[ordered > cutoff]
    if len(tail) < 10:
        return math.inf
    khat, _ = fit_generalized_pareto(tail.exp() - math.exp(cutoff))
    return float(khat)


@dataclass
class ImportanceEstimate(LogWeightsMixin):
    """The log weights of K guide draws and what follows from them (Pyro's ``LogWeightsMixin``: normalizer, ESS)."""

    log_weights: torch.Tensor  # (K,), float64
    note: str | None = None  # how to read the estimate (e.g. the proposal is the prior)
    khat: float = field(init=False)

    def __post_init__(self) -> None:
        self.log_weights = self.log_weights.detach().double().cpu()
        self.khat = psis_khat(self.log_weights)

    @property
    def num_particles(self) -> int:
        return self.log_weights.numel()

    @property
    def log_evidence(self) -> float:
        """log (1/K) Σ w_k: the IWAE bound on log p_θ(x)."""
        return float(self.get_log_normalizer())

    @property
    def log_evidence_se(self) -> float:
        """Monte Carlo standard error of ``log_evidence`` (delta method: sd(w) / (√K mean(w)))."""
        weights = (self.log_weights - self.log_weights.max()).exp()
        return float(weights.std() / (math.sqrt(self.num_particles) * weights.mean()))

    @property
    def elbo(self) -> float:
        """The ELBO of the same draws: the mean log weight."""
        return float(self.log_weights.mean())

    @property
    def elbo_se(self) -> float:
        return float(self.log_weights.std() / math.sqrt(self.num_particles))

    @property
    def gap(self) -> float:
        """log evidence − ELBO ≈ KL(q ‖ p(z | x)), from below (the IWAE bound is below the evidence)."""
        return self.log_evidence - self.elbo

    @property
    def gap_se(self) -> float:
        """The two errors combined as if independent; the two estimates share their draws and move together,
        so this is on the safe side."""
        return math.hypot(self.log_evidence_se, self.elbo_se)

    @property
    def ess(self) -> float:
        """Effective sample size of the normalized weights, 1 / Σ w̄²: K for a perfect guide."""
        return float(self.get_ESS())

    @property
    def reading(self) -> str | None:
        return khat_reading(self.khat)


class NotADensity(ValueError):
    """The guide has no density to weigh draws by (a point mass), so importance sampling does not apply."""


def _per_particle(term: torch.Tensor, symbol: str | None, particles: int) -> torch.Tensor:
    """A packed log-density term summed over every dimension but the particles' (``symbol``): shape (particles,)."""
    dims = term._pyro_dims
    if symbol is not None and symbol in dims:
        return torch.einsum(f"{dims}->{symbol}", term)
    return term.sum().expand(particles)


def trace_log_weights(model_trace: Trace, guide_trace: Trace, particles: int) -> torch.Tensor:
    """log p(x, z) − log q(z) per particle of one (vectorized) pair of packed traces, enumerated sites summed out.

    The model's factors and the dimensions to sum are ``TraceEnum_ELBO``'s own (``_compute_model_factors``); they are
    contracted as the loss contracts them, but kept apart per particle (``core.estimators.summed_out_log_density``
    adds the particles into one number). A latent site that the guide does not sample was drawn from its prior by
    the model: its prior term is the proposal's, and cancels."""
    symbol = guide_trace.plate_to_symbol.get(PARTICLE_PLATE)
    _, log_factors, _, sum_dims, scale = _compute_model_factors(model_trace, guide_trace)
    total = torch.zeros(particles, dtype=torch.float64)
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        log_prob = site["packed"]["log_prob"]
        drawn_from_prior = not site["is_observed"] and name not in guide_trace.nodes
        if drawn_from_prior or not sum_dims.isdisjoint(log_prob._pyro_dims):
            continue  # cancels, or is part of the contraction below
        total = total + _per_particle(log_prob, symbol, particles).double().cpu()
    if log_factors:
        for terms in contract_tensor_tree(log_factors, sum_dims).values():
            for term in terms:
                term = packed.scale_and_mask(term, scale=scale)
                total = total + _per_particle(term, symbol, particles).double().cpu()
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            total = total - _per_particle(site["packed"]["log_prob"], symbol, particles).double().cpu()
    return total


def _check_density(guide: Callable, data: Batch) -> str | None:
    """Raise ``NotADensity`` for a guide of point masses or one that enumerates; a note when the guide samples no
    latent (the proposal is the prior)."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(guide).get_trace(data)
    latent = [site for site in trace.nodes.values() if is_latent(site)]
    auxiliary = any(site["type"] == "sample" and site["infer"].get("is_auxiliary") for site in trace.nodes.values())
    enumerated = [site["name"] for site in latent if site["infer"].get("enumerate")]
    if enumerated:
        raise NotADensity(
            f"the guide enumerates {', '.join(enumerated[:3])}: its draws are not independent samples to weigh"
        )
    point_masses = [site["name"] for site in latent if isinstance(site["fn"], dist.Delta)]
    if point_masses and not auxiliary:
        raise NotADensity(
            f"the guide is a point mass at {', '.join(point_masses[:3])} (e.g. guide=delta): it has no density to "
            "weigh draws by, so no importance-weighted evidence"
        )
    if not latent:
        return (
            "the guide samples no latent site: the proposal is the prior and the weights are likelihoods (valid, noisy)"
        )
    return None


def affordable_particles(sites: Sites, num_particles: int = NUM_PARTICLES, drawn_elements: int = DRAWN_ELEMENTS) -> int:
    """``num_particles``, or fewer (at least ``MIN_PARTICLES``) where their draws would hold more than
    ``drawn_elements`` numbers: a bound on the time (a VAE over all its images costs a model run per draw)."""
    return min(num_particles, max(MIN_PARTICLES, drawn_elements // sites.elements_per_draw))


def importance_log_weights(
    model: Callable,
    guide: Callable,
    data: Batch,
    num_particles: int = NUM_PARTICLES,
    max_chunk: int = MAX_CHUNK,
    chunk_elements: int = CHUNK_ELEMENTS,
    sites: Sites | None = None,
) -> torch.Tensor:
    """The log weights of ``num_particles`` guide draws on ``data`` (the full data: a minibatch scale would be
    folded into them), in vectorized chunks of at most ``max_chunk`` draws and ``chunk_elements`` numbers; one
    draw at a time (at most ``SEQUENTIAL_PARTICLES``) for a model that does not vectorize."""
    sites = sites or Sites.of(model, guide, data)
    values = max((size for _, size in sites.enumerated.values()), default=1)
    chunk = max(2, min(max_chunk, chunk_size(sites.elements_per_draw * values, chunk_elements)))

    def weights_of(size: int) -> torch.Tensor:
        estimator = TraceEnum_ELBO(
            num_particles=size,
            vectorize_particles=size > 1,
            max_plate_nesting=sites.nesting,
            strict_enumeration_warning=False,
        )
        # Validation was done by the training run; here it would only warn that the empty guide is empty.
        with pyro.validation_enabled(False):
            (model_trace, guide_trace), *_ = estimator._get_traces(model, guide, (data,), {})
        return trace_log_weights(model_trace, guide_trace, size)

    def predict(size: int, parallel: bool) -> dict[str, torch.Tensor]:
        if parallel:
            return {"log_weights": weights_of(size)}
        return {"log_weights": torch.cat([weights_of(1) for _ in range(size)])}

    with torch.no_grad():
        chunks = draw_in_chunks(predict, num_particles, chunk, sequential_samples=SEQUENTIAL_PARTICLES)
        return torch.cat([draws["log_weights"] for draws in chunks])


def importance_estimate(
    model: Callable,
    guide: Callable,
    data: Batch,
    num_particles: int = NUM_PARTICLES,
    max_chunk: int = MAX_CHUNK,
) -> ImportanceEstimate:
    """The importance-weighted evidence, k̂ and ESS of ``guide`` for ``model`` on ``data``, with at most
    ``num_particles`` draws (``affordable_particles``); raises ``NotADensity`` for a guide of point masses."""
    notes = [_check_density(guide, data)]
    sites = Sites.of(model, guide, data)
    affordable = affordable_particles(sites, num_particles)
    if affordable < num_particles:
        notes.append(f"{affordable} of the {num_particles} particles asked for, to bound the work on a large model")
    log_weights = importance_log_weights(model, guide, data, affordable, max_chunk, sites=sites)
    return ImportanceEstimate(log_weights, "; ".join(note for note in notes if note) or None)
