"""Resuming from a checkpoint of another model, guide or data set, or from a file that is not a
checkpoint: refused before training with a message naming the mismatch, exit status 2, nothing lost."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest
import torch

from lightning_svi.checkpointing.atomic_io import AtomicCheckpointIO, CheckpointError
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


def test_resume_on_other_data_of_the_same_size_is_refused(full_guide_run: Path, tmp_path: Path) -> None:
    from lightning_svi.training.run import train
    from tests.conftest import compose_config

    checkpoint = full_guide_run / "checkpoints" / "last.ckpt"
    config = compose_config("data.seed=1", "trainer.max_steps=10", f"ckpt_path={checkpoint}")
    with pytest.raises(CheckpointError, match=r"refused; it was trained on other data \(data fingerprint [0-9a-f]{32}"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "summary.json").exists()


def _member_offset(path: Path, suffix: str) -> int:
    """Where the bytes of the archive member whose name ends with ``suffix`` begin in the file."""
    with zipfile.ZipFile(path) as archive:
        info = next(info for info in archive.infolist() if info.filename.endswith(suffix))
    header = path.read_bytes()[info.header_offset : info.header_offset + 30]
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length


def test_a_checkpoint_with_a_flipped_byte_is_refused_as_corrupted(full_guide_run: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "last.ckpt"
    content = bytearray((full_guide_run / "checkpoints" / "last.ckpt").read_bytes())
    content[_member_offset(full_guide_run / "checkpoints" / "last.ckpt", "data/0") + 1] ^= 0x10
    damaged.write_bytes(bytes(content))
    with pytest.raises(CheckpointError, match=rf"ckpt_path={damaged}: corrupted; the CRC of .*data/0 inside"):
        AtomicCheckpointIO().load_checkpoint(damaged)


def test_a_checkpoint_holding_a_nan_is_refused_as_non_finite_not_as_divergence(
    full_guide_run: Path, tmp_path: Path
) -> None:
    state = torch.load(full_guide_run / "checkpoints" / "last.ckpt", weights_only=True)
    state["state_dict"]["svi.guide.qb_unconstrained"][7] = float("nan")
    edited = tmp_path / "last.ckpt"
    torch.save(state, edited)
    expected = (
        rf"ckpt_path={edited}: refused; the checkpoint holds non-finite values \(parameter 'svi.guide.qb_unconstrained'"
    )
    with pytest.raises(CheckpointError, match=expected):
        AtomicCheckpointIO().load_checkpoint(edited)
