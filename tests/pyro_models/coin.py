# Source: pyro-ppl/pyro tutorial/source/svi_part_i.ipynb ("SVI Part I"), at commit
# ff6ae1c9572591791aae8842bcd702fcf0b46fd6. `model` and `guide` are copied verbatim (comments included);
# the notebook's imports, its `data` list and its SVI loop are kept as they were, only the printing,
# `smoke_test` and the version assert are left out. The loop itself lives in `reference_svi` below.
"""SVI Part I: one coin, latent_fairness ~ Beta(10, 10), ten flips, guide Beta(alpha_q, beta_q) with pyro.param."""

# ruff: noqa: UP032, W291
from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.distributions.constraints as constraints
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from tests.pyro_models.common import run_steps

# ---- copied from the notebook -------------------------------------------------------------------
# fmt: off

# create some data with 6 observed heads and 4 observed tails
# (a module-level global in the tutorial; kept, with the tutorial's value: a list of ten 0-d tensors)
data = []
for _ in range(6):
    data.append(torch.tensor(1.0))
for _ in range(4):
    data.append(torch.tensor(0.0))

def model(data):
    # define the hyperparameters that control the Beta prior
    alpha0 = torch.tensor(10.0)
    beta0 = torch.tensor(10.0)
    # sample f from the Beta prior
    f = pyro.sample("latent_fairness", dist.Beta(alpha0, beta0))
    # loop over the observed data
    for i in range(len(data)):
        # observe datapoint i using the ernoulli likelihood
        pyro.sample("obs_{}".format(i), dist.Bernoulli(f), obs=data[i])

def guide(data):
    # register the two variational parameters with Pyro
    # - both parameters will have initial value 15.0. 
    # - because we invoke constraints.positive, the optimizer 
    # will take gradients on the unconstrained parameters
    # (which are related to the constrained parameters by a log)
    alpha_q = pyro.param("alpha_q", torch.tensor(15.0), 
                         constraint=constraints.positive)
    beta_q = pyro.param("beta_q", torch.tensor(15.0), 
                        constraint=constraints.positive)
    # sample latent_fairness from the distribution Beta(alpha_q, beta_q)
    pyro.sample("latent_fairness", dist.Beta(alpha_q, beta_q))

# fmt: on
# ---- end of the copied code ---------------------------------------------------------------------

PRIOR = (10.0, 10.0)  # the model's Beta(alpha0, beta0)
LR = 0.02  # the tutorial's 0.0005 needs its 2000 steps; 0.02 gets there in a few hundred
STEPS = 300
BETAS = (0.90, 0.999)  # the tutorial's adam_params


def make_data(seed: int = 0) -> dict[str, torch.Tensor]:
    """The tutorial's ten flips (6 heads, then 4 tails) as one 1-D tensor, keyed by the model's argument name.

    The tutorial's data are fixed, so ``seed`` changes nothing; it is there for the common interface.
    ``model(data)`` indexes ``data[i]`` and takes ``len(data)``: a tensor of shape (10,) is what a CSV column gives.
    """
    del seed
    return {"data": torch.stack(data)}


def posterior(flips: torch.Tensor) -> tuple[float, float]:
    """The exact posterior Beta(alpha, beta) of latent_fairness (the guide's family contains it)."""
    heads = float(flips.sum())
    return PRIOR[0] + heads, PRIOR[1] + len(flips) - heads


def log_evidence(flips: torch.Tensor) -> float:
    """log p(data) = log B(a0 + heads, b0 + tails) - log B(a0, b0): the ELBO's upper bound, reached at the posterior."""

    def log_beta(a: float, b: float) -> float:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    a, b = posterior(flips)
    return log_beta(a, b) - log_beta(*PRIOR)


def reference_svi(
    seed: int = 0,
    steps: int = STEPS,
    lr: float = LR,
    *,
    data_seed: int | None = None,
    betas: tuple[float, float] = BETAS,
    num_particles: int = 1,
) -> dict[str, Any]:
    """The tutorial's loop: ``SVI(model, guide, Adam, Trace_ELBO())``, ``svi.step(data)`` ``steps`` times."""
    flips = make_data(seed if data_seed is None else data_seed)["data"]
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    optimizer = Adam({"lr": lr, "betas": betas})
    svi = SVI(model, guide, optimizer, loss=Trace_ELBO(num_particles=num_particles))
    result = run_steps(svi, steps, flips)
    alpha_q, beta_q = result["params"]["alpha_q"], result["params"]["beta_q"]
    result.update(
        model="coin",
        seed=seed,
        lr=lr,
        elbo_name="Trace_ELBO",
        inferred_mean=alpha_q / (alpha_q + beta_q),
        log_evidence=log_evidence(flips),
    )
    return result
