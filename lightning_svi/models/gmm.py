"""Gaussian mixture with a discrete assignment per data point, summed out by ``TraceEnum_ELBO``.

    w ~ Dirichlet(1_K)                        (latent site ``weights``)
    μ_k ~ Normal(0, prior_scale)  k = 1..K    (latent site ``locs``, one vector)
    σ ~ LogNormal(0, 2)                       (latent site ``scale``)
    a_i ~ Categorical(w)                      (latent site ``assignment``, enumerated in parallel)
    x_i ~ Normal(μ_{a_i}, σ)                  (observed site ``x``)

``assignment`` is marked for parallel enumeration, so ``TraceEnum_ELBO`` replaces its sample by
the exact sum  log p(x_i | w, μ, σ) = logsumexp_k [log w_k + log N(x_i; μ_k, σ)]. Guides cover the
globals only (an autoguide leaves an enumerated site out, see ``guides.py``); the posterior of
each assignment is computed after training from the trained guide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from pyro.ops.indexing import Vindex

from lightning_svi.config import model_specs as specs
from lightning_svi.core.svi_model import Batch, SVIModel

if TYPE_CHECKING:
    from matplotlib.figure import Figure


PICTURE_POINTS = 1000  # points in the posterior picture: enough to see the clusters


class GaussianMixture(SVIModel):
    """One-dimensional mixture of K Gaussians with a shared scale; no θ (every global is latent)."""

    name = specs.GAUSSIAN_MIXTURE.name
    plate_name = "points"
    table = specs.GAUSSIAN_MIXTURE.table

    def __init__(self, num_data: int, num_components: int = 3, prior_scale: float = 10.0) -> None:
        super().__init__(num_data)
        self.num_components = int(num_components)
        self.prior_scale = float(prior_scale)

    @classmethod
    def synthetic_data(
        cls, seed: int, num_points: int = 300, locs: tuple[float, ...] = (-5.0, 0.0, 5.0), scale: float = 1.0
    ) -> Batch:
        """Well-separated clusters of equal size around ``locs``, shuffled."""
        generator = torch.Generator().manual_seed(seed)
        centres = torch.tensor(locs, dtype=torch.get_default_dtype())
        assignment = torch.arange(num_points) % len(centres)
        noise = torch.randn(num_points, generator=generator)
        points = centres[assignment] + scale * noise
        return {"x": points[torch.randperm(num_points, generator=generator)]}

    def forward(self, batch: Batch) -> None:
        components = self.num_components
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(components)))
        # One event of K locations (not a plate), so that it broadcasts against the data plate.
        locs = pyro.sample("locs", dist.Normal(torch.zeros(components), self.prior_scale).to_event(1))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
        with self.data_plate(batch):
            assignment = pyro.sample("assignment", dist.Categorical(weights), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(Vindex(locs)[..., assignment], scale), obs=batch["x"])

    def full_guide(self) -> PyroModule:
        return GaussianMixtureFullGuide(self.num_components, self.prior_scale)

    def posterior_figure(self, guide: PyroModule, data: Batch) -> Figure:
        """The data coloured by their most probable component, with the guide's component locations:
        at most ``PICTURE_POINTS`` points, evenly spread over the rows (all 10,000 of the bench's GMM
        took 0.7 s a picture, as long as a thousand compiled steps)."""
        from matplotlib.figure import Figure

        from lightning_svi.analysis.posterior import enumerated_marginals, latent_samples, row_subsample

        data, _ = row_subsample(data, PICTURE_POINTS)
        num_draws = 50
        probs = enumerated_marginals(self, guide, data, num_samples=num_draws, plates=1)["assignment"]
        locs = latent_samples(self, guide, data, num_draws, columns={"locs": slice(None)})["locs"]
        figure = Figure(figsize=(6, 3), dpi=100)
        axes = figure.add_subplot()
        points = data["x"].detach().cpu()
        height = torch.rand(len(points), generator=torch.Generator().manual_seed(0))  # jitter, for legibility
        axes.scatter(points, height, c=probs.argmax(-1).cpu(), cmap="tab10", vmin=0, vmax=9, s=6, alpha=0.6)
        for component, loc in enumerate(locs.mean(0).detach().cpu().tolist()):
            axes.axvline(loc, color=f"C{component}", linestyle="--", label=f"loc[{component}] = {loc:.2f}")
        axes.set_yticks([])
        axes.set_xlabel("x, coloured by the most probable assignment")
        axes.legend(fontsize="small")
        figure.tight_layout()
        return figure


class GaussianMixtureFullGuide(PyroModule):
    """Mean-field q_φ over the globals: Dirichlet weights, Normal locations, LogNormal scale.

    The locations start spread over ±prior_scale / 2, which breaks the labels' symmetry.
    """

    def __init__(self, num_components: int, prior_scale: float) -> None:
        super().__init__()
        spread = torch.linspace(-0.5, 0.5, num_components) * prior_scale
        self.weights_concentration = PyroParam(torch.ones(num_components), constraint=constraints.positive)
        self.locs_loc = PyroParam(spread)
        self.locs_scale = PyroParam(torch.ones(num_components), constraint=constraints.positive)
        self.scale_loc = PyroParam(torch.tensor(0.0))
        self.scale_scale = PyroParam(torch.tensor(0.5), constraint=constraints.positive)

    def forward(self, batch: Batch) -> None:
        pyro.sample("weights", dist.Dirichlet(self.weights_concentration))
        pyro.sample("locs", dist.Normal(self.locs_loc, self.locs_scale).to_event(1))
        pyro.sample("scale", dist.LogNormal(self.scale_loc, self.scale_scale))
