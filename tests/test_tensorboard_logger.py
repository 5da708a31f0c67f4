"""BufferedTensorBoardLogger: one event per step; nothing waiting is lost at the end, also after a failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_svi.logging.tensorboard_logger import BufferedTensorBoardLogger
from tests.conftest import read_events, read_scalars


def events(run_dir: Path) -> list:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    (path,) = (run_dir / "tensorboard").glob("events.out.tfevents.*")
    return [event for event in EventFileLoader(str(path)).Load() if event.HasField("summary")]


def raw_events(run_dir: Path) -> list:
    """The events as written (``events`` reads them as TensorBoard migrates them: histograms as tensors)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    (path,) = (run_dir / "tensorboard").glob("events.out.tfevents.*")
    return [Event.FromString(record) for record in RawEventFileLoader(str(path)).Load()]


@pytest.mark.parametrize("status", ["success", "failed"])
def test_waiting_values_are_written_by_finalize_one_event_per_step(tmp_path: Path, status: str) -> None:
    logger = BufferedTensorBoardLogger(save_dir=str(tmp_path), name="tensorboard", version="", flush_seconds=3600)
    logger.log_metrics({"a": 1.0, "b": 2.0}, step=1)
    logger.add_histogram("h", torch.arange(10.0), step=1)
    logger.log_metrics({"a": 3.0}, step=2)
    assert events(tmp_path) == []  # the file exists (the histogram's bins opened the writer), the values wait
    logger.finalize(status)
    assert read_scalars(tmp_path) == {"a": [(1, 1.0), (2, 3.0)], "b": [(1, 2.0)]}
    assert [event.step for event in events(tmp_path)] == [1, 2]
    (histogram,) = read_events(tmp_path).Histograms("h")
    assert histogram.step == 1 and histogram.histogram_value.num == 10 and histogram.histogram_value.max == 9.0


def test_values_reach_the_writer_once_flush_seconds_have_passed(tmp_path: Path) -> None:
    logger = BufferedTensorBoardLogger(save_dir=str(tmp_path), name="tensorboard", version="", flush_seconds=0.0)
    logger.log_metrics({"a": 1.0}, step=1)
    logger.experiment.flush()
    assert read_scalars(tmp_path) == {"a": [(1, 1.0)]}


def test_scalars_of_any_one_element_shape_and_dtype_come_out_as_floats_in_order() -> None:
    from lightning_svi.logging.step_logger import as_floats

    values = [torch.tensor(1.5), 2, torch.tensor([3.0]), torch.tensor(4, dtype=torch.int64), torch.tensor(0.25)]
    assert as_floats(values) == [1.5, 2.0, 3.0, 4.0, 0.25]
    assert as_floats([torch.tensor(1.0, requires_grad=True) * 2]) == [2.0]
    with pytest.raises(ValueError, match=r"one element each, got shapes \[\(\), \(2,\)\]"):
        as_floats([torch.tensor(1.0), torch.tensor([1.0, 2.0])])


def test_a_flush_of_many_steps_fits_the_writer_queue_and_every_step_is_written(tmp_path: Path) -> None:
    """A flush hands over every waiting step at once; the writer's queue has room for them (its
    default of 10 made each hand-over wait for the writer thread), and all of them reach the file."""
    logger = BufferedTensorBoardLogger(save_dir=str(tmp_path), name="tensorboard", version="", flush_seconds=3600)
    assert logger.experiment.max_queue == 4096
    for step in range(1, 1001):
        logger.log_metrics({"a": float(step)}, step=step)
    logger.save()
    assert read_scalars(tmp_path)["a"] == [(step, float(step)) for step in range(1, 1001)]


def test_a_histogram_of_a_diverging_tensor_shows_its_finite_elements_and_never_raises(tmp_path: Path) -> None:
    """TensorBoard raises "The histogram is empty" on NaN and infinity (optim.lr=1e3 ended in that traceback):
    the loggers draw what is finite, and nothing when nothing is; the divergence guard decides the run."""
    logger = BufferedTensorBoardLogger(save_dir=str(tmp_path), name="tensorboard", version="", flush_seconds=3600)
    logger.add_histogram("h", torch.tensor([1.0, float("nan"), float("inf"), 3.0]), step=1)
    logger.add_histogram("h", torch.full((5,), float("nan")), step=2)
    logger.finalize("success")
    (histogram,) = read_events(tmp_path).Histograms("h")
    assert histogram.step == 1 and histogram.histogram_value.num == 2 and histogram.histogram_value.max == 3.0


def test_lightnings_log_metrics_keeps_the_prefix_and_takes_tensors(tmp_path: Path) -> None:
    logger = BufferedTensorBoardLogger(
        save_dir=str(tmp_path), name="tensorboard", version="", prefix="run", flush_seconds=3600
    )
    logger.log_metrics({"a": torch.tensor(1.5), "b": 2}, step=3)
    logger.log_metrics({"a": 0.5}, step=None)  # no step: Lightning's own, an event per scalar, written at once
    logger.finalize("success")
    scalars = read_scalars(tmp_path)
    assert scalars["run-a"][-1] == (3, 1.5) and scalars["run-b"] == [(3, 2.0)]
    assert [value for _, value in scalars["run-a"]] == [0.5, 1.5]  # the unbuffered one reached the file first


def test_the_buffer_and_the_writer_queue_are_set_from_the_config(tmp_path: Path) -> None:
    from lightning_svi.training.run import build_component
    from tests.conftest import compose_config

    cfg = compose_config("logger.tensorboard.max_queue=123", "logger.tensorboard.flush_seconds=7.5")
    logger = build_component(cfg.logger.tensorboard, "logger.tensorboard", tmp_path, {"run_dir": tmp_path})
    assert isinstance(logger, BufferedTensorBoardLogger)
    assert logger.experiment.max_queue == 123 and logger.flush_seconds == 7.5
    assert Path(logger.log_dir) == tmp_path / "tensorboard"


def test_a_histogram_is_the_one_tensorboards_own_summary_histogram_makes(tmp_path: Path) -> None:
    """The buffered logger hands numpy the default bucket edges as an array made once; the event holds
    byte for byte what ``torch.utils.tensorboard.summary.histogram`` makes from the writer's list."""
    from torch.utils.tensorboard.summary import histogram

    generator = torch.Generator().manual_seed(0)
    logger = BufferedTensorBoardLogger(save_dir=str(tmp_path), name="tensorboard", version="", flush_seconds=3600)
    edges = logger.experiment.default_bins
    tensors = {
        "weights": torch.randn(25_088, generator=generator) * 0.05,  # the VAE's decoder weight
        "edges": torch.tensor(
            [edges[700], edges[774], 0.0, edges[800], edges[1000], -edges[1000]], dtype=torch.float64
        ),
        "spread": torch.logspace(-14, 19, 300, dtype=torch.float64) * torch.tensor([1.0, -1.0]).repeat(150),
        "positive": torch.rand(40, generator=generator) + 3.0,
    }
    for step, values in enumerate(tensors.values(), start=1):
        logger.add_histogram("h", values, step)
    logger.finalize("success")
    written = {event.step: event.summary.value[0] for event in raw_events(tmp_path) if event.HasField("summary")}
    for step, (name, values) in enumerate(tensors.items(), start=1):
        (expected,) = histogram("h", values, edges).value
        assert written[step].SerializeToString() == expected.SerializeToString(), name
