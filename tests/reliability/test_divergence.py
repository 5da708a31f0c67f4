"""Divergence: a learning rate far too large drives φ to infinity; the run stops loudly and keeps the
last finite checkpoint."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_svi.checkpointing.divergence_guard import NonFiniteGuard, TrainingDiverged
from tests.conftest import read_summary, run_train_py


def test_absurd_learning_rate_exits_3_naming_step_and_parameter_and_keeps_last_finite_checkpoint(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    # Adam at lr 3 (30 times the default) diverges after a few steps; a checkpoint is due at every step.
    result = run_train_py(
        "optim.lr=3", "checkpoint.every_n_steps=1", "trainer.max_steps=300", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    pattern = r"lightning-svi: error: training diverged at step (\d+): (theta|phi) parameter '(\w+)' is not finite"
    match = re.search(pattern, result.stderr)
    assert match, result.stderr[-3000:]
    step = int(match.group(1))
    assert step > 1 and "a smaller optim.lr usually helps" in result.stderr

    summary = read_summary(run_dir)
    assert summary["status"] == "diverged" and summary["steps"] == step
    assert f"step {step}" in summary["error"]

    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == step - 1  # the last finite step, not the diverged one
    for name, tensor in checkpoint["state_dict"].items():
        assert torch.isfinite(tensor).all(), name
    for state in checkpoint["optimizer_states"][0]["state"].values():
        for tensor in state.values():
            assert torch.isfinite(tensor).all()


@pytest.mark.parametrize("where", ["state_dict", "optimizer_states"])
def test_non_finite_value_in_a_checkpoint_being_written_is_refused(where: str) -> None:
    poisoned = torch.tensor([1.0, float("nan")])
    checkpoint = {
        "state_dict": {"svi.guide.qa_unconstrained": poisoned if where == "state_dict" else torch.ones(2)},
        "optimizer_states": [{"state": {0: {"exp_avg": poisoned if where == "optimizer_states" else torch.ones(2)}}}],
    }
    with pytest.raises(TrainingDiverged, match=r"step 7: .*(qa_unconstrained|exp_avg).* is not finite; no checkpoint"):
        NonFiniteGuard().on_save_checkpoint(SimpleNamespace(global_step=7), None, checkpoint)


def test_finite_checkpoint_passes_the_guard() -> None:
    checkpoint = {"state_dict": {"a": torch.ones(2)}, "optimizer_states": [{"state": {0: {"step": torch.tensor(3)}}}]}
    NonFiniteGuard().on_save_checkpoint(SimpleNamespace(global_step=7), None, checkpoint)
