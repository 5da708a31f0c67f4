"""``posterior.nc``: a run's posterior in ArviZ's format (``InferenceData`` as netCDF), readable without this package.

Groups: ``posterior`` (guide draws of every latent site the guide or the prior draws; sites ``TraceEnum_ELBO``
sums out are not drawn), ``posterior_predictive`` (each observed site drawn from the model given the same guide
draws), ``observed_data``, and ``importance_weights`` (the log weights of the importance-weighted evidence, where
computed). One chain. ``az.summary``, ``az.plot_posterior`` and ``az.plot_ppc`` read it as it is.

The file is bounded: a run whose draws over all rows would hold more than ``KEPT_ELEMENTS`` numbers is drawn on its
first rows (the file's ``rows`` attribute says how many), as ``posterior.latent_summaries`` bounds its work.
ArviZ is an optional extra (``pip install -e .[arviz]``): ``arviz_available`` tells whether it is installed.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from lightning_svi.analysis.posterior import (
    Batch,
    ReleaseObserved,
    Sites,
    affordable_rows,
    chunk_size,
    count_rows,
    draw_in_chunks,
    head_rows,
    predictive,
)

NUM_DRAWS = 500
KEPT_ELEMENTS = 10_000_000  # numbers of all draws together (40 MB in float32)


def arviz_available() -> bool:
    return importlib.util.find_spec("arviz") is not None


def write_posterior_netcdf(
    model: Callable,
    guide: Callable,
    data: Batch,
    path: Path,
    log_weights: torch.Tensor | None = None,
    num_draws: int = NUM_DRAWS,
    kept_elements: int = KEPT_ELEMENTS,
) -> Path:
    """Draw the guide's posterior and its predictive on ``data`` and write them (with ``log_weights``) to ``path``."""
    # ArviZ 0.2x logs at INFO which of its 1.0 packages are missing: not news to a user of this run.
    logging.getLogger("arviz.preview").setLevel(logging.WARNING)
    import arviz
    import xarray

    with torch.no_grad():
        sites = Sites.of(model, guide, data)
        rows = affordable_rows(sites, data, num_draws, kept_elements)
        if rows < count_rows(data):
            data = head_rows(data, rows)
            sites = Sites.of(model, guide, data)
        shapes = {**sites.latent, **{name: value.shape for name, value in sites.observed.items()}}
        released = ReleaseObserved()(model)
        chunks: dict[str, list[torch.Tensor]] = {name: [] for name in shapes}
        for draws in draw_in_chunks(
            predictive(released, guide, data, shapes), num_draws, chunk_size(sites.elements_per_draw)
        ):
            for name, values in draws.items():
                chunks[name].append(values.clone())

    def as_array(name: str) -> object:
        values = torch.cat(chunks[name])
        return values.reshape(1, len(values), *shapes[name]).cpu().numpy()

    groups = {
        "posterior": {name: as_array(name) for name in sites.latent},
        "posterior_predictive": {name: as_array(name) for name in sites.observed},
        "observed_data": {name: value.detach().cpu().numpy() for name, value in sites.observed.items()},
    }
    attrs = {
        "rows": count_rows(data),
        "source": "lightning-svi guide draws",
        "summed_out": ", ".join(sites.enumerated) or "none",
    }
    inference = arviz.from_dict(**{key: value for key, value in groups.items() if value}, attrs=attrs)
    if log_weights is not None:
        weights = {"log_weight": (("chain", "particle"), log_weights.detach().double().cpu().numpy()[None])}
        inference.add_groups({"importance_weights": xarray.Dataset(weights)}, warn_on_custom_groups=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    inference.to_netcdf(str(temporary))
    temporary.replace(path)
    return path
