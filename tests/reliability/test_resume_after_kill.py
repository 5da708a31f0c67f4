"""SIGKILL, SIGTERM and a SLURM requeue in the middle of training: the resumed run ends bit-identical to an
uninterrupted one."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import read_scalars, read_summary, run_train_py
from tests.reliability.processes import checkpoint_step, train_py_process, wait_for_checkpoint

MAX_STEPS = 300
# Minibatches, so that the data order (a reshuffle every pass) matters as much as the Monte Carlo draws.
RUN = (
    f"trainer.max_steps={MAX_STEPS}",
    "data.batch_size=16",
    "checkpoint.every_n_steps=20",
    "trainer.log_every_n_steps=5",
)
STOP_AFTER = 60  # interrupt once a checkpoint at this step or later exists

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run_train_py(*RUN, f"hydra.run.dir={run_dir}", cwd=run_dir.parent, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def _assert_same_final_state(expected_dir: Path, actual_dir: Path) -> None:
    expected = torch.load(expected_dir / "checkpoints" / "last.ckpt", weights_only=True)
    actual = torch.load(actual_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert actual["global_step"] == expected["global_step"] == MAX_STEPS
    assert expected["state_dict"].keys() == actual["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, actual["state_dict"][name]), name
    actual_optimizer = actual["optimizer_states"][0]["state"]
    for index, state in expected["optimizer_states"][0]["state"].items():
        for key, tensor in state.items():
            assert torch.equal(tensor, actual_optimizer[index][key]), (index, key)
    expected_summary, actual_summary = read_summary(expected_dir), read_summary(actual_dir)
    assert actual_summary["status"] == "completed"
    assert actual_summary["theta"] == expected_summary["theta"]
    assert actual_summary["phi"] == expected_summary["phi"]


def _assert_same_loss_curve(expected_dir: Path, interrupted_dir: Path, resumed_dir: Path, resumed_from: int) -> None:
    expected = dict(read_scalars(expected_dir)["train/loss"])
    before = dict(read_scalars(interrupted_dir)["train/loss"])
    after = dict(read_scalars(resumed_dir)["train/loss"])
    assert min(after) > resumed_from and max(after) == max(expected)
    assert {step: expected[step] for step in after} == after
    assert {step: expected[step] for step in before if step <= resumed_from} == {
        step: loss for step, loss in before.items() if step <= resumed_from
    }


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_resume_after_signal_mid_training_is_bit_identical(
    uninterrupted: Path, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    interrupted_dir, resumed_dir = tmp_path / "interrupted", tmp_path / "resumed"
    checkpoint = interrupted_dir / "checkpoints" / "last.ckpt"
    with train_py_process(*RUN, f"hydra.run.dir={interrupted_dir}", cwd=tmp_path) as process:
        wait_for_checkpoint(process, checkpoint, STOP_AFTER)
        process.send_signal(stop_signal)
        output, _ = process.communicate(timeout=60)
    resumed_from = checkpoint_step(checkpoint)
    assert STOP_AFTER <= resumed_from < MAX_STEPS
    if stop_signal == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
        assert not (interrupted_dir / "summary.json").exists()
    else:
        # Pre-empted: a clean exit, a checkpoint of the step it stopped at, and a summary that says so.
        assert process.returncode == 0, output[-3000:]
        summary = read_summary(interrupted_dir)
        assert summary["status"] == "preempted" and summary["steps"] == resumed_from
        assert f"resume with ckpt_path={checkpoint}" in output
        assert "Traceback" not in output

    result = run_train_py(*RUN, f"ckpt_path={checkpoint}", f"hydra.run.dir={resumed_dir}", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_final_state(uninterrupted, resumed_dir)
    _assert_same_loss_curve(uninterrupted, interrupted_dir, resumed_dir, resumed_from)


def _fake_slurm_job(tmp_path: Path, restart_count: int) -> dict[str, str]:
    """The environment of a one-task SLURM job whose ``scontrol`` only records how it was called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.calls"}\n')
    scontrol.chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "svi",
        "SLURM_NTASKS": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
        "SLURM_RESTART_COUNT": str(restart_count),
    }


def test_slurm_requeue_signal_then_sigterm_requeues_and_the_requeued_job_resumes_bit_identical(
    uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "slurm-4242"  # a requeued job re-runs the same command: the run folder must be fixed
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    with train_py_process(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path, env=_fake_slurm_job(tmp_path, 0)) as job:
        wait_for_checkpoint(job, checkpoint, STOP_AFTER)
        job.send_signal(signal.SIGUSR1)  # what `#SBATCH --signal=SIGUSR1@90` sends before the time limit
        time.sleep(0.05)  # SLURM's SIGTERM follows (in a real job, up to 90 s later)
        job.send_signal(signal.SIGTERM)
        # Generous: on a loaded 2-core machine the checkpoint write and teardown can take long;
        # a job that ignored the signals would instead finish and fail the status check below.
        output, _ = job.communicate(timeout=240)
    assert job.returncode == 0, output[-3000:]
    assert (tmp_path / "scontrol.calls").read_text() == "requeue 4242\n"
    assert read_summary(run_dir)["status"] == "preempted"
    stopped_at = checkpoint_step(checkpoint)
    assert checkpoint_step(run_dir / "hpc_ckpt_1.ckpt") <= stopped_at < MAX_STEPS

    # The requeued job: same command, no ckpt_path; it picks the newest checkpoint of its run folder.
    with train_py_process(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path, env=_fake_slurm_job(tmp_path, 1)) as job:
        output, _ = job.communicate(timeout=300)
    assert job.returncode == 0, output[-3000:]
    assert f"Restoring states from the checkpoint path at {checkpoint}" in output
    _assert_same_final_state(uninterrupted, run_dir)
