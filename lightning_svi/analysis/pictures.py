"""Pictures of what the guide believes: for a few elements of each latent site, the guide's samples
and density beside the exact posterior where the model knows it. Drawn off screen with matplotlib's
Agg canvas (``Figure`` objects, no pyplot state).

Memory is bounded whatever the model or data: the draws run on at most ``PICTURE_ROWS`` rows of the
data (a minibatch), in chunks (``posterior.draw_in_chunks``), and only the drawn elements of each
site are kept. A 4,096-image VAE drew 1,000 joint samples over every image in one vectorized pass
and grew past 20 GB.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine import Trace

from lightning_svi.analysis.posterior import (
    Batch,
    Sites,
    affordable_rows,
    count_rows,
    latent_samples,
    row_subsample,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["element_densities", "marginals_figure", "picked_elements"]

GRID_POINTS = 200
PICTURE_COLUMNS = 2  # panels a row: 2 × 3.6 in at 100 dpi = 720 px, shown at full size in TensorBoard
PANEL_INCHES = (3.6, 2.3)  # width and height of one panel
PICTURE_ROWS = 200  # data rows the pictures' draws run on
# Numbers all draws of a picture hold: fewer rows beyond it (a picture is drawn during training).
# The VAE tutorial's model on 200 rows of 784 pixels took 6.7 s a picture; on 56 rows, 0.8 s.
PICTURE_DRAWN_ELEMENTS = 50_000_000
DENSITY_ELEMENTS = 100_000  # a larger site gets no density curves: a grid over all its elements
POINT_MASSES = (dist.Delta,)
WRAPPERS = (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)


def element_densities(
    distribution: dist.Distribution | None, grid: torch.Tensor, columns: list[int] | None = None
) -> torch.Tensor | None:
    """The density of element ``columns[c]`` (``c`` without ``columns``) of ``distribution`` at each
    point of ``grid[:, c]``; None unless ``distribution`` is a product of scalar continuous densities
    of at most ``DENSITY_ELEMENTS`` elements (one per grid column without ``columns``)."""
    if distribution is None or distribution.event_shape != () or distribution.support.is_discrete:
        return None
    elements = distribution.batch_shape.numel()
    if _is_point_mass(distribution) or elements > DENSITY_ELEMENTS:
        return None
    if columns is None:
        if elements != grid.shape[1]:
            return None
        points = grid
    else:
        # Every other element at a point of its support: only the picked columns are read back.
        points = distribution.sample().reshape(1, -1).expand(grid.shape[0], -1).clone()
        points[:, columns] = grid.to(points.dtype)
    with pyro.validation_enabled(False), torch.no_grad():
        log_density = distribution.log_prob(points.reshape(grid.shape[0], *distribution.batch_shape))
    density = log_density.exp().reshape(grid.shape[0], -1)
    if columns is not None:
        density = density[:, columns]
    return torch.where(torch.isfinite(density), density, torch.nan)


def _is_point_mass(distribution: dist.Distribution) -> bool:
    while isinstance(distribution, WRAPPERS):
        distribution = distribution.base_dist
    return isinstance(distribution, POINT_MASSES)


def picked_elements(num_elements: int, count: int) -> list[int]:
    """``count`` element indices spread evenly from the first to the last."""
    return torch.linspace(0, num_elements - 1, min(count, num_elements)).round().long().unique().tolist()


def _guide_distributions(guide: torch.nn.Module, data: Batch) -> dict[str, dist.Distribution]:
    """The distribution the guide draws each site from, for one draw (not batched by samples)."""
    with torch.no_grad():
        trace: Trace = pyro.poutine.trace(guide).get_trace(data)
    return {name: site["fn"] for name, site in trace.nodes.items() if site["type"] == "sample"}


def _exact_posteriors(
    model: torch.nn.Module, data: Batch, picture_data: Batch, shapes: dict[str, torch.Size]
) -> dict[str, dist.Distribution]:
    """The exact posterior of each site in ``shapes`` where the model has one that fits the site:
    given all of ``data`` (a global latent, or every row drawn), else given the rows drawn (a
    latent per row, whose posterior is that of its own row)."""
    exact_posterior = getattr(model, "exact_posterior", lambda data: None)
    candidates = [exact_posterior(data) or {}]
    if picture_data is not data:
        candidates.append(exact_posterior(picture_data) or {})
    exact = {}
    for name, shape in shapes.items():
        for candidate in candidates:
            posterior = candidate.get(name)
            if posterior is not None and (posterior.batch_shape + posterior.event_shape).numel() == math.prod(shape):
                exact[name] = posterior
                break
    return exact


def marginals_figure(
    model: torch.nn.Module,
    guide: torch.nn.Module,
    data: Batch,
    num_samples: int = 1000,
    elements_per_site: int = 4,
    max_sites: int = 4,
    max_rows: int = PICTURE_ROWS,
) -> Figure | None:
    """One row per latent site (at most ``max_sites``), one panel per picked element: a histogram
    of q's samples, q's density where it has one, and the exact posterior where ``model`` knows it.
    The draws run on at most ``max_rows`` rows of ``data`` (all of it for a guide that cannot
    follow a subsample of rows)."""
    from matplotlib.figure import Figure

    picture_data, picture_rows = row_subsample(data, max_rows)
    try:
        sites = Sites.of(model, guide, picture_data)
    except Exception:
        if picture_data is data:
            raise
        picture_data = data  # a guide that draws every row's latents at once
        sites = Sites.of(model, guide, data)
    affordable = affordable_rows(sites, picture_data, num_samples, PICTURE_DRAWN_ELEMENTS)
    if affordable < picture_rows:
        fewer, fewer_rows = row_subsample(picture_data, affordable)
        with contextlib.suppress(Exception):  # else keep the rows that ran
            sites, picture_data, picture_rows = Sites.of(model, guide, fewer), fewer, fewer_rows
    names = list(sites.latent)[:max_sites]
    if not names:
        return None
    shapes = {name: sites.latent[name] for name in names}
    columns = {name: picked_elements(math.prod(shape), elements_per_site) for name, shape in shapes.items()}
    samples = latent_samples(model, guide, picture_data, num_samples, columns=columns, sites=sites)
    q_distributions = _guide_distributions(guide, picture_data)
    exact = _exact_posteriors(model, data, picture_data, shapes)
    # A grid of at most PICTURE_COLUMNS panels a row (TensorBoard shows a wider strip as a small thumbnail):
    # each site starts a row and wraps onto as many as its elements need.
    num_columns = min(max(len(picked) for picked in columns.values()), PICTURE_COLUMNS)
    first_rows = list(itertools.accumulate((math.ceil(len(columns[site]) / num_columns) for site in names), initial=0))
    figure = Figure(figsize=(PANEL_INCHES[0] * num_columns, 0.3 + PANEL_INCHES[1] * first_rows[-1]), dpi=100)
    panels = figure.subplots(first_rows[-1], num_columns, squeeze=False)
    for ax in panels.flat:
        ax.set_visible(False)
    for row, site in enumerate(names):
        elements = columns[site]
        axes = panels[first_rows[row] : first_rows[row + 1]].reshape(1, -1)
        q_samples = samples[site].float()
        exact_posterior = exact.get(site)
        if exact_posterior is not None and math.prod(shapes[site]) > DENSITY_ELEMENTS:
            exact_posterior = None  # its draws of every element would be too many
        exact_samples = None
        if exact_posterior is not None:
            exact_samples = exact_posterior.sample((len(q_samples),)).reshape(len(q_samples), -1)[:, elements]
        grid = _grid(q_samples if exact_samples is None else torch.cat([q_samples, exact_samples.float()]))
        q_density = _densities(q_distributions.get(site), grid, elements, math.prod(shapes[site]))
        exact_density = _densities(exact_posterior, grid, elements, math.prod(shapes[site]))
        for column, element in enumerate(elements):
            ax = axes[0, column]
            ax.set_visible(True)
            x = grid[:, column].cpu().numpy()
            q_values = q_samples[:, column].cpu().numpy()
            style = {"histtype": "stepfilled", "color": "C0", "alpha": 0.35}
            ax.hist(q_values, bins=40, range=(x[0], x[-1]), density=True, label="q samples", **style)
            if q_density is not None:
                ax.plot(x, q_density[:, column].cpu().numpy(), color="C0", label="q density")
            if exact_density is not None:
                ax.plot(x, exact_density[:, column].cpu().numpy(), "k--", label="exact posterior")
            ax.set_title(site if math.prod(shapes[site]) == 1 else f"{site}[{element}]", fontsize=10)
            ax.set_yticks([])
    panels[0, 0].legend(loc="upper right", fontsize="small", frameon=False)  # inside the first panel: never clipped
    if picture_data is not data:  # element indices count the rows drawn, not the data's
        figure.text(0.01, 0.01, f"drawn on {picture_rows} of {count_rows(data)} rows", fontsize=8)
    height = figure.get_figheight()
    figure.subplots_adjust(left=0.03, right=0.97, bottom=0.3 / height, top=1 - 0.3 / height, wspace=0.08, hspace=0.35)
    return figure


def _densities(
    distribution: dist.Distribution | None, grid: torch.Tensor, elements: list[int], site_elements: int
) -> torch.Tensor | None:
    """``element_densities`` of the picked ``elements`` of a site of ``site_elements`` elements."""
    if distribution is None or distribution.batch_shape.numel() != site_elements:
        return None
    try:
        return element_densities(distribution, grid, elements)
    except (NotImplementedError, ValueError, RuntimeError):  # no density to draw: the samples stand alone
        return None


def _grid(samples: torch.Tensor) -> torch.Tensor:
    """``GRID_POINTS`` points per element column, spanning the central 99% of its samples."""
    levels = torch.tensor([0.005, 0.995], dtype=torch.double, device=samples.device)
    low, high = torch.quantile(samples.double(), levels, dim=0)
    width = (high - low).clamp_min(1e-3 * (1 + high.abs()))
    center = (low + high) / 2
    low, high = center - width / 2, center + width / 2
    steps = torch.linspace(0, 1, GRID_POINTS, dtype=torch.double, device=samples.device)[:, None]
    return (low + steps * (high - low)).to(samples.dtype)
