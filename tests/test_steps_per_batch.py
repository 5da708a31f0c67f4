"""Several SVI steps per Lightning batch (``steps_per_batch``): the same run, bit for bit, seen by
the callbacks at the same steps."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.conftest import read_scalars, read_summary, run_train_py

RUN = ["model=beta_bernoulli", "trainer.max_steps=53", "trainer.log_every_n_steps=5", "checkpoint.every_n_steps=20"]
LOGGED = ["train/elbo", "trace/log_p", "theta/alpha", "phi/qa", "grad_norm/theta", "evidence/log_evidence",
          "evidence/gap"]  # fmt: skip


def same(a: object, b: object, exact: bool) -> bool:
    return a == b if exact else a == pytest.approx(b, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    ("mode", "exact"),
    [([], True), pytest.param(["compile.enabled=true", "compile.backend=fx"], False, marks=pytest.mark.slow)],
    ids=["eager", "compiled"],
)  # compiled runs take 100 steps a batch by default: test_compiled keeps them fast
def test_several_steps_per_batch_take_the_same_steps_and_log_the_same_values(
    train_in_process, tmp_path: Path, mode: list[str], exact: bool
) -> None:
    """Eager: bit for bit. Compiled: the steps between observed ones apply Adam inside the graph,
    the same arithmetic as torch's fused kernel up to rounding."""
    one = train_in_process(*RUN, *mode, "steps_per_batch=1", run_dir=tmp_path / "one")
    seven = train_in_process(*RUN, *mode, "steps_per_batch=7", run_dir=tmp_path / "seven")
    assert seven["steps"] == one["steps"] == 53
    for key in ("theta", "phi", "final"):
        assert same(seven[key], one[key], exact), key
    scalars_one, scalars_seven = read_scalars(tmp_path / "one"), read_scalars(tmp_path / "seven")
    for tag in LOGGED:
        assert [step for step, _ in scalars_seven[tag]] == [step for step, _ in scalars_one[tag]], tag
        assert same([value for _, value in scalars_seven[tag]], [value for _, value in scalars_one[tag]], exact), tag
    assert [step for step, _ in scalars_seven["train/elbo"]] == [1, *range(5, 51, 5), 53]
    checkpoint = torch.load(tmp_path / "seven" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 53  # written at the end, between two intervals of 20
    assert seven["timing"]["steps_per_second"] > 0


def test_several_steps_per_minibatch_run_each_on_its_own_minibatch(tmp_path: Path) -> None:
    """``train.py`` accepts steps_per_batch with minibatches: each batch carries one minibatch per step,
    ended early at the checkpoint (the sampler's grouping itself: tests/test_grouped_minibatches.py)."""
    result = run_train_py(
        "model=beta_bernoulli", "steps_per_batch=5", "data.batch_size=10", "trainer.max_steps=12",
        "checkpoint.every_n_steps=6", "callbacks.diagnostics=null", "hydra.run.dir=run", cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_summary(tmp_path / "run")["steps"] == 12
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 12
    assert checkpoint["TensorDataModule"] == {"minibatches_taken": 12}


def test_divergence_inside_a_batch_is_caught_at_its_end_and_says_which_steps(train_in_process) -> None:
    """No host sync per step: the guard checks once per batch and names the batch's steps."""
    from lightning_svi.checkpointing.divergence_guard import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"step (\d+): .* Steps \d+-\1 ran as one batch") as raised:
        train_in_process("optim.lr=3", "trainer.max_steps=300", "trainer.log_every_n_steps=50", "steps_per_batch=10")
    step = int(re.search(r"step (\d+):", str(raised.value)).group(1))
    first = int(re.search(r"Steps (\d+)-", str(raised.value)).group(1))
    # Batches of 10, logged steps inside them: [1-10], [11-20], ...
    assert first == step - 9 and step % 10 == 0


@pytest.mark.parametrize(("precision", "lightning_backwards"), [([], 0), (["+trainer.precision=bf16-mixed"], 20)])
def test_lightning_runs_the_backward_of_every_step_under_a_precision_plugin_and_of_none_without(
    train_in_process, monkeypatch: pytest.MonkeyPatch, precision: list[str], lightning_backwards: int
) -> None:
    """Plain float on one process calls autograd and the optimizer directly; a precision plugin (which
    may scale the loss) gets Lightning's backward and optimizer step on every step."""
    from lightning_svi.training.module import SVIModule

    calls = []
    original = SVIModule.manual_backward
    monkeypatch.setattr(SVIModule, "manual_backward", lambda self, loss: calls.append(1) or original(self, loss))
    summary = train_in_process("model=beta_bernoulli", "trainer.max_steps=20", "steps_per_batch=10", *precision)
    assert summary["steps"] == 20
    assert len(calls) == lightning_backwards


def test_the_first_step_is_a_batch_of_its_own_and_the_rate_leaves_it_out(
    train_in_process, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first step carries a run's one-off work (Pyro's validation, the first TensorBoard event).
    Made to last 1,000 s on the summary's clock here, it is not in ``timing.steps_per_second``."""
    import time
    from types import SimpleNamespace

    from lightning_svi.logging import summary as summary_module
    from lightning_svi.training.module import SVIModule

    offset = [0.0]
    monkeypatch.setattr(summary_module, "time", SimpleNamespace(perf_counter=lambda: time.perf_counter() + offset[0]))
    batches: list[int] = []
    original = SVIModule.training_step

    def training_step(self: SVIModule, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = original(self, batch, batch_idx)
        batches.append(self.batch_steps)
        if len(batches) == 1:
            offset[0] = 1000.0
        return loss

    monkeypatch.setattr(SVIModule, "training_step", training_step)
    summary = train_in_process("model=beta_bernoulli", "trainer.max_steps=21", "steps_per_batch=10")
    assert batches == [1, 9, 10, 1]
    assert summary["timing"]["wall_seconds"] > 1000
    # Timed from the start of the first batch, 21 steps would take over 1,000 s.
    assert summary["timing"]["steps_per_second"] > 1


def test_a_batch_of_full_batch_steps_on_one_process_ends_by_time_only_where_it_may() -> None:
    from lightning_svi.training.observed_steps import (
        AUTO_BATCH_SECONDS,
        TIMED_STEPS_PER_BATCH,
        batch_seconds,
        resolve_steps_per_batch,
    )

    assert batch_seconds(None, 1, minibatch_rows=None) == AUTO_BATCH_SECONDS
    assert resolve_steps_per_batch(None, 1, minibatch_rows=None) == TIMED_STEPS_PER_BATCH
    assert resolve_steps_per_batch(None, 1, minibatch_rows=None, compiled=True) == TIMED_STEPS_PER_BATCH
    assert batch_seconds(7, 1, minibatch_rows=None) is None  # the user's choice: batches of 7
    assert batch_seconds(None, 1, minibatch_rows=1000) is None  # grouped before the batch runs
    assert batch_seconds(None, 2, minibatch_rows=None) is None  # the ranks end their batches together


@pytest.mark.parametrize(("seconds", "batches"), [(0.0, [1] * 53), (1e9, [1, 19, 20, 13])])
def test_a_batch_with_a_time_limit_ends_after_the_step_that_reaches_it_and_takes_the_same_steps(
    train_in_process, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float, batches: list[int]
) -> None:
    """``steps_per_batch`` null, full batch, one process: a batch ends at its time limit (every step at
    0 s) or at the next checkpointed step (20, 40) and the last; the run is ``steps_per_batch=1``'s, bit
    for bit, logged at the same steps."""
    from lightning_svi.training import observed_steps
    from lightning_svi.training.module import SVIModule

    one = train_in_process(*RUN, "steps_per_batch=1", run_dir=tmp_path / "one")
    monkeypatch.setattr(observed_steps, "AUTO_BATCH_SECONDS", seconds)
    seen: list[int] = []
    original = SVIModule.training_step

    def training_step(self: SVIModule, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = original(self, batch, batch_idx)
        seen.append(self.batch_steps)
        return loss

    monkeypatch.setattr(SVIModule, "training_step", training_step)
    timed = train_in_process(*RUN, run_dir=tmp_path / "timed")
    assert seen == batches
    for key in ("steps", "theta", "phi", "final"):
        assert timed[key] == one[key], key
    scalars_one, scalars_timed = read_scalars(tmp_path / "one"), read_scalars(tmp_path / "timed")
    for tag in LOGGED:
        assert scalars_timed[tag] == scalars_one[tag], tag
