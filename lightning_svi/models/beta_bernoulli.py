"""Beta-Bernoulli: one success rate with a learnable Beta prior — the forum's model.

    α, β > 0                     (θ: ``PyroParam``s ``alpha`` and ``beta``)
    c ~ Beta(α, β)               (latent site ``rate``, global)
    x_i ~ Bernoulli(c)           i = 1..N   (observed site ``outcome``)

The evidence of a sequence with k successes is log B(α + k, β + N − k) − log B(α, β) and the
posterior is Beta(α + k, β + N − k). With one rate, α and β are not identifiable from the data:
the evidence is maximised along a ridge (α / (α + β) → k / N with α + β → ∞), which is what makes
the forum's "full guide versus empty guide" comparison instructive.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from lightning_svi.config import model_specs as specs
from lightning_svi.core.svi_model import Batch, SVIModel
from lightning_svi.models.beta_binomial import log_beta_ratio


def beta_bernoulli_posterior(outcomes: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> dist.Beta:
    """The posterior Beta(α + k, β + N − k) of a rate after N outcomes with k successes."""
    successes = outcomes.sum()
    return dist.Beta(alpha + successes, beta + len(outcomes) - successes)


def beta_bernoulli_log_evidence(outcomes: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """log p(x | α, β) of a sequence of outcomes: log B(α + k, β + N − k) − log B(α, β)."""
    # Plain tensor arithmetic, no Beta object: this runs on every logging step.
    alpha, beta = torch.as_tensor(alpha), torch.as_tensor(beta)
    successes = outcomes.sum()
    return log_beta_ratio(alpha + successes, beta + (outcomes.numel() - successes), alpha, beta)


class BetaBernoulli(SVIModel):
    """N coin flips sharing one Beta(α, β) rate; θ = (α, β)."""

    name = specs.BETA_BERNOULLI.name
    plate_name = "flips"
    table = specs.BETA_BERNOULLI.table

    def __init__(self, num_data: int, alpha_init: float = 1.0, beta_init: float = 1.0) -> None:
        super().__init__(num_data)
        self.alpha = PyroParam(torch.tensor(float(alpha_init)), constraint=constraints.positive)
        self.beta = PyroParam(torch.tensor(float(beta_init)), constraint=constraints.positive)

    @classmethod
    def synthetic_data(cls, seed: int, num_flips: int = 5000, rate: float = 0.3) -> Batch:
        generator = torch.Generator().manual_seed(seed)
        return {"outcome": torch.bernoulli(torch.full((num_flips,), float(rate)), generator=generator)}

    def forward(self, batch: Batch) -> None:
        rate = pyro.sample("rate", dist.Beta(self.alpha, self.beta))
        with self.data_plate(batch):
            pyro.sample("outcome", dist.Bernoulli(rate), obs=batch["outcome"])

    def full_guide(self) -> PyroModule:
        return BetaGuide("rate")

    def log_evidence(self, data: Batch) -> torch.Tensor:
        return beta_bernoulli_log_evidence(data["outcome"], self.alpha, self.beta)

    def exact_posterior(self, data: Batch) -> dict[str, dist.Distribution]:
        return {"rate": beta_bernoulli_posterior(data["outcome"], self.alpha, self.beta)}


class BetaGuide(PyroModule):
    """q_φ(c) = Beta(c; qa, qb) for one global rate ``site``: contains the conjugate posterior.

    It starts at the uniform Beta(1, 1) by default, far from any informative posterior, so the gap
    visibly closes.
    """

    def __init__(self, site: str, qa_init: float = 1.0, qb_init: float = 1.0) -> None:
        super().__init__()
        self.site = site
        self.qa = PyroParam(torch.tensor(float(qa_init)), constraint=constraints.positive)
        self.qb = PyroParam(torch.tensor(float(qb_init)), constraint=constraints.positive)

    def forward(self, batch: Batch) -> None:
        pyro.sample(self.site, dist.Beta(self.qa, self.qb))
