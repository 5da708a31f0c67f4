"""Pyro's SVI Part I coin, as a user writes it: a model and a guide, nothing from lightning-svi.

    python train.py model=custom model._target_=examples.coin.model \
        guide=custom guide._target_=examples.coin.guide data=file data.path=examples/flips.csv
"""

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints


def model(outcome: torch.Tensor) -> None:
    """A fairness f ~ Beta(10, 10), and each flip (a column ``outcome`` of 0s and 1s) ~ Bernoulli(f)."""
    fairness = pyro.sample("fairness", dist.Beta(10.0, 10.0))
    with pyro.plate("data", len(outcome)):  # a plate of the data's size: minibatches and DDP scale by it
        pyro.sample("obs", dist.Bernoulli(fairness), obs=outcome)


def guide(outcome: torch.Tensor) -> None:
    """q(f) = Beta(alpha_q, beta_q): φ is the two pyro.params."""
    alpha_q = pyro.param("alpha_q", torch.tensor(15.0), constraint=constraints.positive)
    beta_q = pyro.param("beta_q", torch.tensor(15.0), constraint=constraints.positive)
    pyro.sample("fairness", dist.Beta(alpha_q, beta_q))
