"""A full disk (or a read-only run folder) when the final checkpoint is written: one line, exit 1, the last
checkpoint written kept, and no ``summary.json`` that says ``completed``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO, compose_config, run_train_py
from tests.reliability.processes import checkpoint_step


@pytest.mark.slow
def test_a_full_disk_at_the_final_checkpoint_ends_in_one_line_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_svi.training.run import train

    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    train(compose_config("trainer.max_steps=20", "tensorboard.image_every_n_steps=null"), run_dir)
    assert (run_dir / "summary.json").is_file()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    full_disk = "+callbacks.full_disk={_target_: tests.reliability.run_faults.FullDiskFrom, step: 40}"
    result = run_train_py(
        f"ckpt_path={checkpoint}", "trainer.max_steps=40", f"hydra.run.dir={run_dir}", full_disk, cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("lightning-svi: error:")]
    assert errors == [
        "lightning-svi: error: cannot write into the run folder (No space left on device: run folder); "
        f"the last checkpoint written, {checkpoint}, is kept."
    ]
    assert "Traceback" not in result.stderr + result.stdout
    assert checkpoint_step(checkpoint) == 20
    # The first run's summary said completed at step 20; a run that could not finish leaves none rather than that.
    assert not (run_dir / "summary.json").exists()
