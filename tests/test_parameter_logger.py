"""ParameterLogger: a large tensor's min, median and max on every logged step, its histogram on a cadence of its own."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_svi.logging.parameters import ParameterLogger
from lightning_svi.logging.step_logger import Cadence, as_floats, tensor_scalars
from tests.conftest import read_events, read_scalars


def test_histograms_come_on_their_own_cadence_and_the_spread_on_every_logged_step(
    train_in_process, tmp_path: Path
) -> None:
    train_in_process(
        "trainer.max_steps=45",
        "trainer.log_every_n_steps=5",
        "callbacks.parameters.histogram_every_n_steps=20",
        "callbacks.diagnostics=null",
    )
    events = read_events(tmp_path / "run")
    scalars = read_scalars(tmp_path / "run")
    logged = [1, *range(5, 46, 5)]
    for tag in ("phi/qa", "phi/qb"):  # 50 elements each (the default data's groups)
        assert [step for step, _ in scalars[f"{tag}/median"]] == logged
        histograms = events.Histograms(tag)
        assert [event.step for event in histograms] == [1, 20, 40, 45]  # first, each multiple, last
        lowest, highest = dict(scalars[f"{tag}/min"]), dict(scalars[f"{tag}/max"])
        for event in histograms:  # the chart's band and the histogram describe the same tensor
            assert event.histogram_value.num == 50
            assert event.histogram_value.min == pytest.approx(lowest[event.step], rel=1e-6)
            assert event.histogram_value.max == pytest.approx(highest[event.step], rel=1e-6)


@pytest.mark.parametrize(
    ("every", "expected"),
    [(10, [1, 12, 21, 30]), (1, [1, *range(3, 31, 3)]), (100, [1, 30]), (None, [])],
)
def test_the_cadence_picks_the_first_logged_step_the_first_at_or_past_each_multiple_and_the_last(
    every: int | None, expected: list[int]
) -> None:
    trainer = SimpleNamespace(max_steps=30)
    cadence = Cadence(every, "histogram_every_n_steps")
    logged = [1, *range(3, 31, 3)]  # trainer.log_every_n_steps=3
    assert [step for step in logged if cadence.due(trainer, step)] == expected


@pytest.mark.parametrize("value", [0, -100, 2.5, True, "100"])
def test_a_bad_histogram_cadence_is_refused_naming_the_key_and_the_value(tmp_path: Path, value: object) -> None:
    from lightning_svi.errors import ConfigError
    from lightning_svi.training.run import build_component
    from tests.conftest import compose_config

    with pytest.raises(
        ValueError,
        match=rf"histogram_every_n_steps must be a positive number of steps or null \(never\), got {value!r}",
    ):
        ParameterLogger(histogram_every_n_steps=value)  # type: ignore[arg-type]
    cfg = compose_config(f"callbacks.parameters.histogram_every_n_steps={value!r}")
    key = re.escape(f"callbacks.parameters.histogram_every_n_steps={value!r}")
    with pytest.raises(ConfigError, match=rf"^{key}: refused by lightning_svi\.logging\.parameters\.ParameterLogger"):
        build_component(cfg.callbacks.parameters, "callbacks.parameters", tmp_path, {})


def test_the_default_config_draws_histograms_every_100_steps(tmp_path: Path) -> None:
    from lightning_svi.training.run import build_component
    from tests.conftest import compose_config

    logger = build_component(compose_config().callbacks.parameters, "callbacks.parameters", tmp_path, {})
    assert logger.histograms.every_n_steps == 100
    logger = build_component(
        compose_config("callbacks.parameters.histogram_every_n_steps=null").callbacks.parameters,
        "callbacks.parameters",
        tmp_path,
        {},
    )
    assert logger.histograms.every_n_steps is None


def test_a_large_tensor_stands_as_its_min_lower_median_and_max() -> None:
    values = torch.tensor([5.0, 1.0, 4.0, 2.0] * 5).reshape(4, 5)  # 20 elements: the median is the lower middle one
    scalars = tensor_scalars("phi/w", values, max_elements=16)
    assert list(scalars) == ["phi/w/min", "phi/w/median", "phi/w/max"]
    assert as_floats(list(scalars.values())) == [1.0, 2.0, 5.0]
    small = tensor_scalars("phi/v", torch.tensor([0.5, 1.5, 2.5]), max_elements=16)
    assert small == {"phi/v/0": 0.5, "phi/v/1": 1.5, "phi/v/2": 2.5}


@pytest.mark.parametrize("size", [17, 18, 25_088])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_the_median_of_a_large_tensor_is_torchs_own(size: int, dtype: torch.dtype) -> None:
    """numpy's selection on the CPU (float32, float64), torch's elsewhere: the same element, NaN if any is."""
    values = torch.randn(size, generator=torch.Generator().manual_seed(size)).to(dtype)
    median = tensor_scalars("theta/w", values)["theta/w/median"]
    assert median.dtype == dtype and median.shape == () and torch.equal(median, values.median())
    values[size // 3] = float("nan")
    assert tensor_scalars("theta/w", values)["theta/w/median"].isnan()
