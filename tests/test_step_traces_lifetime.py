"""A step's traces die before the next step evaluates (``RecordsTraces.release_traces``), and steps nobody
reads skip the marks that only a posterior draw of enumerated sites needs (``RecordsTraces.unread``)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path

import pyro.infer.discrete
import pyro.infer.enum
import pyro.infer.trace_elbo
import pyro.infer.traceenum_elbo
import pytest

from lightning_svi.training.step_engine import EagerStep
from tests.conftest import read_scalars

QUIET_RUN = ("callbacks.diagnostics=null", "tensorboard.image_every_n_steps=null")


@pytest.mark.parametrize(
    "model",
    [  # enumerated; evaluated through Trace_ELBO (``RecordingTraceEnum_ELBO``'s flat path)
        ("model=gmm", "data.synthetic={num_points: 20}"),
        ("model=beta_binomial",),
    ],
)
def test_no_step_evaluates_while_an_earlier_step_s_traces_are_alive(
    train_in_process: Callable[..., dict], monkeypatch: pytest.MonkeyPatch, model: tuple[str, ...]
) -> None:
    """Traces kept into the next step outlive the collector's young generations, and every full
    collection then walks them (Pyro's HMM example ran 8% slower for it, ``scripts/bench.py --settings hmm``)."""
    earlier: list[weakref.ref] = []
    alive_at_evaluation: list[int] = []

    def get_importance_trace(*args: object, **kwargs: object) -> tuple:
        alive_at_evaluation.append(sum(trace() is not None for trace in earlier))
        model_trace, guide_trace = pyro.infer.enum.get_importance_trace(*args, **kwargs)
        earlier.extend((weakref.ref(model_trace), weakref.ref(guide_trace)))
        return model_trace, guide_trace

    for estimator_module in (pyro.infer.traceenum_elbo, pyro.infer.trace_elbo):
        monkeypatch.setattr(estimator_module, "get_importance_trace", get_importance_trace)
    summary = train_in_process(
        *model, "trainer.max_steps=12", "trainer.log_every_n_steps=5", *QUIET_RUN
    )  # fmt: skip
    assert summary["status"] == "completed"
    # The set-up's warm-up, then the 12 steps; the end of the run may evaluate again beside the last
    # step's traces, which its posterior draw reads.
    assert alive_at_evaluation[:13] == [0] * 13


def test_only_steps_that_are_read_keep_what_drawing_the_enumerated_sites_needs(
    train_in_process: Callable[..., dict], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every evaluation but those of ``EagerStep.step`` (nobody reads its traces) goes through
    ``TraceEnumSample_ELBO``'s marks; the logged steps still draw the enumerated sites."""
    counts = {"evaluations": 0, "marked": 0, "unread steps": 0}

    def counted(key: str, function: Callable) -> Callable:
        def call(*args: object, **kwargs: object) -> object:
            counts[key] += 1
            return function(*args, **kwargs)

        return call

    evaluate, mark = pyro.infer.TraceEnum_ELBO._get_trace, pyro.infer.discrete.TraceEnumSample_ELBO._get_trace

    def evaluation(estimator: pyro.infer.TraceEnum_ELBO, *args: object) -> object:
        # The training's estimator, not the end-of-run posterior summary's TraceEnum_ELBO.
        counts["evaluations"] += isinstance(estimator, pyro.infer.discrete.TraceEnumSample_ELBO)
        return evaluate(estimator, *args)

    monkeypatch.setattr(pyro.infer.TraceEnum_ELBO, "_get_trace", evaluation)
    monkeypatch.setattr(pyro.infer.discrete.TraceEnumSample_ELBO, "_get_trace", counted("marked", mark))
    monkeypatch.setattr(EagerStep, "step", counted("unread steps", EagerStep.step))
    summary = train_in_process(
        "model=gmm", "trainer.max_steps=20", "trainer.log_every_n_steps=5", "data.synthetic={num_points: 20}",
        "tensorboard.sampled_every_n_steps=5", *QUIET_RUN, run_dir=tmp_path / "run",
    )  # fmt: skip
    assert summary["status"] == "completed"
    assert counts["unread steps"] >= 10
    assert counts["evaluations"] - counts["marked"] == counts["unread steps"]
    scalars = read_scalars(tmp_path / "run")
    for tag in ("trace/log_p_sampled/assignment", "trace/log_p_sampled/x"):
        assert [step for step, _ in scalars[tag]] == [1, 5, 10, 15, 20], tag
