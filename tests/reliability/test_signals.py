"""Ctrl-C, a SIGTERM to one DDP rank only, and a kill during the end-of-run work: each leaves a checkpoint of
the step it stopped at (or the final one) and a summary that says what happened."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, read_summary
from tests.reliability.processes import checkpoint_step, process_group_is_gone, train_py_process, wait_for_checkpoint

pytestmark = pytest.mark.slow

LONG_RUN = ("trainer.max_steps=100000", "checkpoint.every_n_steps=20", "trainer.log_every_n_steps=5")
WITH_TESTS = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def test_ctrl_c_stops_after_the_running_step_with_a_checkpoint_and_status_interrupted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    with train_py_process(*LONG_RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path) as process:
        wait_for_checkpoint(process, checkpoint, 20)
        process.send_signal(signal.SIGINT)
        sent_at = time.monotonic()
        output, _ = process.communicate(timeout=60)
    assert time.monotonic() - sent_at < 20
    assert process.returncode == 130, output[-3000:]
    summary = read_summary(run_dir)
    assert summary["status"] == "interrupted"
    # The checkpoint holds the step the run stopped at, not the last periodic one before it.
    assert checkpoint_step(checkpoint) == summary["steps"] >= 20
    assert f"lightning-svi: interrupted (Ctrl-C); resume with ckpt_path={checkpoint}" in output
    assert "Traceback" not in output


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Lightning's DDP launcher starts rank 1 as a child of rank 0)."""
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            children.append(int(status.parent.name))
    return children


@pytest.mark.parametrize("rank", [1, 0])
def test_sigterm_to_one_rank_only_stops_every_rank_within_seconds_with_a_checkpoint(tmp_path: Path, rank: int) -> None:
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    ddp = ("trainer.accelerator=cpu", "++trainer.strategy=ddp", "trainer.devices=2")
    with train_py_process(*ddp, *LONG_RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path) as process:
        wait_for_checkpoint(process, checkpoint, 20, timeout=240)
        (rank_1,) = _children(process.pid)
        os.kill(rank_1 if rank == 1 else process.pid, signal.SIGTERM)
        sent_at = time.monotonic()
        output, _ = process.communicate(timeout=120)
        stopped_after = time.monotonic() - sent_at
    assert stopped_after < 30, output[-3000:]
    assert process.returncode == 0, output[-3000:]
    summary = read_summary(run_dir)
    assert summary["status"] == "preempted" and summary["world_size"] == 2
    assert checkpoint_step(checkpoint) == summary["steps"] >= 20
    assert "Traceback" not in output
    assert process_group_is_gone(process.pid)


def test_kill_during_end_of_run_work_leaves_the_final_checkpoint_and_a_complete_summary(tmp_path: Path) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "end_of_run_started"
    slow_end = f"+callbacks.slow_end={{_target_: tests.reliability.run_faults.SlowEndOfRun, marker: '{marker}'}}"
    run = ("trainer.max_steps=45", "checkpoint.every_n_steps=20", f"hydra.run.dir={run_dir}", slow_end)
    with train_py_process(*run, cwd=tmp_path, env=WITH_TESTS) as process:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert process.poll() is None, process.communicate()[0][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["steps"] == 45
    assert set(summary["theta"]) == {"alpha", "beta"} and len(summary["phi"]["qa"]) == 50
    assert summary["final"]["elbo"] is not None
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == 45
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
