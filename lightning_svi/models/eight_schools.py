"""Eight schools (Rubin 1981): a hierarchy of school effects, centred or non-centred.

    μ ~ Normal(0, 5),  τ ~ HalfCauchy(5)          (latent sites ``mu``, ``tau``)
    centred:      θ_j ~ Normal(μ, τ)               (latent site ``theta``)
    non-centred:  θ̃_j ~ Normal(0, 1), θ_j = μ + τ θ̃_j   (latent ``theta_raw``, deterministic ``theta``)
    y_j ~ Normal(θ_j, σ_j)                        (observed site ``y``; σ_j known)

Both describe the same joint distribution of (μ, τ, θ, y); they differ in the geometry the guide
has to fit. With few data the centred posterior is a funnel (θ_j squeezed onto μ as τ → 0) that a
mean-field guide fits poorly; the non-centred one is close to independent. No θ (model parameter):
every quantity is latent.

The evidence has a one-dimensional integral: given τ, y ~ Normal(μ 1, diag(σ² + τ²)) with
μ ~ Normal(0, 5) integrated out exactly, and τ = 5 tan(πu / 2) turns the HalfCauchy prior into
u ~ Uniform(0, 1), integrated by the midpoint rule.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from lightning_svi.config import model_specs as specs
from lightning_svi.config.requirements import require_choice
from lightning_svi.core.svi_model import Batch, SVIModel

EFFECTS = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
STANDARD_ERRORS = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


class EightSchools(SVIModel):
    """Hierarchical normal model of per-school effects ``y`` with known standard errors ``sigma``."""

    name = specs.EIGHT_SCHOOLS.name
    plate_name = "schools"
    table = specs.EIGHT_SCHOOLS.table

    def __init__(
        self, num_data: int, parameterization: str = "non_centered", mu_scale: float = 5.0, tau_scale: float = 5.0
    ) -> None:
        super().__init__(num_data)
        require_choice("model.parameterization", parameterization, specs.PARAMETERIZATIONS)
        self.parameterization = parameterization
        self.mu_scale = float(mu_scale)
        self.tau_scale = float(tau_scale)

    @classmethod
    def synthetic_data(cls, seed: int) -> Batch:
        """The classic data of the SAT coaching study (the same for every ``seed``)."""
        return {"y": torch.tensor(EFFECTS), "sigma": torch.tensor(STANDARD_ERRORS)}

    @property
    def local_site(self) -> str:
        """The per-school latent site the guide must sample."""
        return "theta" if self.parameterization == "centered" else "theta_raw"

    def forward(self, batch: Batch) -> None:
        mu = pyro.sample("mu", dist.Normal(0.0, self.mu_scale))
        tau = pyro.sample("tau", dist.HalfCauchy(self.tau_scale))
        with self.data_plate(batch):
            if self.parameterization == "centered":
                theta = pyro.sample("theta", dist.Normal(mu, tau))
            else:
                theta_raw = pyro.sample("theta_raw", dist.Normal(0.0, 1.0))
                theta = pyro.deterministic("theta", mu + tau * theta_raw)
            pyro.sample("y", dist.Normal(theta, batch["sigma"]), obs=batch["y"])

    def full_guide(self) -> PyroModule:
        return EightSchoolsFullGuide(self)

    def log_evidence(self, data: Batch, num_points: int = 2000) -> torch.Tensor:
        u = (torch.arange(num_points, dtype=torch.float64) + 0.5) / num_points
        tau = self.tau_scale * torch.tan(math.pi * u / 2)
        y, sigma = data["y"].double(), data["sigma"].double()
        covariance = torch.diag_embed(sigma**2 + tau[:, None] ** 2) + self.mu_scale**2
        log_likelihood = dist.MultivariateNormal(torch.zeros_like(y), covariance).log_prob(y)
        return (torch.logsumexp(log_likelihood, dim=0) - math.log(num_points)).to(data["y"].dtype)


class EightSchoolsFullGuide(PyroModule):
    """Mean field: Normal μ, LogNormal τ, one Normal per school for the local site of the parameterization."""

    def __init__(self, model: EightSchools) -> None:
        super().__init__()
        self._data_plate = model.data_plate
        self.local_site = model.local_site
        self.mu_loc = PyroParam(torch.tensor(0.0))
        self.mu_scale = PyroParam(torch.tensor(1.0), constraint=constraints.positive)
        self.tau_loc = PyroParam(torch.tensor(0.0))
        self.tau_scale = PyroParam(torch.tensor(0.5), constraint=constraints.positive)
        self.local_loc = PyroParam(torch.zeros(model.num_data))
        self.local_scale = PyroParam(torch.ones(model.num_data), constraint=constraints.positive)

    def forward(self, batch: Batch) -> None:
        pyro.sample("mu", dist.Normal(self.mu_loc, self.mu_scale))
        pyro.sample("tau", dist.LogNormal(self.tau_loc, self.tau_scale))
        with self._data_plate(batch) as index:
            pyro.sample(self.local_site, dist.Normal(self.local_loc[index], self.local_scale[index]))
