"""Pictures of what the guide believes: for a few elements of each latent site, the guide's samples
and density beside the exact posterior where the model knows it. Drawn off screen with matplotlib's
Agg canvas (``Figure`` objects, no pyplot state)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.nn import PyroModule
from pyro.poutine import Trace

from lightning_svi.guide_sites import is_latent_site
from lightning_svi.models.base import Batch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lightning_svi.models.base import SVIModel

GRID_POINTS = 200
POINT_MASSES = (dist.Delta,)
WRAPPERS = (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)


def traces(model: PyroModule, guide: PyroModule, data: Batch) -> tuple[Trace, Trace]:
    """One draw: the guide's trace, and the model's replayed on it. A site the guide covers has the
    guide's value; one it leaves out (the empty guide) has the prior's: the q the ELBO averages over."""
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(data)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(data)
    return guide_trace, model_trace


def plate_nesting(*traced: Trace) -> int:
    """How many batch dimensions the plates of ``traced`` use (Pyro's ``max_plate_nesting``)."""
    return max(
        (-frame.dim for trace in traced for site in trace.nodes.values() if site["type"] == "sample"
         for frame in site["cond_indep_stack"] if frame.vectorized),
        default=0,
    )  # fmt: skip


def latent_samples(
    model: PyroModule, guide: PyroModule, data: Batch, num_samples: int, nesting: int | None = None
) -> dict[str, torch.Tensor]:
    """``num_samples`` joint draws of q over every latent site (see ``traces``), each shaped
    ``(num_samples, elements)``, drawn in one pass vectorized over a plate left of the model's
    ``nesting`` plate dimensions (found from one draw when not given)."""
    if nesting is None:
        nesting = plate_nesting(*traces(model, guide, data))
    with pyro.plate("picture_samples", num_samples, dim=-nesting - 1):
        model_trace = traces(model, guide, data)[1]
    return {
        name: site["value"].expand(num_samples, *site["value"].shape[1:]).reshape(num_samples, -1)
        for name, site in model_trace.nodes.items()
        if is_latent_site(site)
    }


def element_densities(distribution: dist.Distribution | None, grid: torch.Tensor) -> torch.Tensor | None:
    """The density of element ``e`` of ``distribution`` at each point of ``grid[:, e]``; None unless
    ``distribution`` is a product of scalar continuous densities with one per grid column."""
    if distribution is None or distribution.event_shape != () or distribution.support.is_discrete:
        return None
    if _is_point_mass(distribution) or distribution.batch_shape.numel() != grid.shape[1]:
        return None
    with pyro.validation_enabled(False), torch.no_grad():
        log_density = distribution.log_prob(grid.reshape(grid.shape[0], *distribution.batch_shape))
    density = log_density.exp().reshape(grid.shape[0], -1)
    return torch.where(torch.isfinite(density), density, torch.nan)


def _is_point_mass(distribution: dist.Distribution) -> bool:
    while isinstance(distribution, WRAPPERS):
        distribution = distribution.base_dist
    return isinstance(distribution, POINT_MASSES)


def picked_elements(num_elements: int, count: int) -> list[int]:
    """``count`` element indices spread evenly from the first to the last."""
    return torch.linspace(0, num_elements - 1, min(count, num_elements)).round().long().unique().tolist()


def marginals_figure(
    model: SVIModel,
    guide: PyroModule,
    data: Batch,
    num_samples: int = 1000,
    elements_per_site: int = 4,
    max_sites: int = 4,
) -> Figure | None:
    """One row per latent site (at most ``max_sites``), one panel per picked element: a histogram
    of q's samples, q's density where it has one, and the exact posterior where ``model`` knows it."""
    from matplotlib.figure import Figure

    guide_trace, model_trace = traces(model, guide, data)
    samples = latent_samples(model, guide, data, num_samples, plate_nesting(guide_trace, model_trace))
    if not samples:
        return None
    sites = list(samples)[:max_sites]
    # The distribution the guide draws each site from, for one draw (not batched by samples).
    q_distributions = {name: site["fn"] for name, site in guide_trace.nodes.items() if site["type"] == "sample"}
    exact = model.exact_posterior(data) or {}
    columns = max(len(picked_elements(samples[site].shape[1], elements_per_site)) for site in sites)
    figure = Figure(figsize=(3.2 * columns, 0.5 + 2.4 * len(sites)))
    axes = figure.subplots(len(sites), columns, squeeze=False)
    for row, site in enumerate(sites):
        q_samples = samples[site].float()
        exact_samples = exact[site].sample((num_samples,)).reshape(num_samples, -1) if site in exact else None
        grid = _grid(q_samples if exact_samples is None else torch.cat([q_samples, exact_samples.float()]))
        q_density = element_densities(q_distributions.get(site), grid)
        exact_density = element_densities(exact.get(site), grid)
        elements = picked_elements(q_samples.shape[1], elements_per_site)
        for column in range(columns):
            ax = axes[row, column]
            if column >= len(elements):
                ax.set_visible(False)
                continue
            element = elements[column]
            x = grid[:, element].cpu().numpy()
            q_values = q_samples[:, element].cpu().numpy()
            style = {"histtype": "stepfilled", "color": "C0", "alpha": 0.35}
            ax.hist(q_values, bins=40, range=(x[0], x[-1]), density=True, label="q samples", **style)
            if q_density is not None:
                ax.plot(x, q_density[:, element].cpu().numpy(), color="C0", label="q density")
            if exact_density is not None:
                ax.plot(x, exact_density[:, element].cpu().numpy(), "k--", label="exact posterior")
            ax.set_title(site if q_samples.shape[1] == 1 else f"{site}[{element}]", fontsize=10)
            ax.set_yticks([])
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncols=len(labels), frameon=False)
    height = figure.get_figheight()
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.35 / height, top=1 - 0.55 / height, wspace=0.08, hspace=0.45)
    return figure


def _grid(samples: torch.Tensor) -> torch.Tensor:
    """``GRID_POINTS`` points per element column, spanning the central 99% of its samples."""
    levels = torch.tensor([0.005, 0.995], dtype=torch.double, device=samples.device)
    low, high = torch.quantile(samples.double(), levels, dim=0)
    width = (high - low).clamp_min(1e-3 * (1 + high.abs()))
    center = (low + high) / 2
    low, high = center - width / 2, center + width / 2
    steps = torch.linspace(0, 1, GRID_POINTS, dtype=torch.double, device=samples.device)[:, None]
    return (low + steps * (high - low)).to(samples.dtype)
