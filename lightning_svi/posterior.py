"""Posterior summaries at the end of a run: what the trained guide says about each latent site.

Continuous latents are summarised from guide samples (mean, sd, 5% and 95% quantiles), beside
the exact posterior where the model has one in closed form. Sites that ``TraceEnum_ELBO`` sums
out have no guide: their posterior probabilities given the data are averaged over guide samples
of the other latents (Pyro's ``TraceEnum_ELBO.compute_marginals``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from pyro.poutine.util import site_is_subsample

from lightning_svi.guides import is_enumerated
from lightning_svi.models.base import Batch, SVIModel

QUANTILES = (0.05, 0.95)


def _in_sample_plate(fn: Callable, num_samples: int, max_plate_nesting: int) -> Callable:
    """``fn`` run once for ``num_samples`` independent draws, along a plate left of the model's plates."""

    def plated(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate("posterior_samples", num_samples, dim=-(max_plate_nesting + 1)):
            return fn(*args, **kwargs)

    return plated


def _is_observed(site: dict) -> bool:
    """Data, not a ``pyro.deterministic`` value (which Pyro also records as an observed sample site)."""
    return (
        site["type"] == "sample"
        and site["is_observed"]
        and not site_is_subsample(site)
        and not site["infer"].get("_deterministic", False)
    )


def latent_shapes(model: SVIModel, guide: Callable, data: Batch) -> tuple[dict[str, torch.Size], list[str], int]:
    """From one model run: the shapes of its continuous latent and its observed sites, the names of
    its enumerated sites, and its plate nesting (how many batch dimensions its plates use)."""
    trace = poutine.trace(poutine.replay(model, poutine.trace(guide).get_trace(data))).get_trace(data)
    latent = [
        (name, site)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]
    shapes = {name: site["value"].shape for name, site in latent if not is_enumerated(site)}
    shapes.update({name: site["value"].shape for name, site in trace.nodes.items() if _is_observed(site)})
    plate_dims = [
        -frame.dim
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return shapes, [name for name, site in latent if is_enumerated(site)], max(plate_dims, default=0)


def latent_samples(
    model: SVIModel, guide: Callable, data: Batch, shapes: dict[str, torch.Size], num_samples: int, plates: int
) -> dict[str, torch.Tensor]:
    """``num_samples`` joint draws of the sites in ``shapes`` from the guide (from the prior for sites
    the guide leaves to the model), observed sites replicated from the posterior predictive, each
    shaped ``(num_samples, *shape)``. ``plates``: the model's maximum plate nesting."""
    guide_trace = poutine.trace(_in_sample_plate(guide, num_samples, plates)).get_trace(data)
    model_trace = poutine.trace(poutine.replay(_in_sample_plate(model, num_samples, plates), guide_trace)).get_trace(
        data
    )
    samples = {}
    for name, shape in shapes.items():
        site = model_trace.nodes[name]
        # An observed site's distribution, given this draw of the latents, replicates the data.
        value = site["fn"].sample() if _is_observed(site) else site["value"]
        samples[name] = value.reshape(num_samples, *shape)
    return samples


def describe(samples: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean, sd and the ``QUANTILES`` of samples along their first dimension."""
    quantiles = torch.quantile(samples.double(), torch.tensor(QUANTILES, dtype=torch.double), dim=0)
    return {
        "mean": samples.mean(0),
        "sd": samples.std(0),
        **{f"q{round(100 * level):02d}": value for level, value in zip(QUANTILES, quantiles, strict=True)},
    }


CHECK_STATISTICS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda values: values.flatten(1).mean(-1),
    "sd": lambda values: values.flatten(1).std(-1),
}


def predictive_check(observed: torch.Tensor, replicated: torch.Tensor) -> dict[str, dict[str, float]]:
    """For each statistic T: T(x), the mean of T(x_rep), and the posterior predictive p-value
    P(T(x_rep) >= T(x)); values near 0 or 1 say the model does not reproduce that aspect of the data."""
    check = {}
    for name, statistic in CHECK_STATISTICS.items():
        value = statistic(observed.unsqueeze(0).to(replicated.dtype))[0]
        replicas = statistic(replicated)
        check[name] = {
            "observed": value.item(),
            "replicated_mean": replicas.mean().item(),
            "p_value": (replicas >= value).double().mean().item(),
        }
    return check


def describe_exact(posterior: dist.Distribution, num_samples: int = 20_000) -> dict[str, torch.Tensor]:
    """Mean and sd of a closed-form posterior exactly; its quantiles from ``num_samples`` draws."""
    quantiles = describe(posterior.sample((num_samples,)))
    return {**quantiles, "mean": posterior.mean, "sd": posterior.stddev}


def enumerated_marginals(
    model: SVIModel, guide: Callable, data: Batch, num_samples: int, plates: int
) -> dict[str, torch.Tensor]:
    """p(a_i = k | x) for each enumerated site a, averaged over ``num_samples`` guide draws of the
    other latents: a tensor of shape ``(*site_shape, num_values)`` per site."""
    estimator = TraceEnum_ELBO(max_plate_nesting=plates + 1)
    marginals = estimator.compute_marginals(
        _in_sample_plate(model, num_samples, plates), _in_sample_plate(guide, num_samples, plates), data
    )
    return {
        name: marginal.probs.reshape(num_samples, -1, marginal.probs.shape[-1]).mean(0)
        for name, marginal in marginals.items()
    }


def _observed_values(model: SVIModel, data: Batch) -> dict[str, torch.Tensor]:
    trace = poutine.trace(model).get_trace(data)
    return {name: site["value"] for name, site in trace.nodes.items() if _is_observed(site)}


def posterior_summary(
    model: SVIModel, guide: Callable, data: Batch, num_samples: int = 1000, max_elements: int = 20_000_000
) -> dict[str, dict[str, Any]]:
    """For each latent site: ``mean``, ``sd``, ``q05``, ``q95`` from the guide, and ``exact`` (the same
    keys) where the model has a closed-form posterior; for each enumerated site, ``probs``; for each
    observed site, ``check``, a posterior predictive check of its mean and sd. Large models get fewer
    draws (at least 50), so that all draws together hold at most ``max_elements`` numbers."""
    with torch.no_grad():
        shapes, enumerated, plates = latent_shapes(model, guide, data)
        elements_per_draw = sum(math.prod(shape) for shape in shapes.values())
        num_samples = min(num_samples, max(50, max_elements // max(elements_per_draw, 1)))
        samples = latent_samples(model, guide, data, shapes, num_samples, plates)
        observed = {name: site_value for name, site_value in _observed_values(model, data).items()}
        summary: dict[str, dict[str, Any]] = {
            name: {"check": predictive_check(observed[name], values)} if name in observed else describe(values)
            for name, values in samples.items()
        }
        exact = model.exact_posterior(data) or {}
        for name, posterior in exact.items():
            summary[name]["exact"] = describe_exact(posterior)
        if enumerated:
            marginals = enumerated_marginals(model, guide, data, min(num_samples, 100), plates)
            summary.update({name: {"probs": probs} for name, probs in marginals.items()})
    return summary
