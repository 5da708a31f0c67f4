"""A reference posterior for small models: Pyro's NUTS on the same model, to check the guide against.

The model's parameters θ stay at their fitted values: they are ``nn.Parameter``s of the model (``PyroParam``s,
or a user's ``pyro.param`` statements answered from the wrapper's parameters), not sample sites, so NUTS samples
the latent sites only, p_θ(z | x) at the fitted θ. Sites ``TraceEnum_ELBO`` sums out are summed out by NUTS too
(and not compared). NUTS runs ``warmup`` adaptation steps, then keeps ``draws`` draws of one chain, with trees
of depth at most ``MAX_TREE_DEPTH``.

Per latent site the guide's mean and sd (from guide draws) stand beside NUTS's, with a distance: the largest,
over the site's elements, of the 2-Wasserstein distance between the two normal approximations,
√((m_q − m_nuts)² + (s_q − s_nuts)²), in units of NUTS's sd. Below ~0.2 the guide matches the reference; above 1
it is off by more than a posterior sd. Only the first ``SHOWN_ELEMENTS`` elements of a site are drawn.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from pyro.infer import MCMC, NUTS

from lightning_svi.analysis.posterior import Batch, Sites, predictive

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WARMUP = 300
DRAWS = 300
GUIDE_DRAWS = 1000
MAX_TREE_DEPTH = 8  # 256 leapfrog steps per draw at most (Pyro's 10: a funnel took minutes)
MAX_ELEMENTS = 1000  # latent elements, all sites together, NUTS is run for (a small model)
SHOWN_ELEMENTS = 16  # elements of a site in the picture


class TooLarge(ValueError):
    """The model has too many latents for a NUTS reference at the end of a run."""


def _moments(samples: torch.Tensor) -> dict[str, torch.Tensor]:
    samples = samples.double()
    return {"mean": samples.mean(0), "sd": samples.std(0)}


def distance(guide: dict[str, torch.Tensor], nuts: dict[str, torch.Tensor]) -> float:
    """Largest 2-Wasserstein distance between the elements' normal approximations, in NUTS sds."""
    shift = torch.hypot(guide["mean"] - nuts["mean"], guide["sd"] - nuts["sd"])
    return float((shift / nuts["sd"].clamp_min(1e-12)).max())


def nuts_reference(
    model: Callable,
    guide: Callable,
    data: Batch,
    warmup: int = WARMUP,
    draws: int = DRAWS,
    guide_draws: int = GUIDE_DRAWS,
    max_elements: int = MAX_ELEMENTS,
) -> dict[str, Any]:
    """``{"method", "warmup", "draws", "seconds", "sites": {site: {"guide": {mean, sd}, "nuts": {mean, sd},
    "distance"}}}`` for every continuous latent site (flattened element lists); raises ``TooLarge`` for a model
    with more than ``max_elements`` latent elements."""
    sites = Sites.of(model, guide, data)
    shapes = {name: shape for name, shape in sites.latent.items() if not sites.sources[name].support.is_discrete}
    elements = sum(math.prod(shape) for shape in shapes.values())
    if elements > max_elements:
        raise TooLarge(
            f"{elements} latent elements: more than the {max_elements} a NUTS reference runs for at the end of a run"
        )
    started = time.perf_counter()
    kernel = NUTS(model, max_plate_nesting=sites.nesting, max_tree_depth=MAX_TREE_DEPTH, jit_compile=False)
    mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, disable_progbar=True)
    mcmc.run(data)
    reference = mcmc.get_samples()
    with torch.no_grad():
        drawn = predictive(model, guide, data, shapes)(guide_draws, True)
    result: dict[str, Any] = {}
    for name, shape in shapes.items():
        nuts = _moments(reference[name].detach().reshape(draws, math.prod(shape)))
        approximate = _moments(drawn[name])
        result[name] = {"guide": approximate, "nuts": nuts, "distance": distance(approximate, nuts)}
    return {
        "method": "nuts",
        "warmup": warmup,
        "draws": draws,
        "seconds": time.perf_counter() - started,
        "sites": result,
    }


def reference_figure(reference: dict[str, Any], shown_elements: int = SHOWN_ELEMENTS) -> Figure:
    """Per site, the guide's mean ± sd beside NUTS's, element by element."""
    from matplotlib.figure import Figure

    sites = reference["sites"]
    figure = Figure(figsize=(7, 2.2 * max(len(sites), 1)), dpi=100)
    for row, (name, entry) in enumerate(sites.items(), start=1):
        axes = figure.add_subplot(len(sites), 1, row)
        for offset, (label, key) in enumerate((("guide", "guide"), ("NUTS", "nuts"))):
            mean = torch.as_tensor(entry[key]["mean"]).reshape(-1)[:shown_elements]
            sd = torch.as_tensor(entry[key]["sd"]).reshape(-1)[:shown_elements]
            positions = torch.arange(len(mean)) + (offset - 0.5) * 0.3
            axes.errorbar(positions, mean, yerr=sd, fmt="o", capsize=3, color=f"C{offset}", label=f"{label} mean ± sd")
        axes.set_title(f"{name}: distance {entry['distance']:.2f} NUTS sd", fontsize="small")
        axes.set_xticks(range(len(mean)))
        axes.legend(fontsize="x-small")
    figure.tight_layout()
    return figure
