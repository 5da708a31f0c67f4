"""What ``train.py`` checks about each built-in model before torch is imported: its CSV columns,
its constructor options, the options of its synthetic data, and whether it has any θ.

A model class imports torch, which takes seconds; its spec here does not. Each built-in class takes
its ``name`` and ``table`` from its spec (the same objects, not copies). A user's own model has no
spec here: its file and options are checked once its class is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial, reduce

import numpy as np

from lightning_svi.config.requirements import (
    Requirement,
    require_choice,
    require_int,
    require_numbers,
    require_positive,
    require_probability,
)
from lightning_svi.config.table import LARGEST_COUNT, RowCheck, TableSpec
from lightning_svi.errors import ConfigError

PARAMETERIZATIONS = ("centered", "non_centered")
NUM_PIXELS = 64

_count = partial(require_int, minimum=0)
_size = partial(require_int, minimum=1)
_trial_count = partial(require_int, minimum=0, maximum=LARGEST_COUNT)  # counts the models' float32 holds exactly
# Between options: called with the options given under a key prefix; raises ConfigError.
OptionsCheck = Callable[[str, Mapping[str, object]], None]
# Defaults of synthetic_data options that a check between options needs (the models' signatures use them).
SYNTHETIC_TRIALS = {"min_trials": 20, "max_trials": 100}  # beta_binomial: trials per group
SYNTHETIC_FLIPS = {"heads": 6, "tails": 4}  # coin: the tutorial's flips


@dataclass(frozen=True)
class ModelSpec:
    """A built-in model as far as the command line must know it before training."""

    name: str
    table: TableSpec
    has_parameters: bool  # θ is not empty: guide=empty has something to train
    options: Mapping[str, Requirement] = field(default_factory=dict)  # constructor keywords after num_data
    synthetic: Mapping[str, Requirement] = field(default_factory=dict)  # synthetic_data keywords after seed
    synthetic_checks: tuple[OptionsCheck, ...] = ()  # between synthetic_data's options, once each is valid


def _given(prefix: str, options: Mapping[str, object], defaults: Mapping[str, int]) -> tuple[dict, str]:
    """(``defaults`` updated by ``options``, the given ones as ``prefix.name=value`` for a message)."""
    given = {name: options[name] for name in defaults if name in options}
    return {**defaults, **given}, " ".join(f"{prefix}.{name}={value}" for name, value in given.items())


def _trials_range(prefix: str, options: Mapping[str, object]) -> None:
    trials, given = _given(prefix, options, SYNTHETIC_TRIALS)
    if trials["min_trials"] > trials["max_trials"]:
        raise ConfigError(
            f"{given}: min_trials must be <= max_trials (defaults {SYNTHETIC_TRIALS['min_trials']} and "
            f"{SYNTHETIC_TRIALS['max_trials']}); each group's trials are drawn from min_trials to max_trials."
        )


def _some_flips(prefix: str, options: Mapping[str, object]) -> None:
    flips, given = _given(prefix, options, SYNTHETIC_FLIPS)
    if flips["heads"] + flips["tails"] == 0:
        raise ConfigError(
            f"{given}: no flips to learn from; heads + tails must be >= 1 "
            f"(defaults {SYNTHETIC_FLIPS['heads']} and {SYNTHETIC_FLIPS['tails']})."
        )


BETA_BINOMIAL = ModelSpec(
    name="beta_binomial",
    table=TableSpec(
        columns=("successes", "trials"),
        row_checks=(RowCheck("successes <= trials", lambda row: row["successes"] <= row["trials"]),),
    ),
    has_parameters=True,
    options={"alpha_init": require_positive, "beta_init": require_positive},
    synthetic={
        "num_groups": _size,
        "alpha": require_positive,
        "beta": require_positive,
        "min_trials": _trial_count,
        "max_trials": _trial_count,
    },
    synthetic_checks=(_trials_range,),
)


def _binary_column(column: str) -> TableSpec:
    """One column of 0/1 outcomes (the table of both coin-flip models)."""
    return TableSpec(columns=(column,), row_checks=(RowCheck(f"{column} is 0 or 1", lambda row: row[column] <= 1),))


BETA_BERNOULLI = ModelSpec(
    name="beta_bernoulli",
    table=_binary_column("outcome"),
    has_parameters=True,
    options={"alpha_init": require_positive, "beta_init": require_positive},
    synthetic={"num_flips": _size, "rate": require_probability},
)

COIN = ModelSpec(
    name="coin",
    table=_binary_column("flip"),
    has_parameters=False,
    options={"prior_heads": require_positive, "prior_tails": require_positive},
    synthetic={"heads": _count, "tails": _count},
    synthetic_checks=(_some_flips,),
)

GAUSSIAN_MIXTURE = ModelSpec(
    name="gmm",
    table=TableSpec(columns=("x",), integer=False, non_negative=False),
    has_parameters=False,
    options={"num_components": _size, "prior_scale": require_positive},
    synthetic={"num_points": _size, "locs": require_numbers, "scale": require_positive},
)

EIGHT_SCHOOLS = ModelSpec(
    name="eight_schools",
    table=TableSpec(
        columns=("y", "sigma"),
        integer=False,
        non_negative=False,
        row_checks=(RowCheck("sigma > 0", lambda row: row["sigma"] > 0),),
    ),
    has_parameters=False,
    options={
        "parameterization": partial(require_choice, allowed=PARAMETERIZATIONS),
        "mu_scale": require_positive,
        "tau_scale": require_positive,
    },
)

VAE = ModelSpec(
    name="vae",
    table=TableSpec(
        columns=tuple(f"pixel_{position}" for position in range(NUM_PIXELS)),
        row_checks=(RowCheck("every pixel is 0 or 1", lambda row: reduce(np.maximum, row.values()) <= 1),),
    ),
    has_parameters=True,
    options={"latent_dim": _size, "hidden_dim": _size},
    synthetic={"num_images": _size, "true_latent_dim": _size},
)

# Keyed by the model config's ``_target_``.
BUILTIN_MODELS: dict[str, ModelSpec] = {
    "lightning_svi.models.beta_binomial.BetaBinomial": BETA_BINOMIAL,
    "lightning_svi.models.beta_bernoulli.BetaBernoulli": BETA_BERNOULLI,
    "lightning_svi.models.coin.Coin": COIN,
    "lightning_svi.models.gmm.GaussianMixture": GAUSSIAN_MIXTURE,
    "lightning_svi.models.eight_schools.EightSchools": EIGHT_SCHOOLS,
    "lightning_svi.models.vae.VAE": VAE,
}
