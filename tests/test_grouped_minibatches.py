"""Several minibatches per Lightning batch: each SVI step takes its own minibatch, the ones one batch
per step would have drawn, in the same order; the callbacks see the same steps, and a resumed run
continues the same sequence."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from lightning_svi.data import datamodule
from lightning_svi.data.datamodule import PERMUTATION_THREAD, EndlessBatchSampler
from lightning_svi.errors import UserInputError
from lightning_svi.training.module import SVIModule
from lightning_svi.training.observed_steps import AUTO_ROWS_PER_BATCH, resolve_steps_per_batch
from lightning_svi.training.step_engine import EagerStep
from tests.conftest import read_scalars

# beta_binomial's 50 groups in minibatches of 8: six a pass, two rows left out of each pass.
ROWS, BATCH_SIZE = 50, 8
MINIBATCHES = ["data.batch_size=8", "optim.scheduler=null", "trainer.log_every_n_steps=5"]
OBSERVED = ["checkpoint.every_n_steps=20", "tensorboard.image_every_n_steps=15"]
LOGGED = ["train/elbo", "trace/log_p", "trace/log_q", "theta/alpha", "grad_norm/theta"]


# Each recorder wraps these, not the previous recorder's wrappers.
ORIGINALS = (EagerStep.loss_and_gradients, SVIModule.training_step, SVIModule.on_save_checkpoint)


class Recorder:
    """What a run's steps read, the rows of each Lightning batch, the steps checkpointed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.step_rows: list[torch.Tensor] = []
        self.batch_rows: list[int] = []
        self.checkpoint_steps: list[int] = []
        loss_and_gradients, training_step, on_save_checkpoint = ORIGINALS

        def record_step(engine: EagerStep, batch: dict, **options: bool) -> tuple:
            self.step_rows.append(batch["index"].clone())
            return loss_and_gradients(engine, batch, **options)

        def record_batch(module: SVIModule, batch: dict, batch_idx: int) -> torch.Tensor:
            self.batch_rows.append(len(batch["index"]))
            return training_step(module, batch, batch_idx)

        def record_checkpoint(module: SVIModule, checkpoint: dict) -> None:
            self.checkpoint_steps.append(module.trainer.global_step)
            on_save_checkpoint(module, checkpoint)

        monkeypatch.setattr(EagerStep, "loss_and_gradients", record_step)
        monkeypatch.setattr(SVIModule, "training_step", record_batch)
        monkeypatch.setattr(SVIModule, "on_save_checkpoint", record_checkpoint)


def sampler_minibatches(count: int, start: int = 0) -> list[torch.Tensor]:
    """The minibatches one batch per step draws: the first ``count`` of the sampler from ``start``."""
    iterator = iter(EndlessBatchSampler(ROWS, BATCH_SIZE, shuffle=True, seed=0, start=start))
    return [next(iterator) for _ in range(count)]


def same_tensors(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_grouped_minibatches_take_the_same_steps_on_the_same_minibatches_as_one_per_batch(
    train_in_process, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = [*MINIBATCHES, *OBSERVED, "trainer.max_steps=53"]
    one = Recorder(monkeypatch)
    single = train_in_process(*run, "steps_per_batch=1", run_dir=tmp_path / "one")
    grouped = Recorder(monkeypatch)
    several = train_in_process(*run, run_dir=tmp_path / "grouped")  # steps_per_batch=null: 10 a batch

    assert one.batch_rows == [BATCH_SIZE] * 53
    # The first step is a batch of its own; then batches of 10 end early on every observed step:
    # pictures at 15, 30, 45, checkpoints at 20, 40, the last at 53.
    assert grouped.batch_rows == [BATCH_SIZE * steps for steps in (1, 9, 5, 5, 10, 10, 5, 5, 3)]
    expected = sampler_minibatches(53)
    assert same_tensors(one.step_rows, expected)
    assert same_tensors(grouped.step_rows, expected)
    assert grouped.checkpoint_steps == one.checkpoint_steps == [20, 40, 53]
    assert several["steps"] == single["steps"] == 53
    for key in ("theta", "phi", "final"):
        assert several[key] == single[key], key
    scalars_one, scalars_grouped = read_scalars(tmp_path / "one"), read_scalars(tmp_path / "grouped")
    for tag in LOGGED:
        assert scalars_grouped[tag] == scalars_one[tag], tag


def test_a_resumed_grouped_run_continues_the_minibatch_sequence_and_ends_where_a_straight_run_does(
    train_in_process, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run stops at 27, inside a pass and between two batch boundaries of the straight run;
    each pass is shuffled ahead in the sampler's thread, as a large data set's are."""
    monkeypatch.setattr(datamodule, "DRAWN_AHEAD_FROM_ROWS", ROWS)
    every = [*MINIBATCHES, "checkpoint.every_n_steps=10", "tensorboard.image_every_n_steps=null"]
    straight_steps = Recorder(monkeypatch)
    straight = train_in_process(*every, "trainer.max_steps=60", run_dir=tmp_path / "straight")
    Recorder(monkeypatch)  # the first run's own record, not the straight run's
    train_in_process(*every, "trainer.max_steps=27", run_dir=tmp_path / "first")
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=False)
    assert state["global_step"] == 27
    assert state["TensorDataModule"] == {"minibatches_taken": 27}  # what the sampler resumes from
    resumed_steps = Recorder(monkeypatch)
    resumed = train_in_process(*every, "trainer.max_steps=60", f"ckpt_path={checkpoint}", run_dir=tmp_path / "resumed")

    assert straight_steps.batch_rows == [BATCH_SIZE * steps for steps in (1, 9, 10, 10, 10, 10, 10)]
    assert resumed_steps.batch_rows == [BATCH_SIZE * steps for steps in (3, 10, 10, 10)]
    assert same_tensors(resumed_steps.step_rows, straight_steps.step_rows[27:])
    assert same_tensors(resumed_steps.step_rows, sampler_minibatches(33, start=27))
    assert resumed_steps.checkpoint_steps == [30, 40, 50, 60]
    assert (resumed["status"], resumed["theta"], resumed["phi"]) == ("completed", straight["theta"], straight["phi"])
    # The sampler's thread that draws the next pass ahead ended with each run's loop.
    assert not [thread for thread in threading.enumerate() if thread.name.startswith(PERMUTATION_THREAD)]


@pytest.mark.slow
def test_compiled_grouped_minibatches_match_one_per_batch(
    train_in_process, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The steps between observed ones apply Adam inside the graph: equal up to rounding."""
    run = [*MINIBATCHES, *OBSERVED, "trainer.max_steps=53", "compile.enabled=true", "compile.backend=fx"]
    single = train_in_process(*run, "steps_per_batch=1", run_dir=tmp_path / "one")
    grouped = Recorder(monkeypatch)
    several = train_in_process(*run, run_dir=tmp_path / "grouped")  # 100 a batch, compiled
    assert "compile" not in several and several["timing"]["compile_seconds"] > 0  # compiled, no fallback
    assert grouped.batch_rows == [BATCH_SIZE * steps for steps in (1, 14, 5, 10, 10, 5, 8)]
    assert grouped.checkpoint_steps == [20, 40, 53]
    for side in ("theta", "phi"):
        for name, value in single[side].items():
            assert several[side][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (side, name)


def test_minibatches_per_batch_are_capped_by_rows_by_default_and_refused_where_they_cannot_be_grouped() -> None:
    assert resolve_steps_per_batch(None, 1, minibatch_rows=1000, compiled=True) == 100
    assert resolve_steps_per_batch(None, 1, minibatch_rows=AUTO_ROWS_PER_BATCH // 4) == 4
    assert resolve_steps_per_batch(None, 1, minibatch_rows=AUTO_ROWS_PER_BATCH * 2) == 1
    assert resolve_steps_per_batch(None, 1, minibatch_rows=1000, groupable=False) == 1
    assert resolve_steps_per_batch(None, 2, minibatch_rows=1000) == 50  # DDP averages each step's gradients itself
    assert resolve_steps_per_batch(None, 2, minibatch_rows=None) == 50
    assert resolve_steps_per_batch(None, 2, minibatch_rows=None, compiled=True) == 100
    assert resolve_steps_per_batch(None, 2, minibatch_rows=1000, plain_precision=False) == 1  # DDP's hooks do
    assert resolve_steps_per_batch(7, 1, minibatch_rows=AUTO_ROWS_PER_BATCH) == 7  # the user's choice
    with pytest.raises(UserInputError, match="steps_per_batch=3 with minibatches from a data module that draws one"):
        resolve_steps_per_batch(3, 1, minibatch_rows=1000, groupable=False)
    with pytest.raises(UserInputError, match=r"steps_per_batch=3 with 2 processes and a trainer\.precision plugin"):
        resolve_steps_per_batch(3, 2, minibatch_rows=1000, plain_precision=False)
