"""Property-based: malformed CSV files and malformed config values are either accepted (and then
usable) or refused with the project's ``UserInputError`` in one paragraph — never another exception."""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf, open_dict

from lightning_svi.config.checks import LARGEST_SEED, check_config
from lightning_svi.config.table import LARGEST_COUNT, read_table
from lightning_svi.errors import ConfigError, DataError
from lightning_svi.models.beta_binomial import BetaBinomial
from lightning_svi.training.components import check_components
from tests.conftest import compose_config

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_one_paragraph(error: Exception, starts_with: str) -> None:
    message = str(error)
    assert message.startswith(starts_with), message
    assert "\n" not in message and 20 < len(message) < 600, message


# --- CSV files -------------------------------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "1e308", "0x10", "1_000", "٣", "+3", " 7 ", "", "3.0", "1e2"]),
)
cells = st.one_of(numbers, st.text(max_size=8))
headers = st.lists(st.sampled_from(["successes", "trials", "extra", "Successes", "trials ", ""]), max_size=4)


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    header = draw(st.one_of(headers, st.just(["successes", "trials"])))
    # Rows of two numbers get past the header and cell checks often enough to reach the value checks.
    rows = draw(st.lists(st.lists(cells, max_size=4), max_size=6))
    separator = draw(st.sampled_from([",", ";", "\t"]))
    return "\n".join(separator.join(row) for row in [header, *rows])


# The right header and rows of two numbers: what gets past the structure checks to the value checks.
well_formed_tables = st.lists(st.tuples(numbers, numbers), min_size=1, max_size=4).map(
    lambda rows: "successes,trials\n" + "\n".join(f"{successes},{trials}" for successes, trials in rows)
)

csv_files = st.one_of(
    st.binary(max_size=200),
    well_formed_tables.map(lambda text: text.encode("utf-8")),
    csv_texts().map(lambda text: text.encode("utf-8")),
    st.tuples(csv_texts(), st.sampled_from(["utf-16", "latin-1", "utf-8-sig", "cp1252"])).map(
        lambda pair: pair[0].encode(pair[1], errors="replace")
    ),
)


@PROPERTY
@given(content=csv_files)
# Counts the model's float32 tensors hold only approximately (above 2**24) or not at all.
@example(content=b"successes,trials\n1,1e308\n")
@example(content=b"successes,trials\n3,1000000000000000000000000000001\n")
@example(content=b"successes,trials\n0,9007199254740993\n")
@example(content=b"successes,trials\n0,16777217\n")
def test_malformed_csv_is_read_or_refused_in_one_paragraph(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "counts.csv"
        path.write_bytes(content)
        try:
            table = read_table(path, BetaBinomial.table)
        except DataError as error:
            assert_one_paragraph(error, f"data.path={path}")
            return
    # Accepted: every value is a usable count, and the model's tensors are finite.
    for successes, trials in zip(table["successes"], table["trials"], strict=True):
        assert 0 <= successes <= trials <= LARGEST_COUNT and successes == int(successes) and trials == int(trials)
    data = BetaBinomial.data_from_table(table)
    # Exactly the counts of the file, in the model's float32.
    assert all(torch.equal(data[name].double(), torch.from_numpy(table[name]).double()) for name in table)


# --- config values ---------------------------------------------------------------------------------------------

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["name", "gamma", "x"]), st.integers(), max_size=2),
)


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


# What an accepted value must be, key by key: the check may not let anything else through.
ACCEPTED = {
    "seed": lambda value: _is_int(value, 0) and value <= LARGEST_SEED,
    "optim.lr": _is_positive,
    "optim.theta_lr": lambda value: value is None or _is_positive(value),
    "optim.phi_lr": lambda value: value is None or _is_positive(value),
    "optim._target_": lambda value: isinstance(value, str) and value.startswith(("torch.optim.", "pyro.optim.")),
    "optim.scheduler": lambda value: value is None or (isinstance(value, dict) and "_target_" in value),
    "optim.scheduler.gamma": lambda value: _is_positive(value) and value <= 1,
    "optim.after_step": lambda value: value is None or isinstance(value, str),  # a str only if it names a function
    "elbo._target_": lambda value: isinstance(value, str) and value.startswith("pyro.infer."),
    "elbo.num_particles": lambda value: _is_int(value, 1),
    "elbo.max_plate_nesting": lambda value: value is None or _is_int(value, 0),
    "elbo.vectorize_particles": lambda value: isinstance(value, bool),
    "trainer.max_steps": lambda value: _is_int(value, 1),
    "trainer.log_every_n_steps": lambda value: _is_int(value, 1),
    "data.batch_size": lambda value: value is None or _is_int(value, 1),
    "data.path": lambda value: value is None or isinstance(value, str),
    "data.seed": lambda value: _is_int(value, 0) and value <= LARGEST_SEED,
    "data.num_workers": lambda value: _is_int(value, 0),
    "guide.kind": lambda value: value in ("full", "empty", "delta", "normal", "diag_normal", "lowrank"),
    "checkpoint.every_n_steps": lambda value: _is_int(value, 1),
    "progress_bar_refresh_rate": lambda value: _is_int(value, 0),
    "ckpt_path": lambda value: value is None,  # no file exists under any generated name
    "callbacks.summary": lambda value: isinstance(value, dict) and "_target_" in value,
    "callbacks.pictures": lambda value: value is None or (isinstance(value, dict) and "_target_" in value),
    "logger.tensorboard": lambda value: value is None or (isinstance(value, dict) and "_target_" in value),
}


@functools.cache
def _default_config() -> DictConfig:
    return compose_config()


def _with_value(key: str, value: Any) -> DictConfig:
    config = _default_config().copy()
    with open_dict(config):
        OmegaConf.update(config, key, value, merge=False, force_add=True)
    return config


@PROPERTY
@given(key=st.sampled_from(sorted(ACCEPTED)), value=values)
def test_malformed_config_value_is_accepted_only_when_valid_or_refused_in_one_paragraph(key: str, value: Any) -> None:
    try:
        config = _with_value(key, value)
    except Exception:  # OmegaConf itself refuses some values (e.g. for typed nodes): never reaches our check
        return
    stored = OmegaConf.select(config, key)
    stored = OmegaConf.to_container(stored) if OmegaConf.is_config(stored) else stored
    try:
        check_config(config)
        check_components(config)
    except ConfigError as error:
        assert_one_paragraph(error, "")
        assert "=" in str(error), str(error)
        return
    assert ACCEPTED[key](stored), f"{key}={stored!r} was accepted"
