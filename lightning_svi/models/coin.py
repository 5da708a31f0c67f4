"""Coin: the fairness of one coin, from the Pyro SVI tutorial. No θ at all.

    f ~ Beta(10, 10)                 (latent site ``fairness``)
    x_i ~ Bernoulli(f)   i = 1..N    (observed site ``flip``; embedded data: 6 heads, 4 tails)

The posterior is Beta(10 + heads, 10 + tails) = Beta(16, 14) (mean 0.5333, sd 0.0894) and the
evidence of the flip sequence is B(10 + heads, 10 + tails) / B(10, 10). With no θ, everything SVI
changes is φ: ``trace/log_p`` still rises, because φ moves the guide's samples of f to where the
joint density p(x, f) is high.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from lightning_svi.data.table import RowCheck, TableSpec
from lightning_svi.models.base import Batch, SVIModel


def _log_beta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


class Coin(SVIModel):
    """Bernoulli flips of one coin with a Beta prior on its fairness; θ is empty."""

    name = "coin"
    plate_name = "flips"
    table = TableSpec(columns=("flip",), row_checks=(RowCheck("flip is 0 or 1", lambda row: row["flip"] <= 1),))

    def __init__(self, num_data: int, prior_heads: float = 10.0, prior_tails: float = 10.0) -> None:
        super().__init__(num_data)
        self.prior_heads = float(prior_heads)
        self.prior_tails = float(prior_tails)

    @classmethod
    def synthetic_data(cls, seed: int, heads: int = 6, tails: int = 4) -> Batch:
        """The tutorial's flips: ``heads`` ones then ``tails`` zeros (``seed`` is not needed)."""
        return {"flip": torch.cat([torch.ones(heads), torch.zeros(tails)])}

    def forward(self, batch: Batch) -> None:
        fairness = pyro.sample("fairness", dist.Beta(self.prior_heads, self.prior_tails))
        with self.data_plate(batch):
            pyro.sample("flip", dist.Bernoulli(fairness), obs=batch["flip"])

    def full_guide(self) -> PyroModule:
        return CoinFullGuide()

    def _posterior_counts(self, data: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        heads = data["flip"].sum()
        return self.prior_heads + heads, self.prior_tails + len(data["flip"]) - heads

    def log_evidence(self, data: Batch) -> torch.Tensor:
        heads, tails = self._posterior_counts(data)
        prior_heads, prior_tails = torch.tensor(self.prior_heads), torch.tensor(self.prior_tails)
        return _log_beta(heads, tails) - _log_beta(prior_heads, prior_tails)

    def exact_posterior(self, data: Batch) -> dict[str, dist.Distribution]:
        return {"fairness": dist.Beta(*self._posterior_counts(data))}


class CoinFullGuide(PyroModule):
    """q_φ(f) = Beta(qa, qb): contains the exact posterior. It starts at the uniform Beta(1, 1), far
    from the posterior (the tutorial's Beta(15, 15) is within 0.03 nats of it), so the gap visibly closes."""

    def __init__(self, qa_init: float = 1.0, qb_init: float = 1.0) -> None:
        super().__init__()
        self.qa = PyroParam(torch.tensor(qa_init), constraint=constraints.positive)
        self.qb = PyroParam(torch.tensor(qb_init), constraint=constraints.positive)

    def forward(self, batch: Batch) -> None:
        pyro.sample("fairness", dist.Beta(self.qa, self.qb))
