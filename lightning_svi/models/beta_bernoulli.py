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

from lightning_svi.data.table import RowCheck, TableSpec
from lightning_svi.models.base import Batch, SVIModel
from lightning_svi.models.beta_binomial import log_beta


class BetaBernoulli(SVIModel):
    """N coin flips sharing one Beta(α, β) rate; θ = (α, β)."""

    name = "beta_bernoulli"
    plate_name = "flips"
    table = TableSpec(
        columns=("outcome",), row_checks=(RowCheck("outcome is 0 or 1", lambda row: row["outcome"] <= 1),)
    )

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
        return BetaBernoulliFullGuide()

    def log_evidence(self, data: Batch) -> torch.Tensor:
        successes = data["outcome"].sum()
        failures = len(data["outcome"]) - successes
        return log_beta(self.alpha + successes, self.beta + failures) - log_beta(self.alpha, self.beta)

    def exact_posterior(self, data: Batch) -> dict[str, dist.Distribution]:
        successes = data["outcome"].sum()
        return {"rate": dist.Beta(self.alpha + successes, self.beta + len(data["outcome"]) - successes)}


class BetaBernoulliFullGuide(PyroModule):
    """q_φ(c) = Beta(c; qa, qb): contains the exact posterior."""

    def __init__(self) -> None:
        super().__init__()
        self.qa = PyroParam(torch.tensor(1.0), constraint=constraints.positive)
        self.qb = PyroParam(torch.tensor(1.0), constraint=constraints.positive)

    def forward(self, batch: Batch) -> None:
        pyro.sample("rate", dist.Beta(self.qa, self.qb))
