"""Resuming from a checkpoint of another model, guide or data set, or from a file that is not a
checkpoint: refused before training with a message naming the mismatch, exit status 2, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_svi.checkpointing.atomic_io import CheckpointError
from tests.conftest import read_summary, run_train_py


@pytest.fixture(scope="module")
def full_guide_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lightning_svi.training.run import train
    from tests.conftest import compose_config

    run_dir = tmp_path_factory.mktemp("full") / "run"
    train(compose_config("guide=full", "trainer.max_steps=5"), run_dir)
    return run_dir


def test_resume_with_another_guide_exits_2_naming_the_guides_and_keeps_the_run(
    full_guide_run: Path, tmp_path: Path
) -> None:
    checkpoint = full_guide_run / "checkpoints" / "last.ckpt"
    checkpoint_bytes, summary = checkpoint.read_bytes(), read_summary(full_guide_run)
    # Resumed into the same folder, as a requeued job would: the refusal must not overwrite anything.
    result = run_train_py("guide=normal", f"ckpt_path={checkpoint}", f"hydra.run.dir={full_guide_run}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert f"lightning-svi: error: ckpt_path={checkpoint}: refused; it was written for another" in result.stderr
    assert (
        "guide is lightning_svi.models.beta_binomial.BetaBinomialFullGuide in the checkpoint "
        "but pyro.infer.autoguide.guides.AutoNormal in this run" in result.stderr
    )
    assert checkpoint.read_bytes() == checkpoint_bytes
    assert read_summary(full_guide_run) == summary


def test_resume_with_another_data_set_size_names_the_parameter_shapes(full_guide_run: Path, tmp_path: Path) -> None:
    from lightning_svi.training.run import train
    from tests.conftest import compose_config

    checkpoint = full_guide_run / "checkpoints" / "last.ckpt"
    config = compose_config("data.synthetic={num_groups: 30}", "trainer.max_steps=10", f"ckpt_path={checkpoint}")
    expected = r"parameter svi.guide.qa_unconstrained has shape \[50\] in the checkpoint but \[30\] in this run"
    with pytest.raises(CheckpointError, match=expected):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "summary.json").exists()


def test_resume_from_a_file_that_is_not_a_checkpoint_exits_2(tmp_path: Path) -> None:
    garbage = tmp_path / "last.ckpt"
    garbage.write_bytes(b"\x00\x01 not a checkpoint at all")
    result = run_train_py(f"ckpt_path={garbage}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"lightning-svi: error: ckpt_path={garbage}: not a readable checkpoint" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "run" / "summary.json").exists()


def test_resume_from_a_missing_checkpoint_exits_2_before_training(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "last.ckpt"
    result = run_train_py(f"ckpt_path={missing}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert f"lightning-svi: error: ckpt_path='{missing}': no such checkpoint file" in result.stderr
    assert not (tmp_path / "run" / "tensorboard").exists() and not (tmp_path / "run" / "summary.json").exists()
