"""The bench's models and guides in NumPyro, timed as a jitted ``svi.update`` loop.

Import this module only after ``bench.py`` has set ``XLA_FLAGS``: XLA reads its thread settings
once, when JAX starts. Needs the ``[bench]`` extra (numpyro, jax, and funsor, which NumPyro's
``TraceEnum_ELBO`` uses to sum out the GMM's assignment).

The programs follow lightning-svi's models site by site (same priors, likelihoods, guide families
and initial values). What differs:

* beta-Bernoulli uses ``Trace_ELBO`` (lightning-svi's default is ``TraceEnum_ELBO``, which with no
  enumerated site computes the same estimator); particles are vectorized (``vmap``) as in the
  Pyro runs.
* The data plate has no ``subsample`` index (lightning-svi's plate subsamples by ``batch["index"]``,
  the full index in a full-batch run); float32 throughout, as in torch.
* The optimizer is ``numpyro.optim.Adam`` at the plain Pyro loop's learning rate, without
  lightning-svi's learning-rate schedule; neither changes the cost of a step noticeably.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import numpyro.optim
from numpyro.distributions import constraints
from numpyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from numpyro.infer.elbo import ELBO
from numpyro.infer.svi import SVIState
from numpyro.ops.indexing import Vindex

LEARNING_RATE = 0.05
Program = tuple[Callable[..., None], Callable[..., None]]


def beta_bernoulli(alpha_init: float, beta_init: float) -> Program:
    """One Beta(α, β) rate with learnable α, β; q(rate) = Beta(qa, qb)."""

    def model(outcome: jnp.ndarray) -> None:
        alpha = numpyro.param("alpha", alpha_init, constraint=constraints.positive)
        beta = numpyro.param("beta", beta_init, constraint=constraints.positive)
        rate = numpyro.sample("rate", dist.Beta(alpha, beta))
        with numpyro.plate("flips", outcome.shape[0]):
            numpyro.sample("outcome", dist.Bernoulli(rate), obs=outcome)

    def guide(outcome: jnp.ndarray) -> None:
        qa = numpyro.param("qa", 1.0, constraint=constraints.positive)
        qb = numpyro.param("qb", 1.0, constraint=constraints.positive)
        numpyro.sample("rate", dist.Beta(qa, qb))

    return model, guide


def gmm(num_components: int, prior_scale: float) -> Program:
    """K Gaussians with Dirichlet weights and a shared scale; the assignment enumerated in parallel."""

    def model(x: jnp.ndarray) -> None:
        weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(num_components)))
        locs = numpyro.sample("locs", dist.Normal(jnp.zeros(num_components), prior_scale).to_event(1))
        scale = numpyro.sample("scale", dist.LogNormal(0.0, 2.0))
        with numpyro.plate("points", x.shape[0]):
            assignment = numpyro.sample("assignment", dist.Categorical(weights), infer={"enumerate": "parallel"})
            numpyro.sample("x", dist.Normal(Vindex(locs)[..., assignment], scale), obs=x)

    def guide(x: jnp.ndarray) -> None:
        spread = jnp.linspace(-0.5, 0.5, num_components) * prior_scale
        concentration = numpyro.param(
            "weights_concentration", jnp.ones(num_components), constraint=constraints.positive
        )
        locs_loc = numpyro.param("locs_loc", spread)
        locs_scale = numpyro.param("locs_scale", jnp.ones(num_components), constraint=constraints.positive)
        scale_loc = numpyro.param("scale_loc", 0.0)
        scale_scale = numpyro.param("scale_scale", 0.5, constraint=constraints.positive)
        numpyro.sample("weights", dist.Dirichlet(concentration))
        numpyro.sample("locs", dist.Normal(locs_loc, locs_scale).to_event(1))
        numpyro.sample("scale", dist.LogNormal(scale_loc, scale_scale))

    return model, guide


# lightning-svi model name -> (program taking the model's config options, ELBO for a particle count)
PROGRAMS: dict[str, tuple[Callable[..., Program], Callable[[int], ELBO]]] = {
    "beta_bernoulli": (beta_bernoulli, lambda particles: Trace_ELBO(num_particles=particles)),
    "gmm": (gmm, lambda particles: TraceEnum_ELBO(num_particles=particles, max_plate_nesting=1)),
}


@dataclass(frozen=True)
class JittedLoop:
    update: Callable[..., tuple[SVIState, jnp.ndarray]]  # jax.jit(svi.update), compiled
    initial_state: SVIState
    arrays: dict[str, jnp.ndarray]
    compile_seconds: float  # svi.init and the first (compiling) call of the jitted update


def jitted_loop(model_name: str, options: dict, data: dict[str, np.ndarray], num_particles: int) -> JittedLoop:
    program, elbo = PROGRAMS[model_name]
    svi = SVI(*program(**options), numpyro.optim.Adam(LEARNING_RATE), elbo(num_particles))
    arrays = {name: jnp.asarray(values) for name, values in data.items()}
    started = time.perf_counter()
    # Jitted, init compiles in a fraction of a second; run op by op it takes seconds on a small CPU.
    initial_state = jax.jit(svi.init)(jax.random.PRNGKey(0), **arrays)
    update = jax.jit(svi.update)
    jax.block_until_ready(update(initial_state, **arrays))
    return JittedLoop(update, initial_state, arrays, time.perf_counter() - started)


def steps_per_second(loop: JittedLoop, steps: int, warmup: int) -> float:
    """Steps/s of the jitted update from the initial state, after ``warmup`` untimed steps."""
    state = loop.initial_state
    for _ in range(warmup):
        state, _ = loop.update(state, **loop.arrays)
    jax.block_until_ready(state)
    started = time.perf_counter()
    for _ in range(steps):
        state, loss = loop.update(state, **loop.arrays)
    jax.block_until_ready(loss)  # each update waits on the previous state, so this waits for all of them
    return steps / (time.perf_counter() - started)
