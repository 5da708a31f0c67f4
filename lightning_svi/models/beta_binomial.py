"""Beta-binomial: per-group success rates drawn from a shared Beta prior.

    α, β > 0                      (θ: ``PyroParam``s ``alpha`` and ``beta``)
    c_g ~ Beta(α, β)              g = 1..G   (latent site ``rate``)
    y_g ~ Binomial(n_g, c_g)      (observed site ``successes``)

The prior is conjugate, so the posterior of each rate is Beta(α + y_g, β + n_g − y_g) and the
evidence is the beta-binomial marginal

    log p(y | α, β) = Σ_g log C(n_g, y_g) + log B(α + y_g, β + n_g − y_g) − log B(α, β).

Maximising it over (α, β) gives the type-II maximum-likelihood values that SVI with the
``full`` guide converges to. The forum's single-group model is G = 1.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from lightning_svi.config import model_specs as specs
from lightning_svi.core.svi_model import Batch, SVIModel


def log_beta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


def log_beta_ratio(a_post: torch.Tensor, b_post: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log B(a_post, b_post) − log B(a, b), computed in float64 and returned in ``a``'s dtype.

    Where θ runs large (an empty guide drives α and β to ~1e6), each log B is ~1e6 and their
    difference a few hundred: float32 keeps none of its digits (the beta-binomial's evidence came
    out −275.00 instead of −254.14)."""
    dtype = torch.as_tensor(a).dtype
    a_post, b_post, a, b = (torch.as_tensor(value).double() for value in (a_post, b_post, a, b))
    return (log_beta(a_post, b_post) - log_beta(a, b)).to(dtype)


def beta_binomial_log_evidence(
    successes: torch.Tensor, trials: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """log p(y | α, β), summed over groups, binomial coefficients included."""
    failures = trials - successes
    log_binomial = torch.lgamma(trials + 1) - torch.lgamma(successes + 1) - torch.lgamma(failures + 1)
    return (log_binomial + log_beta_ratio(alpha + successes, beta + failures, alpha, beta)).sum()


class BetaBinomial(SVIModel):
    """Grouped binomial counts with Beta(α, β) rates; θ = (α, β)."""

    name = specs.BETA_BINOMIAL.name
    plate_name = "groups"
    table = specs.BETA_BINOMIAL.table

    def __init__(self, num_data: int, alpha_init: float = 1.0, beta_init: float = 1.0) -> None:
        super().__init__(num_data)
        self.alpha = PyroParam(torch.tensor(float(alpha_init)), constraint=constraints.positive)
        self.beta = PyroParam(torch.tensor(float(beta_init)), constraint=constraints.positive)

    @classmethod
    def synthetic_data(
        cls,
        seed: int,
        num_groups: int = 50,
        alpha: float = 2.0,
        beta: float = 6.0,
        min_trials: int = specs.SYNTHETIC_TRIALS["min_trials"],
        max_trials: int = specs.SYNTHETIC_TRIALS["max_trials"],
    ) -> Batch:
        """Groups with rates from Beta(alpha, beta): enough of them for α and β to be identifiable."""
        generator = torch.Generator().manual_seed(seed)
        trials = torch.randint(min_trials, max_trials + 1, (num_groups,), generator=generator).float()
        gamma_a = torch._standard_gamma(torch.full((num_groups,), float(alpha)), generator=generator)
        gamma_b = torch._standard_gamma(torch.full((num_groups,), float(beta)), generator=generator)
        rates = gamma_a / (gamma_a + gamma_b)
        successes = torch.binomial(trials, rates, generator=generator)
        return {"successes": successes, "trials": trials}

    def forward(self, batch: Batch) -> None:
        with self.data_plate(batch):
            rate = pyro.sample("rate", dist.Beta(self.alpha, self.beta))
            pyro.sample("successes", dist.Binomial(batch["trials"], rate), obs=batch["successes"])

    def full_guide(self) -> PyroModule:
        return BetaBinomialFullGuide(self)

    def log_evidence(self, data: Batch) -> torch.Tensor:
        return beta_binomial_log_evidence(data["successes"], data["trials"], self.alpha, self.beta)

    def exact_posterior(self, data: Batch) -> dict[str, dist.Distribution]:
        """The posterior of each group's rate under the current θ."""
        return {"rate": dist.Beta(self.alpha + data["successes"], self.beta + data["trials"] - data["successes"])}


class BetaBinomialFullGuide(PyroModule):
    """q_φ(c) = Π_g Beta(c_g; qa_g, qb_g): contains the exact posterior, so the ELBO can reach log p(y)."""

    def __init__(self, model: BetaBinomial) -> None:
        super().__init__()
        self._data_plate = model.data_plate
        self.qa = PyroParam(torch.ones(model.num_data), constraint=constraints.positive)
        self.qb = PyroParam(torch.ones(model.num_data), constraint=constraints.positive)

    def forward(self, batch: Batch) -> None:
        with self._data_plate(batch) as index:
            pyro.sample("rate", dist.Beta(self.qa[index], self.qb[index]))
