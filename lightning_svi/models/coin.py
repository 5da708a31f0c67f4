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
from pyro.nn import PyroModule

from lightning_svi.config import model_specs as specs
from lightning_svi.core.svi_model import Batch, SVIModel
from lightning_svi.models.beta_bernoulli import BetaGuide, beta_bernoulli_log_evidence, beta_bernoulli_posterior


class Coin(SVIModel):
    """Bernoulli flips of one coin with a Beta prior on its fairness; θ is empty."""

    name = specs.COIN.name
    plate_name = "flips"
    table = specs.COIN.table

    def __init__(self, num_data: int, prior_heads: float = 10.0, prior_tails: float = 10.0) -> None:
        super().__init__(num_data)
        self.prior_heads = float(prior_heads)
        self.prior_tails = float(prior_tails)

    @classmethod
    def synthetic_data(
        cls, seed: int, heads: int = specs.SYNTHETIC_FLIPS["heads"], tails: int = specs.SYNTHETIC_FLIPS["tails"]
    ) -> Batch:
        """The tutorial's flips: ``heads`` ones then ``tails`` zeros (``seed`` is not needed)."""
        return {"flip": torch.cat([torch.ones(heads), torch.zeros(tails)])}

    def forward(self, batch: Batch) -> None:
        fairness = pyro.sample("fairness", dist.Beta(self.prior_heads, self.prior_tails))
        with self.data_plate(batch):
            pyro.sample("flip", dist.Bernoulli(fairness), obs=batch["flip"])

    def full_guide(self) -> PyroModule:
        # Starts at the uniform Beta(1, 1): the tutorial's Beta(15, 15) is within 0.03 nats of the
        # posterior, so its gap would barely move.
        return BetaGuide("fairness")

    def log_evidence(self, data: Batch) -> torch.Tensor:
        return beta_bernoulli_log_evidence(data["flip"], torch.tensor(self.prior_heads), torch.tensor(self.prior_tails))

    def exact_posterior(self, data: Batch) -> dict[str, dist.Distribution]:
        return {"fairness": beta_bernoulli_posterior(data["flip"], self.prior_heads, self.prior_tails)}
