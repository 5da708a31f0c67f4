# Source: pyro-ppl/pyro examples/hmm.py ("MAP Baum-Welch learning Bach Chorales"), at commit
# ff6ae1c9572591791aae8842bcd702fcf0b46fd6. `model_1` (the vectorised HMM: `pyro.markov` over time,
# `infer={"enumerate": "parallel"}` on the hidden state, plates "sequences" (dim -2) and "tones" (dim -1)) is copied
# verbatim; its guide is the example's `AutoDelta(poutine.block(model, expose_fn=lambda msg:
# msg["name"].startswith("probs_")))`, built in `make_guide` as `main()` builds it. Left out: the other models, the
# JSB chorales download (no network here: `make_data` draws note sequences from a small HMM), logging, TMC, jit.
"""examples/hmm.py model_1: an HMM over binary notes, hidden state enumerated, MAP transition/emission tables."""

# ruff: noqa: UP032
from __future__ import annotations

import argparse
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta
from pyro.optim import Adam
from pyro.util import ignore_jit_warnings

from tests.pyro_models.common import run_steps

# The example's command-line `args` (its argparse defaults), which `model_1` reads as `args.hidden_dim` and
# `args.jit`. It is an argument of `model_1`, not a global, but its values are the example's; `batch_size=None`
# (the example trains on minibatches of 8) makes the reference loss exact and deterministic.
args = argparse.Namespace(
    model="1",
    num_steps=50,
    batch_size=None,
    hidden_dim=16,
    learning_rate=0.05,
    truncate=None,
    seed=0,
    jit=False,
)


# ---- copied from the example --------------------------------------------------------------------
# fmt: off
# Note that this is the "HMM" model in reference [1] (with the difference that
# in [1] the probabilities probs_x and probs_y are not MAP-regularized with
# Dirichlet and Beta distributions for any of the models)
def model_1(sequences, lengths, args, batch_size=None, include_prior=True):
    # Sometimes it is safe to ignore jit warnings. Here we use the
    # pyro.util.ignore_jit_warnings context manager to silence warnings about
    # conversion to integer, since we know all three numbers will be the same
    # across all invocations to the model.
    with ignore_jit_warnings():
        num_sequences, max_length, data_dim = map(int, sequences.shape)
        assert lengths.shape == (num_sequences,)
        assert lengths.max() <= max_length
    with poutine.mask(mask=include_prior):
        probs_x = pyro.sample(
            "probs_x",
            dist.Dirichlet(0.9 * torch.eye(args.hidden_dim) + 0.1).to_event(1),
        )
        probs_y = pyro.sample(
            "probs_y",
            dist.Beta(0.1, 0.9).expand([args.hidden_dim, data_dim]).to_event(2),
        )
    tones_plate = pyro.plate("tones", data_dim, dim=-1)
    # We subsample batch_size items out of num_sequences items. Note that since
    # we're using dim=-1 for the notes plate, we need to batch over a different
    # dimension, here dim=-2.
    with pyro.plate("sequences", num_sequences, batch_size, dim=-2) as batch:
        lengths = lengths[batch]
        x = 0
        # If we are not using the jit, then we can vary the program structure
        # each call by running for a dynamically determined number of time
        # steps, lengths.max(). However if we are using the jit, then we try to
        # keep a single program structure for all minibatches; the fixed
        # structure ends up being faster since each program structure would
        # need to trigger a new jit compile stage.
        for t in pyro.markov(range(max_length if args.jit else lengths.max())):
            with poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                x = pyro.sample(
                    "x_{}".format(t),
                    dist.Categorical(probs_x[x]),
                    infer={"enumerate": "parallel"},
                )
                with tones_plate:
                    pyro.sample(
                        "y_{}".format(t),
                        dist.Bernoulli(probs_y[x.squeeze(-1)]),
                        obs=sequences[batch, t],
                    )
# fmt: on
# ---- end of the copied code ---------------------------------------------------------------------

LR = 0.1  # the example's --learning-rate is 0.05 (50 steps on minibatches of the chorales)
HIDDEN_DIM = 2  # the example's --hidden-dim is 16: on 20 short sequences MAP sends the unused states' tables to 0
NUM_SEQUENCES = 20
MAX_LENGTH = 30
NUM_NOTES = 6
TRUE_STATES = 2


def make_guide(model=model_1) -> AutoDelta:
    """The example's guide, the expression of its ``main()`` unchanged."""
    guide = AutoDelta(
        poutine.block(model, expose_fn=lambda msg: msg["name"].startswith("probs_"))
    )  # fmt: skip
    return guide


def make_data(seed: int = 0) -> dict[str, torch.Tensor]:
    """``sequences`` (20, 30, 6) float 0/1 notes, zero after each sequence's end; ``lengths`` (20,) int64 in [20, 30].

    Drawn from a sticky 2-state HMM (stays with probability 0.9) whose states each sound three of the six notes
    (probability 0.8, the others 0.05).
    ``lengths`` must stay an integer tensor: ``model_1`` runs ``range(lengths.max())``.
    """
    generator = torch.Generator().manual_seed(seed)
    transition = torch.full((TRUE_STATES, TRUE_STATES), 0.1 / (TRUE_STATES - 1)) + 0.9 * torch.eye(TRUE_STATES)
    emission = torch.full((TRUE_STATES, NUM_NOTES), 0.05)
    notes_per_state = NUM_NOTES // TRUE_STATES
    for state in range(TRUE_STATES):
        emission[state, notes_per_state * state : notes_per_state * (state + 1)] = 0.8
    lengths = torch.randint(MAX_LENGTH - 10, MAX_LENGTH + 1, (NUM_SEQUENCES,), generator=generator)
    sequences = torch.zeros(NUM_SEQUENCES, MAX_LENGTH, NUM_NOTES)
    for i in range(NUM_SEQUENCES):
        state = int(torch.randint(TRUE_STATES, (), generator=generator))
        for t in range(int(lengths[i])):
            if t > 0:
                state = int(torch.multinomial(transition[state], 1, generator=generator))
            sequences[i, t] = torch.bernoulli(emission[state], generator=generator)
    return {"sequences": sequences, "lengths": lengths}


def reference_svi(
    seed: int = 0,
    steps: int = 150,
    lr: float = LR,
    *,
    data_seed: int | None = None,
    hidden_dim: int = HIDDEN_DIM,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """The example's ``main()`` with ``model_1``: ``svi.step(sequences, lengths, args=args, batch_size=...)``.

    ``TraceEnum_ELBO(max_plate_nesting=2)`` as in the example; the loss is exact (MAP tables, hidden states summed
    out), so with ``batch_size=None`` the final ELBO is deterministic given the seed. The example's guide starts
    from ``init_to_median`` (prior medians: every emission probability near 0, the states nearly alike), so which
    optimum MAP reaches depends on the seed: seed 2 finds both states (ELBO -1218.3 at 150 steps, probs_x
    0.9 / 0.1, each state sounding its three notes at 0.8), seeds 0, 1 and 3 leave one state unused (ELBO
    -1384 to -1981, a one-state fit).
    """
    columns = make_data(seed if data_seed is None else data_seed)
    sequences, lengths = columns["sequences"], columns["lengths"]
    run_args = argparse.Namespace(**{**vars(args), "hidden_dim": hidden_dim, "batch_size": batch_size})
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    model = model_1
    guide = make_guide(model)
    optim = Adam({"lr": lr})
    elbo = TraceEnum_ELBO(max_plate_nesting=2)
    svi = SVI(model, guide, optim, elbo)
    result = run_steps(svi, steps, sequences, lengths, args=run_args, batch_size=run_args.batch_size)
    num_observations = float(lengths.sum())
    result.update(
        model="hmm",
        seed=seed,
        lr=lr,
        elbo_name="TraceEnum_ELBO",
        hidden_dim=hidden_dim,
        loss_per_observation=result["loss"] / num_observations,
        train_loss_without_prior=elbo.loss(model, guide, sequences, lengths, run_args, include_prior=False)
        / num_observations,
    )
    return result
