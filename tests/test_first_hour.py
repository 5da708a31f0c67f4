"""The first hour of a new user: ``train.py`` as they run it (a subprocess whose output is a pipe, as in
CI or ``> log``) says what it trains, shows plain progress lines, no third-party noise, and ends with a
report whose commands work."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_svi.logging.report import report_lines
from tests.conftest import REPO, read_summary, run_train_py

NOISE = [
    "GPU available",
    "TPU available",
    "litlogger",
    "LeafSpec",
    "Guessed max_plate_nesting",
    "`Trainer.fit` stopped",
    "Training: ",
    "Epoch 0",
    "\r",
]


def train_py(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python train.py ARGS`` with the progress shown (``run_train_py`` hides it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, str(REPO / "train.py"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_a_run_says_what_it_trains_shows_plain_progress_and_ends_with_a_report(tmp_path: Path) -> None:
    result = train_py("debug=fast", "progress_bar_refresh_rate=5", "tags=[first-hour]", "optim.lr=0.05", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    for noise in NOISE:
        assert noise not in output, noise

    # The first line, before the slow imports: what is about to train, and where.
    first = result.stderr.splitlines()[0]
    assert first.startswith("lightning-svi: training model=beta_binomial, guide=full, TraceEnum_ELBO, ")
    assert "cpu × 1, 20 steps -> " in first
    run_dir = Path(first.rsplit(" -> ", 1)[1])
    # The run folder's name says the run: model-guide-tags/date,overrides.
    assert run_dir.parent == tmp_path / "outputs" / "beta_binomial-full-first-hour"
    assert run_dir.name.endswith(",debug=fast,optim.lr=0.05,progress_bar_refresh_rate=5")

    # Plain progress: a line at the end of each batch in which the step passed a multiple of the interval
    # (here 5 steps); batches of full-batch steps on one process end by time (steps_per_batch null).
    progress = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    steps = [int(line.split()[1].split("/")[0]) for line in progress]
    assert steps == sorted(set(steps)) and steps[-1] == 20 and all(step >= 5 for step in steps)
    assert re.fullmatch(r"step 20/20 \(100%\)  loss [0-9.]+  [0-9.]+ steps/s", progress[-1])

    summary = read_summary(run_dir)
    assert summary["tags"] == ["first-hour"] and summary["status"] == "completed"
    report = result.stderr.splitlines()[-6:]
    assert report == report_lines(
        summary, run_dir, ["debug=fast", "progress_bar_refresh_rate=5", "tags=[first-hour]", "optim.lr=0.05"]
    )
    assert report[0].startswith("lightning-svi: completed after 20 steps (")
    assert report[1] == f"  θ: alpha={summary['theta']['alpha']:.4g}, beta={summary['theta']['beta']:.4g}"
    final = summary["final"]
    assert report[2].startswith(
        f"  ELBO {final['elbo']:.4g}, log evidence {final['log_evidence']:.4g}, gap {final['gap']:.4g}"
    )
    assert report[3:5] == [
        f"  run folder: {run_dir}",
        f"  TensorBoard: tensorboard --logdir {shlex.quote(str(run_dir))}",
    ]
    assert "\n".join(report) in (run_dir / "train.log").read_text()  # the report is in the run's log too

    # The resume command, as printed, extends the run to twice its steps.
    command = shlex.split(report[5].removeprefix("  resume or extend: "))
    assert command[:2] == ["python", "train.py"] and command[-1] == "trainer.max_steps=40"
    resumed = train_py(*command[2:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed_summary = read_summary(Path(resumed.stderr.splitlines()[0].rsplit(" -> ", 1)[1]))
    assert resumed_summary["steps"] == 40 and resumed_summary["status"] == "completed"


def test_the_report_shows_the_importance_weighted_evidence_and_k_hat_where_the_summary_has_them() -> None:
    summary = {
        "model": "m", "guide": "normal", "elbo": "Trace_ELBO", "steps": 100, "status": "stopped",
        "final": {"elbo": -10.0, "log_evidence": None, "gap": None, "iw_log_evidence": -9.5},
        "diagnostics": {"psis_khat": 0.42},
        "theta": {}, "timing": {"steps_per_second": None},
    }  # fmt: skip
    lines = report_lines(summary, Path("/runs/x"))
    assert lines[0] == "lightning-svi: stopped after 100 steps: model=m, guide=normal, Trace_ELBO"
    assert lines[1] == "  θ: none (the model has no parameters)"
    assert lines[2] == "  ELBO -10, IW log evidence -9.5, PSIS k̂ 0.42"
    without = report_lines({**summary, "final": {"elbo": -10.0}, "diagnostics": None}, Path("/runs/x"))
    assert without[2] == "  ELBO -10"


def test_a_tensor_theta_is_summarised_and_long_lists_are_cut() -> None:
    theta = {f"w{index}": [1.0, 2.0, 3.0, 4.0, 5.0] for index in range(7)}
    theta["w0"] = {"shape": [100, 20], "mean": 0.5, "sd": 1.0, "min": -2.0, "max": 3.0}
    lines = report_lines({"theta": theta, "final": {}, "steps": 1}, Path("r"), ["ckpt_path=old", "seed=3"])
    assert lines[1] == (
        "  θ: w0=shape [100, 20], mean 0.5, w1=5 values, 1 … 5, w2=5 values, 1 … 5, w3=5 values, 1 … 5, "
        "w4=5 values, 1 … 5, w5=5 values, 1 … 5 (+1 more in summary.json)"
    )
    assert (
        lines[-1] == "  resume or extend: python train.py seed=3 ckpt_path=r/checkpoints/last.ckpt trainer.max_steps=2"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tags=[a/b]", "tags=['a/b']: must be a list of words"),
        ("optimized_metric=elbo", "optimized_metric=elbo: must be SECTION.KEY of summary.json"),
    ],
)
def test_bad_tags_or_objective_are_refused_before_training(tmp_path: Path, override: str, message: str) -> None:
    result = run_train_py(override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert f"lightning-svi: error: {message}" in result.stderr


@pytest.mark.slow
def test_debug_profile_writes_lightnings_simple_profiler_report_into_the_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_train_py("debug=profile", "trainer.max_steps=20", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (run_dir / "fit-profile.txt").read_text()
    assert "Profiler Report" in report and "run_training_batch" in report
