"""Posterior summaries at the end of a run, for any Pyro model and guide taking a ``batch`` dict.

Latent sites are summarised from guide draws (Pyro's ``Predictive``: a site the guide leaves out
is drawn from the model's prior, as the ELBO does): mean, sd, 5% and 95% quantiles, beside the
exact posterior where the model has one in closed form. Sites that ``TraceEnum_ELBO`` sums out get
their posterior probabilities given the data, averaged over guide draws of the other latents
(``TraceEnum_ELBO.compute_marginals``). Observed sites get a posterior predictive check on a row
subsample (``Predictive`` of the model with its observations released, ``ReleaseObserved``).

Memory is bounded, whatever the model: draws come in chunks of at most ``CHUNK_ELEMENTS`` numbers
(the sample sites of one draw times the draws of a chunk), and at most ``SITE_ELEMENTS`` elements
of a site are kept and summarised (the entry says so in ``note``). Time is bounded too: a part whose
draws over all rows would hold more than ``DRAWN_ELEMENTS`` numbers draws on fewer rows (``note``,
``ppc.rows``). A model written for one draw (``x @ w`` with a 1-D ``w``, indexing a matrix by an
enumerated state) fails when vectorized over a draw dimension: then draws are sequential,
``parallel=False``, fewer of them (``SEQUENTIAL_SAMPLES``).
A part that raises gives ``{"error": "..."}`` for its sites, never a failed run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Predictive, TraceEnum_ELBO
from pyro.poutine import Trace
from pyro.poutine.uncondition_messenger import UnconditionMessenger
from pyro.poutine.util import site_is_subsample

from lightning_svi.core.sites import is_enumerated, is_latent, is_observed
from lightning_svi.errors import one_line

Batch = dict[str, torch.Tensor]

QUANTILES = (0.05, 0.95)
NUM_SAMPLES = 1000
ENUMERATED_SAMPLES = 100  # guide draws that each enumerated site's exact conditional marginals are averaged over
ENUMERATED_SEQUENTIAL_SAMPLES = 20  # the same, one model run each (a markov chain: T contractions per run)
SEQUENTIAL_SAMPLES = 200  # draws when the model does not vectorize: one model run each
CHUNK_ELEMENTS = 20_000_000  # numbers the sample sites of one chunk of draws hold together (~80 MB in float32)
KEPT_ELEMENTS = 20_000_000  # numbers of all kept draws together; fewer draws (at least 50) beyond that
SITE_ELEMENTS = 10_000  # elements of a site summarised; the first ones in row-major order
CHECK_ROWS = 500  # data rows of the posterior predictive check
# Numbers the sample sites of all draws of one part hold together: a bound on its time (seconds, not
# minutes). Beyond it a part draws on fewer rows: 1,000 draws of the VAE tutorial's model over 4,096
# 784-pixel images (3.6 million numbers a draw) took 8 minutes; on 568 rows, a seventh of that.
DRAWN_ELEMENTS = 500_000_000
EXACT_SAMPLES = 20_000


class ReleaseObserved(UnconditionMessenger):
    """``poutine.uncondition`` for data sites only: a plate's subsample (which Pyro records as an
    observed site) and a ``pyro.deterministic`` value keep their values. Pyro's own would draw a new
    subsample of rows, misaligned with the data and with the guide's rows."""

    def _pyro_sample(self, msg: dict) -> None:
        if is_observed(msg):
            super()._pyro_sample(msg)


def plate_nesting(*traces: Trace) -> int:
    """How many batch dimensions the plates of ``traces`` use (Pyro's ``max_plate_nesting``)."""
    return max(
        (-frame.dim for trace in traces for site in trace.nodes.values() if site["type"] == "sample"
         for frame in site["cond_indep_stack"] if frame.vectorized),
        default=0,
    )  # fmt: skip


@dataclass(frozen=True)
class Sites:
    """The sample sites of a model and guide, from one run of the guide and the model replayed on it."""

    latent: dict[str, torch.Size]  # site -> shape of one draw; continuous or guide-sampled latents
    enumerated: dict[str, tuple[torch.Size, int]]  # site -> (shape, number of values)
    observed: dict[str, torch.Tensor]  # site -> the data it observes
    sources: dict[str, dist.Distribution]  # latent site -> what its draws come from (the guide's or the prior's)
    nesting: int  # max_plate_nesting of the model and guide
    elements_per_draw: int  # numbers held by the sample sites of one draw of model and guide

    @classmethod
    def of(cls, model: Callable, guide: Callable, data: Batch) -> Sites:
        with torch.no_grad():
            guide_trace = poutine.trace(guide).get_trace(data)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(data)
        latent, enumerated, observed, sources = {}, {}, {}, {}
        for name, site in model_trace.nodes.items():
            if is_observed(site):
                observed[name] = site["value"]
            elif is_latent(site) and is_enumerated(site) and name not in guide_trace.nodes:
                enumerated[name] = (site["value"].shape, _support_size(site["fn"]))
            elif is_latent(site):
                latent[name] = site["value"].shape
                guide_site = guide_trace.nodes.get(name)
                sources[name] = (guide_site or site)["fn"]
        elements = sum(
            site["value"].numel()
            for trace in (guide_trace, model_trace)
            for site in trace.nodes.values()
            if site["type"] == "sample" and not site_is_subsample(site) and isinstance(site["value"], torch.Tensor)
        )
        return cls(latent, enumerated, observed, sources, plate_nesting(guide_trace, model_trace), max(elements, 1))


def _support_size(distribution: dist.Distribution) -> int:
    return int(distribution.enumerate_support(expand=False).shape[0])


def chunk_size(elements_per_draw: int, max_elements: int = CHUNK_ELEMENTS) -> int:
    """Draws per chunk, so that a chunk's sample sites hold at most ``max_elements`` numbers."""
    return max(1, max_elements // max(elements_per_draw, 1))


def draw_in_chunks(
    predict: Callable[[int, bool], dict[str, torch.Tensor]],
    num_samples: int,
    chunk: int,
    sequential_samples: int = SEQUENTIAL_SAMPLES,
) -> Iterator[dict[str, torch.Tensor]]:
    """``predict(size, parallel)`` chunk after chunk until ``num_samples`` draws. Vectorized first; if
    the first vectorized chunk raises, every chunk is drawn sequentially and the draws are at most
    ``sequential_samples``. ``predict`` raises on a draw of the wrong shape, which also falls back."""
    parallel, drawn = True, 0
    while drawn < num_samples:
        size = min(chunk, num_samples - drawn)
        try:
            samples = predict(size, parallel)
        except Exception:
            if not parallel or drawn:
                raise
            parallel, num_samples = False, min(num_samples, sequential_samples)
            continue
        drawn += size
        yield samples


def predictive(
    model: Callable, guide: Callable, data: Batch, shapes: dict[str, torch.Size]
) -> Callable[[int, bool], dict[str, torch.Tensor]]:
    """``predict(size, parallel)`` for ``draw_in_chunks``: ``size`` draws of the sites in ``shapes``
    (guide draws, prior draws where the guide has none, the model's draws of the rest), each shaped
    ``(size, elements)``."""

    def predict(size: int, parallel: bool) -> dict[str, torch.Tensor]:
        draws = Predictive(model, guide=guide, num_samples=size, return_sites=list(shapes), parallel=parallel)(data)
        # A model that does not vectorize may still run and broadcast a site wrongly: refuse that draw.
        return {name: draws[name].reshape(size, math.prod(shape)) for name, shape in shapes.items()}

    return predict


def latent_samples(
    model: Callable,
    guide: Callable,
    data: Batch,
    num_samples: int,
    columns: dict[str, slice | list[int]] | None = None,
    sites: Sites | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> dict[str, torch.Tensor]:
    """``num_samples`` joint draws of q over every latent site that ``TraceEnum_ELBO`` does not sum
    out (a site the guide leaves out is drawn from the prior, as the ELBO does), each shaped
    ``(num_samples, elements)``; with ``columns``, only those sites and, of each, those elements.

    Drawn in chunks of at most ``chunk_elements`` numbers (``draw_in_chunks``), only the ``columns``
    of each chunk kept; fewer draws (``SEQUENTIAL_SAMPLES``) one by one when the model does not vectorize.
    """
    sites = sites or Sites.of(model, guide, data)
    shapes = {name: shape for name, shape in sites.latent.items() if columns is None or name in columns}
    if not shapes:
        return {}
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in shapes}
    chunk = chunk_size(sites.elements_per_draw, chunk_elements)
    with torch.no_grad():
        for draws in draw_in_chunks(predictive(model, guide, data, shapes), num_samples, chunk):
            for name, values in draws.items():  # clone: drop the rest of the chunk
                kept[name].append(values if columns is None else values[:, columns[name]].clone())
    return {name: torch.cat(values) for name, values in kept.items()}


def quantiles(samples: torch.Tensor, levels: tuple[float, ...] = QUANTILES) -> torch.Tensor:
    """``torch.quantile`` of ``(draws, elements)`` samples along the draws, shaped ``(levels, elements)``.

    Each element's draws are sorted as one contiguous row (twice as fast as along the draws'
    strided dimension: 3.6 s instead of 6.7 s for 2,000 × 10,000, one thread), a block of
    elements at a time, as ``torch.quantile`` refuses inputs of more than 2**24 numbers."""
    rows = samples.t().contiguous()
    levels_tensor = torch.tensor(levels, dtype=rows.dtype, device=rows.device)
    per_block = max(1, 2**24 // max(rows.shape[1], 1))
    blocks = [torch.quantile(block, levels_tensor, dim=1) for block in rows.split(per_block)]
    return torch.cat(blocks, dim=1).double() if blocks else samples.new_zeros(len(levels), 0, dtype=torch.double)


def describe(samples: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean, sd and the ``QUANTILES`` of ``(draws, elements)`` samples along the draws."""
    bounds = quantiles(samples if samples.is_floating_point() else samples.double())
    samples = samples.double()
    return {
        "mean": samples.mean(0),
        "sd": samples.std(0),
        **{f"q{round(100 * level):02d}": value for level, value in zip(QUANTILES, bounds, strict=True)},
    }


def _kept(shape: torch.Size, site_elements: int) -> int:
    return min(math.prod(shape), site_elements)


def _shaped(values: torch.Tensor, shape: torch.Size, kept: int) -> torch.Tensor:
    """``values`` (last dimension: the kept elements of a site) in the site's shape when all were kept."""
    return values.reshape(tuple(values.shape[:-1]) + tuple(shape)) if kept == math.prod(shape) else values


def _bounded_note(shape: torch.Size, kept: int) -> str:
    return f"first {kept} of {math.prod(shape)} elements (shape {list(shape)}), flattened in row-major order"


def _not_summarisable(source: dist.Distribution) -> str | None:
    """Why mean, sd and quantiles do not apply to draws from ``source``, or None."""
    if source.support.is_discrete:
        return f"integer-valued site ({type(source).__name__}): mean, sd and quantiles not summarised"
    try:
        mean = source.mean
    except (NotImplementedError, AttributeError, ValueError):
        return None
    if isinstance(mean, torch.Tensor) and not torch.isfinite(mean).all():
        return f"its draws come from {type(source).__name__}, which has no finite mean: not summarised"
    return None


def latent_summaries(
    model: Callable,
    guide: Callable,
    data: Batch,
    sites: Sites,
    num_samples: int = NUM_SAMPLES,
    chunk_elements: int = CHUNK_ELEMENTS,
    site_elements: int = SITE_ELEMENTS,
    kept_elements: int = KEPT_ELEMENTS,
    drawn_elements: int = DRAWN_ELEMENTS,
) -> dict[str, dict[str, Any]]:
    """``mean``, ``sd``, ``q05``, ``q95`` of each latent site over draws; ``skipped`` (why) for a site
    they do not apply to, ``note`` where only the first ``site_elements`` elements are summarised or,
    where draws over all rows would hold more than ``drawn_elements`` numbers, only the first rows."""
    summary: dict[str, dict[str, Any]] = {}
    shapes = {}
    for name, shape in sites.latent.items():
        reason = _not_summarisable(sites.sources[name])
        if reason:
            summary[name] = {"skipped": reason}
        else:
            shapes[name] = shape
    if not shapes:
        return summary
    kept = {name: _kept(shape, site_elements) for name, shape in shapes.items()}
    num_samples = min(num_samples, max(50, kept_elements // sum(kept.values())))
    drawn_data, drawn_sites = _affordable_head(model, guide, data, sites, num_samples, drawn_elements)
    drawn_shapes = {name: drawn_sites.latent[name] for name in shapes}
    kept = {name: _kept(shape, site_elements) for name, shape in drawn_shapes.items()}
    columns = {name: slice(0, kept[name]) for name in drawn_shapes}
    drawn = latent_samples(model, guide, drawn_data, num_samples, columns, drawn_sites, chunk_elements)
    rows = count_rows(drawn_data)
    for name, shape in shapes.items():
        samples = drawn.pop(name)
        if not torch.isfinite(samples).all():
            summary[name] = {"skipped": "non-finite draws: not summarised"}
            continue
        summary[name] = {key: _shaped(value, shape, kept[name]) for key, value in describe(samples).items()}
        if drawn_shapes[name] != shape:
            summary[name]["note"] = (
                f"drawn on the first {rows} of {count_rows(data)} rows (a minibatch, to bound the work): "
                + _bounded_note(drawn_shapes[name], kept[name])
            )
        elif kept[name] < math.prod(shape):
            summary[name]["note"] = _bounded_note(shape, kept[name])
    return dict(sorted(summary.items(), key=lambda item: list(sites.latent).index(item[0])))


def _affordable_head(
    model: Callable, guide: Callable, data: Batch, sites: Sites, num_samples: int, drawn_elements: int
) -> tuple[Batch, Sites]:
    """``data`` and its ``sites`` where ``num_samples`` draws on all rows stay within ``drawn_elements``
    numbers; else its first rows that do (all of it for a guide that cannot follow a minibatch)."""
    rows = affordable_rows(sites, data, num_samples, drawn_elements)
    if rows >= count_rows(data):
        return data, sites
    head = head_rows(data, rows)
    try:
        return head, Sites.of(model, guide, head)
    except Exception:  # a guide that draws every row's latents at once
        return data, sites


def describe_exact(
    posterior: dist.Distribution, shape: torch.Size | None = None, site_elements: int = SITE_ELEMENTS
) -> dict[str, torch.Tensor]:
    """Mean and sd of a closed-form posterior exactly; its quantiles from at most ``EXACT_SAMPLES``
    draws. With ``shape`` (the site's), its first ``site_elements`` elements, as ``latent_summaries``."""
    full_shape = posterior.batch_shape + posterior.event_shape
    shape = full_shape if shape is None else shape
    if math.prod(full_shape) != math.prod(shape):
        raise ValueError(f"exact posterior of shape {list(full_shape)} for a site of shape {list(shape)}")
    kept = _kept(shape, site_elements)
    num_samples = max(1000, min(EXACT_SAMPLES, KEPT_ELEMENTS // kept))
    per_chunk = chunk_size(math.prod(shape))
    draws = torch.cat([
        posterior.sample((min(per_chunk, num_samples - start),)).reshape(-1, math.prod(shape))[:, :kept].clone()
        for start in range(0, num_samples, per_chunk)
    ])  # fmt: skip
    exact = describe(draws)
    exact["mean"] = posterior.mean.reshape(-1)[:kept].double()
    exact["sd"] = posterior.stddev.reshape(-1)[:kept].double()
    return {key: _shaped(value, shape, kept) for key, value in exact.items()}


def _in_sample_plate(fn: Callable, num_samples: int, nesting: int) -> Callable:
    """``fn`` run once for ``num_samples`` independent draws, along a plate left of the model's plates."""

    def plated(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate("posterior_samples", num_samples, dim=-(nesting + 1)):
            return fn(*args, **kwargs)

    return plated


def enumerated_marginals(
    model: Callable,
    guide: Callable,
    data: Batch,
    num_samples: int = ENUMERATED_SAMPLES,
    plates: int | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
    sites: Sites | None = None,
) -> dict[str, torch.Tensor]:
    """p(a_i = k | x) for each enumerated site a, averaged over ``num_samples`` guide draws of the
    other latents: a tensor of shape ``(*site_shape, num_values)`` per site. ``plates``: the model's
    plate nesting (found from one run when not given)."""
    sites = sites or Sites.of(model, guide, data)
    nesting = sites.nesting if plates is None else plates
    shapes = sites.enumerated
    if not shapes:
        return {}

    def predict(size: int, parallel: bool) -> dict[str, torch.Tensor]:
        if parallel:
            estimator = TraceEnum_ELBO(max_plate_nesting=nesting + 1)
            marginals = estimator.compute_marginals(
                _in_sample_plate(model, size, nesting), _in_sample_plate(guide, size, nesting), data
            )
            return {name: _per_draw(marginals[name].probs, size, shape) for name, shape in shapes.items()}
        draws = [TraceEnum_ELBO(max_plate_nesting=nesting).compute_marginals(model, guide, data) for _ in range(size)]
        return {
            name: torch.stack([_per_draw(draw[name].probs, 1, shape)[0] for draw in draws])
            for name, shape in shapes.items()
        }

    values = max(size for _, size in shapes.values())
    chunk = chunk_size(sites.elements_per_draw * values, chunk_elements)
    totals: dict[str, torch.Tensor] = {}
    count = 0
    with torch.no_grad():
        for draws in draw_in_chunks(predict, num_samples, chunk, sequential_samples=ENUMERATED_SEQUENTIAL_SAMPLES):
            for name, probs in draws.items():
                totals[name] = totals.get(name, 0) + probs.sum(0)
            count += next(iter(draws.values())).shape[0]
    return {name: (totals[name] / count).reshape(*shape, -1) for name, (shape, _) in shapes.items()}


def _per_draw(probs: torch.Tensor, size: int, shape: tuple[torch.Size, int]) -> torch.Tensor:
    """Marginal probabilities shaped ``(size, elements, values)``; raises when they do not fit."""
    site_shape, values = shape
    elements = math.prod(site_shape)
    if probs.shape[-1] != values:
        raise ValueError(f"marginal of {probs.shape[-1]} values for a site of {values}")
    if probs.numel() == elements * values:  # the same for every draw (nothing it depends on varies)
        return probs.reshape(1, elements, values).expand(size, elements, values)
    return probs.reshape(size, elements, values)


def enumerated_summaries(
    model: Callable,
    guide: Callable,
    data: Batch,
    sites: Sites,
    num_samples: int = ENUMERATED_SAMPLES,
    chunk_elements: int = CHUNK_ELEMENTS,
    site_elements: int = SITE_ELEMENTS,
) -> dict[str, dict[str, Any]]:
    """``probs`` of each enumerated site (``(*site_shape, num_values)``; the first ``site_elements``
    elements, flattened, with a ``note``, for a larger site)."""
    marginals = enumerated_marginals(model, guide, data, num_samples, sites=sites, chunk_elements=chunk_elements)
    summary = {}
    for name, probs in marginals.items():
        shape = sites.enumerated[name][0]
        kept = _kept(shape, site_elements)
        if kept == math.prod(shape):
            summary[name] = {"probs": probs}
        else:
            summary[name] = {"probs": probs.reshape(-1, probs.shape[-1])[:kept], "note": _bounded_note(shape, kept)}
    return summary


CHECK_STATISTICS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda values: values.flatten(1).double().mean(-1),
    # (a one-element site: its sd about its own mean, 0, rather than NaN)
    "sd": lambda values: values.flatten(1).double().std(-1, correction=int(values[0].numel() > 1)),
}


def count_rows(data: Batch) -> int:
    """The rows of ``data``: its ``index``'s length, else its longest column's."""
    if "index" in data:
        return len(data["index"])
    return max((len(value) for value in data.values() if value.dim()), default=0)


def row_subsample(data: Batch, max_rows: int) -> tuple[Batch, int]:
    """At most ``max_rows`` rows of ``data``, evenly spread (a minibatch: its ``index`` tells the
    model's plates which rows), and how many rows it has. Tensors without a row per data point
    are kept whole."""
    num_rows = count_rows(data)
    if num_rows <= max_rows:
        return data, num_rows
    rows = torch.linspace(0, num_rows - 1, max_rows).round().long().unique()
    subsample = {
        name: value[rows.to(value.device)] if value.dim() and len(value) == num_rows else value
        for name, value in data.items()
    }
    return subsample, len(rows)


def head_rows(data: Batch, num_rows: int) -> Batch:
    """The first ``num_rows`` rows of ``data`` (a minibatch); tensors without a row per data point whole."""
    total = count_rows(data)
    return {name: value[:num_rows] if value.dim() and len(value) == total else value for name, value in data.items()}


def affordable_rows(sites: Sites, data: Batch, num_samples: int, drawn_elements: int = DRAWN_ELEMENTS) -> int:
    """How many rows of ``data`` ``num_samples`` draws can run on within ``drawn_elements`` numbers
    (``sites``: of all of ``data``; each row taken to cost an equal share)."""
    total = count_rows(data)
    per_row = sites.elements_per_draw / max(total, 1)
    return max(1, min(total, int(drawn_elements / (num_samples * per_row))))


def predictive_checks(
    model: Callable,
    guide: Callable,
    data: Batch,
    num_samples: int = NUM_SAMPLES,
    max_rows: int = CHECK_ROWS,
    chunk_elements: int = CHUNK_ELEMENTS,
    site_elements: int = SITE_ELEMENTS,
    drawn_elements: int = DRAWN_ELEMENTS,
) -> dict[str, dict[str, Any]]:
    """For each observed site, from replicated data (the site drawn from the model given guide
    draws of the latents) on at most ``max_rows`` rows of ``data``:

    * ``check``: for each statistic T (mean, sd over the rows' elements), T(x), the mean of
      T(x_rep), and the posterior predictive p-value P(T(x_rep) >= T(x)); values near 0 or 1 say
      the model does not reproduce that aspect of the data;
    * ``ppc``: the observed and the predictive mean, and the share of the observed elements (the
      first ``site_elements``) inside their central 90% predictive interval (``coverage_90``).

    A guide that cannot follow a subsample of rows (one that draws every row's latents at once)
    is checked on the whole of ``data``. Rows so large that ``num_samples`` draws of them would hold
    more than ``drawn_elements`` numbers are checked fewer at a time."""
    subsample, rows = row_subsample(data, max_rows)
    candidates = [(subsample, rows)] if subsample is data else [(subsample, rows), (data, count_rows(data))]
    for position, (batch, batch_rows) in enumerate(candidates):
        try:
            return _predictive_checks(
                model, guide, batch, batch_rows, num_samples, chunk_elements, site_elements, drawn_elements
            )
        except Exception:
            if position == len(candidates) - 1:
                raise
    return {}


def _predictive_checks(
    model: Callable,
    guide: Callable,
    data: Batch,
    rows: int,
    num_samples: int,
    chunk_elements: int,
    site_elements: int,
    drawn_elements: int,
) -> dict[str, dict[str, Any]]:
    sites = Sites.of(model, guide, data)
    if not sites.observed:
        return {}
    affordable = affordable_rows(sites, data, num_samples, drawn_elements)
    if affordable < rows:  # large rows (images): fewer of them, to bound the work
        data, rows = row_subsample(data, affordable)
        sites = Sites.of(model, guide, data)
    shapes = {name: value.shape for name, value in sites.observed.items()}
    kept = {name: _kept(shape, site_elements) for name, shape in shapes.items()}
    replicas: dict[str, dict[str, list[torch.Tensor]]] = {
        name: {key: [] for key in CHECK_STATISTICS} for name in shapes
    }
    kept_draws: dict[str, list[torch.Tensor]] = {name: [] for name in shapes}
    released = ReleaseObserved()(model)  # observed sites drawn from the model: replicated data
    chunk = chunk_size(sites.elements_per_draw, chunk_elements)
    for draws in draw_in_chunks(predictive(released, guide, data, shapes), num_samples, chunk):
        for name, values in draws.items():
            for key, statistic in CHECK_STATISTICS.items():
                replicas[name][key].append(statistic(values))
            kept_draws[name].append(values[:, : kept[name]].clone())
    summary = {}
    for name, observed in sites.observed.items():
        check = {}
        for key, statistic in CHECK_STATISTICS.items():
            value = statistic(observed.reshape(1, -1))[0]
            replicated = torch.cat(replicas[name][key])
            check[key] = {
                "observed": value.item(),
                "replicated_mean": replicated.mean().item(),
                "p_value": (replicated >= value).double().mean().item(),
            }
        draws = torch.cat(kept_draws.pop(name))
        low, high = quantiles(draws if draws.is_floating_point() else draws.double())
        elements = observed.reshape(-1)[: kept[name]].double()
        ppc = {
            "observed_mean": check["mean"]["observed"],
            "predictive_mean": check["mean"]["replicated_mean"],
            "coverage_90": ((low <= elements) & (elements <= high)).double().mean().item(),
            "rows": rows,
            "draws": len(draws),
        }
        if kept[name] < math.prod(shapes[name]):
            ppc["note"] = f"coverage of the first {kept[name]} of {math.prod(shapes[name])} observed elements"
        summary[name] = {"check": check, "ppc": ppc}
    return summary


def _exact_posterior(model: Callable, data: Batch) -> dict[str, dist.Distribution]:
    return getattr(model, "exact_posterior", lambda data: None)(data) or {}


def posterior_summary(
    model: Callable,
    guide: Callable,
    data: Batch,
    num_samples: int = NUM_SAMPLES,
    chunk_elements: int = CHUNK_ELEMENTS,
    site_elements: int = SITE_ELEMENTS,
    check_rows: int = CHECK_ROWS,
    drawn_elements: int = DRAWN_ELEMENTS,
) -> dict[str, dict[str, Any]]:
    """One entry per site of ``model``: a latent site's ``mean``, ``sd``, ``q05``, ``q95`` over guide
    draws and ``exact`` (the same keys) where the model has a closed-form posterior; an enumerated
    site's ``probs``; an observed site's ``check`` and ``ppc`` (``predictive_checks``). A site that
    cannot be summarised has ``skipped`` (why); a part that raised gives its sites ``error``."""
    with torch.no_grad():
        sites = Sites.of(model, guide, data)
        bounds = {"chunk_elements": chunk_elements, "site_elements": site_elements}
        drawing = {**bounds, "drawn_elements": drawn_elements}
        parts = (
            (sites.latent, partial(latent_summaries, model, guide, data, sites, num_samples, **drawing)),
            (sites.enumerated, partial(enumerated_summaries, model, guide, data, sites, **bounds)),
            (sites.observed, partial(predictive_checks, model, guide, data, num_samples, check_rows, **drawing)),
        )
        summary: dict[str, dict[str, Any]] = {}
        for names, part in parts:
            if not names:
                continue
            try:
                summary.update(part())
            except Exception as error:  # one part failing leaves the others
                summary.update({name: {"error": one_line(error)} for name in names})
        try:
            exact = _exact_posterior(model, data)
        except Exception as error:
            exact, exact_error = {}, one_line(error)
        else:
            exact_error = None
        for name in sites.latent:
            entry = summary.get(name, {})
            if "mean" not in entry:
                continue
            if exact_error:
                entry["exact"] = {"error": exact_error}
            elif name in exact:
                try:  # the elements the guide's summary has (the first rows' where it drew on a minibatch)
                    kept = torch.as_tensor(entry["mean"]).numel()
                    entry["exact"] = describe_exact(exact[name], sites.latent[name], kept)
                except Exception as error:
                    entry["exact"] = {"error": one_line(error)}
    return summary
