"""Extending a finished run (``ckpt_path=.../last.ckpt`` with a larger ``trainer.max_steps``) ends bit-identical
to a run that never stopped, whatever ``max_steps`` and ``checkpoint.every_n_steps``; the run writes one final
checkpoint, before its end-of-run work draws random numbers. Resuming with nothing left to train, or with
another optimizer, is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_svi.checkpointing.atomic_io import CheckpointError
from lightning_svi.checkpointing.resume import NothingToTrain
from tests.conftest import compose_config

# A constant rate (an exponential schedule's per-step factor depends on max_steps); pictures drawn during
# and at the end of training, as by default.
COMMON = ("seed=3", "optim.scheduler=null", "tensorboard.image_every_n_steps=10", "trainer.log_every_n_steps=5")


def _train(run_dir: Path, *overrides: str) -> dict:
    from lightning_svi.training.run import train

    return train(compose_config(*COMMON, *overrides), run_dir)


def _final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("first_steps", "every_n_steps", "more"),
    [(30, 500, ()), (35, 20, ()), (30, 30, ()), (27, 10, ("data.batch_size=16",))],
    ids=["no-periodic-checkpoint", "between-two-checkpoints", "on-a-checkpoint", "minibatches"],
)
def test_extending_a_finished_run_is_bit_identical_to_a_straight_run(
    tmp_path: Path, one_torch_thread: None, first_steps: int, every_n_steps: int, more: tuple[str, ...]
) -> None:
    every = (f"checkpoint.every_n_steps={every_n_steps}", *more)
    straight = _train(tmp_path / "straight", "trainer.max_steps=60", *every)
    _train(tmp_path / "first", f"trainer.max_steps={first_steps}", *every)
    # One final checkpoint file, holding the last step.
    assert [path.name for path in (tmp_path / "first" / "checkpoints").iterdir()] == ["last.ckpt"]
    assert _final_state(tmp_path / "first")["global_step"] == first_steps
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    extended = _train(tmp_path / "extended", "trainer.max_steps=60", f"ckpt_path={checkpoint}", *every)

    expected, actual = _final_state(tmp_path / "straight"), _final_state(tmp_path / "extended")
    assert actual["global_step"] == expected["global_step"] == 60
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], tensor), name
    for index, state in expected["optimizer_states"][0]["state"].items():
        for key, tensor in state.items():
            assert torch.equal(actual["optimizer_states"][0]["state"][index][key], tensor), (index, key)
    assert (extended["status"], extended["theta"], extended["phi"]) == ("completed", straight["theta"], straight["phi"])


@pytest.fixture(scope="module")
def adam_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("adam") / "run"
    _train(run_dir, "trainer.max_steps=5", "tensorboard.image_every_n_steps=null")
    return run_dir


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["trainer.max_steps=5"],
            "trainer.max_steps=5 with ckpt_path={}: nothing to train, the checkpoint is at step 5",
        ),
        (
            ["trainer.max_steps=3"],
            "trainer.max_steps=3 with ckpt_path={}: nothing to train, the checkpoint is at step 5",
        ),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 with ckpt_path={} (step 5): nothing to train"),
    ],
    ids=["equal", "smaller", "no-epochs"],
)
def test_resume_with_nothing_left_to_train_says_so_before_building_anything(
    adam_run: Path, tmp_path: Path, overrides: list[str], message: str
) -> None:
    checkpoint = adam_run / "checkpoints" / "last.ckpt"
    with pytest.raises(NothingToTrain, match=message.format(checkpoint).replace("(", r"\(").replace(")", r"\)")):
        _train(tmp_path / "run", f"ckpt_path={checkpoint}", *overrides)
    assert not (tmp_path / "run").exists()


def test_resume_with_another_optimizer_is_refused_naming_both(adam_run: Path, tmp_path: Path) -> None:
    checkpoint = adam_run / "checkpoints" / "last.ckpt"
    expected = (
        f"ckpt_path={checkpoint}: refused; the optimizer is torch.optim.adam.Adam in the checkpoint but "
        "torch.optim.sgd.SGD in this run"
    )
    with pytest.raises(CheckpointError, match=expected):
        _train(tmp_path / "run", "optim=sgd", "trainer.max_steps=10", f"ckpt_path={checkpoint}")
    assert not (tmp_path / "run" / "summary.json").exists()


def test_a_run_between_two_periodic_checkpoints_writes_one_final_checkpoint(adam_run: Path) -> None:
    """5 steps, a checkpoint every 500: last.ckpt holds step 5, and there is no last-v1.ckpt beside it."""
    assert [path.name for path in (adam_run / "checkpoints").iterdir()] == ["last.ckpt"]
    assert _final_state(adam_run)["global_step"] == 5
