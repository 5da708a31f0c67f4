"""One rank of a 2-process CPU DDP run (rank 1, or rank 0 which launched it) raises: the whole job exits
non-zero within seconds, with that rank's error in its output, and no process left behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.reliability.processes import process_group_is_gone, train_py_process

# `++` sets the key whether or not the trainer preset already has it.
DDP = ("trainer.accelerator=cpu", "++trainer.strategy=ddp", "trainer.devices=2")
EXIT_WITHIN_SECONDS = 30


@pytest.mark.slow
@pytest.mark.parametrize("rank", [1, 0])
def test_exception_on_one_rank_stops_the_whole_job_quickly_and_leaves_no_process(tmp_path: Path, rank: int) -> None:
    fault_time_file = tmp_path / "fault_time"
    run_dir = tmp_path / "run"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "FAULT_TIME_FILE": str(fault_time_file), "FAULT_RANK": str(rank)}  # fmt: skip
    with train_py_process(
        *DDP,
        "model._target_=tests.reliability.faulty_model.BetaBinomialFailingOnOneRank",
        "trainer.max_steps=100000",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        env=env,
    ) as process:
        output, _ = process.communicate(timeout=240)
        exited_at = time.time()
        assert process.returncode != 0
        assert fault_time_file.is_file(), output[-3000:]
        assert exited_at - float(fault_time_file.read_text()) < EXIT_WITHIN_SECONDS
        assert f"InjectedFault: injected fault on rank {rank} at forward call 20" in output
        # Nothing left of the job's process group, the other rank included (a few seconds for the kernel to reap it).
        assert process_group_is_gone(process.pid)
