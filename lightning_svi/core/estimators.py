"""ELBO estimators chosen from config, each keeping the traces of its last loss evaluation.

The callbacks read log p, log q and per-site terms from those traces, so logging never runs the
model a second time for them. Under parallel enumeration the model trace holds every value of
each enumerated site at once: its ``log_prob_sum()`` sums over all of them and is not a log
density, so log p is the contraction that ``TraceEnum_ELBO`` itself computes (enumerated sites
summed out), and per-site terms of the enumerated sites come from one posterior sample of them.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from types import SimpleNamespace

import pyro.infer
import pyro.ops.einsum.torch_sample
import torch
from opt_einsum import shared_intermediates
from pyro import poutine
from pyro.infer.discrete import TraceEnumSample_ELBO
from pyro.infer.traceenum_elbo import _compute_model_factors
from pyro.ops import packed
from pyro.ops.contract import contract_tensor_tree
from pyro.ops.rings import SampleRing
from pyro.poutine import Trace

from lightning_svi.config.targets import check_target, constructing, locate, target_path
from lightning_svi.config.targets import options as target_options
from lightning_svi.core.rng import untouched_rng
from lightning_svi.core.sites import holds_enumerated_values
from lightning_svi.errors import ConfigError


def summed_out_log_density(model_trace: Trace, guide_trace: Trace) -> tuple[list[str], torch.Tensor]:
    """The model sites whose log-probs depend on a parallel-enumerated site, and their joint log
    density with the enumerated values summed out (scaled like the ELBO: an estimate for the full data).

    It is the contraction ``TraceEnum_ELBO`` computes for its loss, redone from the same trace with
    the loss's cache of intermediate results (``model_trace._sharing_cache``, which Pyro keeps for
    ``TraceEnumSample_ELBO``): every einsum is then a cache hit, 75 µs instead of 1.8 ms on a
    10,000-point mixture. Without that cache it is contracted anew.
    """
    _, log_factors, _, sum_dims, scale = _compute_model_factors(model_trace, guide_trace)
    dim_to_size = {
        dim: size
        for terms in log_factors.values()
        for term in terms
        for dim, size in zip(term._pyro_dims, term.shape, strict=True)
    }
    with torch.no_grad(), shared_intermediates(getattr(model_trace, "_sharing_cache", None)) as cache:
        # The same ring as the loss's: cache entries are keyed by the ring's operations.
        contracted = contract_tensor_tree(log_factors, sum_dims, ring=SampleRing(cache=cache, dim_to_size=dim_to_size))
        total = sum(packed.scale_and_mask(term, scale=scale).sum() for terms in contracted.values() for term in terms)
    names = [
        name
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample"
        and name not in guide_trace.nodes
        and not sum_dims.isdisjoint(site["packed"]["log_prob"]._pyro_dims)
    ]
    return names, total.detach()


def summed_out_sites(model_trace: Trace, guide_trace: Trace) -> list[str]:
    """The model sites whose log-probs depend on a parallel-enumerated site, as ``summed_out_log_density``
    names them, without its contraction: for a guide that enumerates nothing, the sites outside the guide
    whose packed log-prob has a dimension that is no plate's (only enumeration allocates such dimensions)."""
    plates = set(model_trace.plate_to_symbol.values())
    return [
        name
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample"
        and name not in guide_trace.nodes
        and not plates.issuperset(site["packed"]["log_prob"]._pyro_dims)
    ]


def marginal_site_name(names: list[str], max_listed: int = 4) -> str:
    """The per-site key of a block of sites whose enumerated values are summed out, e.g.
    ``marginal(assignment,x)``; a long block (an HMM's chain) by its ends and size:
    ``marginal(x_0..y_29, 60 sites)``, a tag TensorBoard can show."""
    if len(names) <= max_listed:
        return f"marginal({','.join(names)})"
    return f"marginal({names[0]}..{names[-1]}, {len(names)} sites)"


def _total(sites: dict[str, torch.Tensor]) -> torch.Tensor:
    return functools.reduce(operator.add, sites.values()) if sites else torch.tensor(0.0)


class LogProbs:
    """log p and log q of one step, per site (``log_p_sites``, ``log_q_sites``) and in total."""

    log_p_sites: dict[str, torch.Tensor]
    log_q_sites: dict[str, torch.Tensor]
    log_p_sampled_sites: dict[str, torch.Tensor] = {}  # noqa: RUF012 - read-only default

    @cached_property
    def log_p(self) -> torch.Tensor:
        return _total(self.log_p_sites)

    @cached_property
    def log_q(self) -> torch.Tensor:
        return _total(self.log_q_sites)


class ComputedLogProbs(LogProbs):
    """Per-site sums computed elsewhere: outputs of the compiled step's graph, or averages over DDP
    ranks; ``sampled`` computes ``log_p_sampled_sites`` when they are read."""

    def __init__(
        self,
        log_p_sites: dict[str, torch.Tensor],
        log_q_sites: dict[str, torch.Tensor],
        sampled: Callable[[], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        self.log_p_sites = log_p_sites
        self.log_q_sites = log_q_sites
        self._sampled = sampled

    @cached_property
    def log_p_sampled_sites(self) -> dict[str, torch.Tensor]:
        return self._sampled() if self._sampled is not None else {}


class StepTraces(LogProbs):
    """The model and guide traces of one loss evaluation (one per particle, or one vectorized).

    ``log_p`` is the model's log density and ``log_q`` = Σ ``guide_trace.log_prob_sum()``, both
    averaged over particles, so that ``elbo = log_p − log_q`` holds for the same step. Sites that
    depend on an enumerated site enter ``log_p`` as one summed-out term, ``marginal(<sites>)``;
    ``log_p_sampled_sites`` gives their per-site terms at one posterior sample of the enumerated
    values (``sample_enumerated``, called only when read). Values are detached.

    With the step's ``loss`` and a guide that enumerates nothing, the summed-out term is what the
    loss leaves: −loss = log p − log q in value (Dice's factors are 1 in the forward pass), so it is
    −loss + log q minus the other sites' terms, and logging contracts nothing: on the Pyro GMM
    tutorial's step (``tests/pyro_models/gmm.py``, one thread) ``log_p_sites`` and ``log_q_sites``
    take 0.12 ms instead of 0.42 ms with the loss's contraction cache (medians of 180 steps, a
    scratch timing loop), 0.5 ms instead of 1.6 ms under cProfile of the training loop that
    ``scripts/bench.py --settings tutorial-gmm --modes log-every-step`` runs.
    """

    def __init__(
        self,
        pairs: list[tuple[Trace, Trace]],
        num_particles: int,
        sample_enumerated: Callable[[], tuple[Trace, int]] | None = None,
        loss: torch.Tensor | None = None,
    ) -> None:
        self.pairs = pairs
        self.num_particles = num_particles
        self.sample_enumerated = sample_enumerated
        self.loss = loss

    @cached_property
    def is_enumerated(self) -> bool:
        return any(
            holds_enumerated_values(site) for model_trace, _ in self.pairs for site in model_trace.nodes.values()
        )

    def _add(self, sums: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
        if self.num_particles != 1:
            value = value / self.num_particles
        sums[name] = sums[name] + value if name in sums else value

    def _site_sums(self, trace: Trace, skip: list[str], sums: dict[str, torch.Tensor]) -> None:
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or name in skip:
                continue
            value = site["log_prob_sum"] if "log_prob_sum" in site else site["fn"].log_prob(site["value"]).sum()
            self._add(sums, name, value.detach())

    @cached_property
    def _summed_out(self) -> list[tuple[list[str], torch.Tensor]]:
        """``summed_out_log_density`` of each (model, guide) pair: the contraction is done once."""
        return [summed_out_log_density(model_trace, guide_trace) for model_trace, guide_trace in self.pairs]

    @cached_property
    def _summed_out_names(self) -> list[str] | None:
        """The summed-out sites, when the loss gives their term (``loss`` known, a guide that enumerates
        nothing, the same sites in every particle); else None."""
        if self.loss is None or any(
            site["type"] == "sample" and site["infer"].get("enumerate")
            for _, guide_trace in self.pairs
            for site in guide_trace.nodes.values()
        ):
            return None
        names = [summed_out_sites(model_trace, guide_trace) for model_trace, guide_trace in self.pairs]
        return names[0] if all(found == names[0] for found in names) else None

    @cached_property
    def log_p_sites(self) -> dict[str, torch.Tensor]:
        """Per-site log-density sums of the model trace, one summed-out term for enumerated blocks."""
        sums: dict[str, torch.Tensor] = {}
        names = self._summed_out_names if self.is_enumerated else None
        if names is not None:
            for model_trace, _ in self.pairs:
                self._site_sums(model_trace, names, sums)
            marginal = -self.loss + self.log_q - _total(sums)
            return {marginal_site_name(names): marginal, **sums}
        for index, (model_trace, _) in enumerate(self.pairs):
            summed_out: list[str] = []
            if self.is_enumerated:
                summed_out, value = self._summed_out[index]
                self._add(sums, marginal_site_name(summed_out), value)
            self._site_sums(model_trace, summed_out, sums)
        return sums

    @cached_property
    def log_q_sites(self) -> dict[str, torch.Tensor]:
        """Per-site log-density sums of the guide trace."""
        sums: dict[str, torch.Tensor] = {}
        for _, guide_trace in self.pairs:
            self._site_sums(guide_trace, [], sums)
        return sums

    @cached_property
    def log_p_sampled_sites(self) -> dict[str, torch.Tensor]:
        """Log-probs of the sites in enumerated blocks at one posterior sample of the enumerated values
        (Pyro's ``infer_discrete`` given the step's guide sample): terms of log p(x, z, a), not of log p(x, z)."""
        if not self.is_enumerated or self.sample_enumerated is None:
            return {}
        with torch.no_grad():
            trace, particles = self.sample_enumerated()
            trace.compute_log_prob()
        names = self._summed_out_names
        if names is None:
            names, _ = self._summed_out[-1]
        return {name: trace.nodes[name]["log_prob_sum"].detach() / particles for name in names}


class InverseCdfCategorical:
    """A categorical draw by inverting the cumulative weights: exact, and for many rows of a few
    categories a tenth of the time of ``Categorical(logits).sample()`` on the CPU (whose softmax
    and ``torch.multinomial`` cost ~2 ms for 10,000 rows of 3, more than the model's own step)."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def sample(self) -> torch.Tensor:
        cumulative = (self.logits - self.logits.amax(-1, keepdim=True)).exp().cumsum(-1)
        total = cumulative[..., -1:]
        uniform = torch.rand(total.shape, dtype=total.dtype, device=total.device) * total
        # The count of cumulative weights below u is k with probability p_k; rounding can leave
        # u above the last one, hence the clamp.
        return (cumulative < uniform).sum(-1).clamp_(max=cumulative.shape[-1] - 1)


@contextmanager
def fast_backward_sampling() -> Iterator[None]:
    """Pyro's backward sampler (``pyro.ops.einsum.torch_sample``, behind ``infer_discrete`` and
    ``TraceEnumSample_ELBO.sample_saved``) draws each enumerated block with ``dist.Categorical``;
    within the block it draws with ``InverseCdfCategorical`` instead, the same distribution.

    Still pays with ``steps_per_batch`` amortising Lightning: a logged step of the 10,000-point GMM
    (``scripts/bench.py --settings gmm-10k``) draws its assignments in 24 ms instead of 43 ms, against
    67 ms for the step's loss (medians of 60 interleaved draws, one thread, on a shared 2-core machine)."""
    module = pyro.ops.einsum.torch_sample
    original = module.dist
    module.dist = SimpleNamespace(Categorical=InverseCdfCategorical)
    try:
        yield
    finally:
        module.dist = original


class RecordsTraces:
    """Mixin for a Pyro ELBO: remembers the (model, guide) traces of the last ``differentiable_loss``."""

    last_traces: StepTraces | None = None
    read = True  # whether the evaluation's traces are read past its loss (``unread``)

    @contextmanager
    def unread(self) -> Iterator[None]:
        """Evaluations that nobody reads past their loss (a step no logger looks at): the estimator
        may skip what only a reader needs."""
        self.read = False
        try:
            yield
        finally:
            self.read = True

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        self._pairs.append((model_trace, guide_trace))
        return model_trace, guide_trace

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        self.release_traces()
        self._pairs: list[tuple[Trace, Trace]] = []
        loss = self._differentiable_loss(model, guide, *args, **kwargs)
        # Either one trace per particle, or one vectorized trace summing all particles: the
        # particle average divides by num_particles in both cases.
        value = loss.detach() if isinstance(loss, torch.Tensor) else None
        self.last_traces = StepTraces(self._pairs, self.num_particles, self._enumerated_sampler(), value)
        self._pairs = []
        return loss

    def release_traces(self) -> None:
        """Forgets the last evaluation's traces, once nobody will read them. A step's traces are
        thousands of Python objects: kept into the next step, they outlive the collector's young
        generations and land in the oldest, which every full collection then walks (Pyro's HMM example
        ran full collections every few dozen steps; plain Pyro's loop, which drops its traces, none)."""
        self.last_traces = None

    def _differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return super().differentiable_loss(model, guide, *args, **kwargs)

    def _enumerated_sampler(self) -> Callable[[], tuple[Trace, int]] | None:
        return None


class RecordsEnumeratedSamples(RecordsTraces):
    """For ``TraceEnumSample_ELBO``: samples the enumerated sites of the last particle on demand,
    reusing the step's contraction (one extra model pass, on logging steps only)."""

    def _get_trace(self, model, guide, args, kwargs):
        if self.read:
            return super()._get_trace(model, guide, args, kwargs)
        # TraceEnum_ELBO's traces without TraceEnumSample_ELBO's require_backward marks, which only the
        # backward sampler reads and which cost about 3% of a step of Pyro's HMM example.
        pair = pyro.infer.TraceEnum_ELBO._get_trace(self, model, guide, args, kwargs)
        self._pairs.append(pair)
        return pair

    def _enumerated_sampler(self) -> Callable[[], tuple[Trace, int]] | None:
        particles = self.num_particles if self.vectorize_particles else 1
        saved = self.__dict__.pop("_saved_state", None)  # the step's traces: the sampler holds them, not the estimator
        return None if saved is None else lambda: (self._sample_from(saved), particles)

    def _sample_from(self, saved: tuple) -> Trace:
        """Drawn for logging only: the training run's random stream is left as it was."""
        _, model_trace, *_ = saved
        device = next(site["value"].device for site in model_trace.nodes.values() if site["type"] == "sample")
        self._saved_state = saved  # what ``sample_saved`` reads
        try:
            with untouched_rng(device), fast_backward_sampling():
                return poutine.trace(self.sample_saved).get_trace()
        finally:
            del self._saved_state


class TraceGraphWithLoss(pyro.infer.TraceGraph_ELBO):
    """``TraceGraph_ELBO`` with a ``differentiable_loss``: the value is −ELBO, the gradient is that of
    Pyro's surrogate loss (score-function terms with their variance-reducing baselines)."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        elbo, surrogate_loss = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        return surrogate_loss - surrogate_loss.detach() - torch.as_tensor(elbo).detach()


def is_flat_estimate(traces: StepTraces) -> bool:
    """Whether ``TraceEnum_ELBO``'s estimate on these traces is ``Trace_ELBO``'s, term for term: no site
    of the model or guide is enumerated (nothing to sum out) and every guide site is reparameterized
    (every Dice factor is 1, in value and in gradient)."""
    for model_trace, guide_trace in traces.pairs:
        for trace in (model_trace, guide_trace):
            if any(site["type"] == "sample" and site["infer"].get("enumerate") for site in trace.nodes.values()):
                return False
        if any(
            site["type"] == "sample" and not site["is_observed"] and not site["fn"].has_rsample
            for site in guide_trace.nodes.values()
        ):
            return False
    return True


class RecordingTraceEnum_ELBO(RecordsEnumeratedSamples, TraceEnumSample_ELBO):
    """``TraceEnum_ELBO`` (through ``TraceEnumSample_ELBO``, which keeps the contraction for sampling the
    enumerated sites), recording its traces.

    ``TraceEnum_ELBO`` is every model's default here, enumerated or not. Without enumerated sites and with
    a reparameterized guide (``is_flat_estimate``: the beta-Bernoulli, a VAE, any ``AutoNormal`` fit) its
    estimate is ``Trace_ELBO``'s, so once the first evaluation's traces show that, the loss is evaluated
    through ``Trace_ELBO``, which skips the Dice factors, the packing of every log-prob and the
    contraction: the same θ and φ, step for step; on the 5,000-flip beta-Bernoulli logging every 10
    steps, 2.09x plain Pyro's ``TraceEnum_ELBO`` step at ca03844 where it had been 1.31x (docs/performance.md,
    "What changed in the sixth session", ``scripts/bench.py --settings all``). A later step whose traces show
    otherwise (a program whose sites change) is evaluated again through ``TraceEnum_ELBO``, and so is
    every step after it. Pyro's warning that no site is enumerated is off unless the config turns it on."""

    def __init__(self, *args, strict_enumeration_warning: bool = False, **kwargs) -> None:
        super().__init__(*args, strict_enumeration_warning=strict_enumeration_warning, **kwargs)
        self._flat: RecordsTraces | None = None  # the Trace_ELBO evaluating the loss, once shown equal
        self._first_evaluation = True

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        if self._flat is not None:
            self.release_traces()
            loss = self._flat.differentiable_loss(model, guide, *args, **kwargs)
            if is_flat_estimate(self._flat.last_traces):
                self.last_traces = self._flat.last_traces
                return loss
            self._flat = None  # the program changed: TraceEnum_ELBO from now on
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        if self._first_evaluation:
            self._first_evaluation = False
            if is_flat_estimate(self.last_traces):
                self._flat = recording(pyro.infer.Trace_ELBO)(
                    num_particles=self.num_particles,
                    max_plate_nesting=self.max_plate_nesting,  # found by this evaluation where it was not set
                    vectorize_particles=self.vectorize_particles,
                )
        return loss


# Pyro ELBOs recorded through a class of their own: the enumerated one samples its summed-out sites
# from the loss's contraction, and TraceGraph_ELBO has no differentiable_loss of its own.
RECORDED_AS: dict[type, type] = {
    pyro.infer.TraceEnum_ELBO: RecordingTraceEnum_ELBO,
    pyro.infer.TraceGraph_ELBO: TraceGraphWithLoss,
}


@functools.cache
def recording(elbo_class: type) -> type:
    """The trace-recording variant of a Pyro ELBO class: ``RecordsTraces`` mixed into it (or into the
    class that ``RECORDED_AS`` gives it). Built once per class."""
    base = RECORDED_AS.get(elbo_class, elbo_class)
    if issubclass(base, RecordsTraces):
        return base
    return type(f"Recording{base.__name__}", (RecordsTraces, base), {"__module__": __name__})


def check_elbo_class(found: object, target: str, key: str = "elbo") -> type:
    """``found`` is a Pyro ELBO class lightning-svi can train with: one with a ``differentiable_loss``."""
    if not (isinstance(found, type) and issubclass(found, pyro.infer.ELBO)):
        raise ConfigError(f"{key}._target_={target}: not a Pyro ELBO class (a subclass of pyro.infer.ELBO).")
    if not hasattr(RECORDED_AS.get(found, found), "differentiable_loss"):
        raise ConfigError(
            f"{key}._target_={target}: has no differentiable_loss, which lightning-svi trains with; "
            "use e.g. pyro.infer.Trace_ELBO or pyro.infer.TraceEnum_ELBO."
        )
    return found


def build_estimator(elbo: Mapping | str, **options: object) -> pyro.infer.ELBO:
    """The Pyro ELBO that the ``elbo`` config node names (``_target_: pyro.infer.TraceEnum_ELBO`` with its
    options), as its trace-recording variant (``recording``).

    ``elbo`` may also be a class name of ``pyro.infer`` or a dotted path, with the ``options`` as keywords:
    ``build_estimator("Trace_ELBO", num_particles=4)``."""
    if isinstance(elbo, str):
        elbo = {"_target_": elbo if "." in elbo else f"pyro.infer.{elbo}", **options}
    elif options:
        raise TypeError("build_estimator takes options as keywords only with a class name")
    check_elbo_class(locate(target_path(elbo, "elbo"), "elbo"), elbo["_target_"])
    found = check_target(elbo, "elbo", complete=True)
    arguments = target_options(elbo)
    if arguments.get("max_plate_nesting", 0) is None:
        del arguments["max_plate_nesting"]  # Pyro's default: found by tracing the model once
    with constructing(elbo, "elbo"):
        return recording(found)(**arguments)


def explain_vectorization_error(
    error: BaseException, estimator: pyro.infer.ELBO, retry: Callable[[], object] | None = None
) -> str | None:
    """The one-line reason to give when the first loss evaluation raised ``error`` because the particles
    were vectorized, or None when vectorization is not to blame.

    Vectorized particles run the model once with an extra batch dimension left of its plates; a model
    that is not written to broadcast over it (``x @ w.t()`` on a batched ``w``) fails with a shape error
    that names nothing the user set. With ``retry`` (the same loss evaluation), vectorization is blamed
    only if the evaluation succeeds without it; the estimator is left as it was either way."""
    if not getattr(estimator, "vectorize_particles", False) or getattr(estimator, "num_particles", 1) == 1:
        return None
    if retry is not None:
        estimator.vectorize_particles = False
        try:
            retry()
        except Exception:
            return None
        finally:
            estimator.vectorize_particles = True
    reason = " ".join(f"{type(error).__name__}: {error}".split())
    return (
        f"elbo.vectorize_particles=true: the model fails when its elbo.num_particles={estimator.num_particles} "
        f"particles run as one vectorized batch ({reason}); set elbo.vectorize_particles=false (one model "
        "pass per particle), or write the model so that it broadcasts over a batch dimension left of its plates."
    )
