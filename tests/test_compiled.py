"""compile.enabled=true: the same answers as Pyro's eager ELBO, every logged quantity, clear refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lightning_svi.models.beta_binomial import BetaBinomial
from tests.conftest import read_scalars, read_summary

STEPS = ["trainer.max_steps=600", "trainer.log_every_n_steps=20"]


@pytest.mark.parametrize("backend", ["fx", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_step_reaches_the_same_answer_as_the_eager_step(train_in_process, tmp_path: Path, backend) -> None:
    eager = train_in_process(*STEPS, run_dir=tmp_path / "eager")
    compiled = train_in_process(*STEPS, "compile.enabled=true", f"compile.backend={backend}", run_dir=tmp_path / "out")
    assert compiled["status"] == "completed" and compiled["steps"] == 600
    # Compile time is reported apart from the loop's rate.
    assert compiled["timing"]["compile_seconds"] > 0 and eager["timing"]["compile_seconds"] is None
    for name in ("alpha", "beta"):
        assert compiled["theta"][name] == pytest.approx(eager["theta"][name], rel=0.1)
    # Final ELBO estimates agree within Monte Carlo error (their spread over the last steps is ~1 nat).
    assert compiled["final"]["elbo"] == pytest.approx(eager["final"]["elbo"], abs=3.0)
    assert compiled["final"]["log_evidence"] == pytest.approx(eager["final"]["log_evidence"], abs=1.0)
    # Each run's guide sits on the exact posterior of every group, Beta(α + y, β + n − y) under its own θ.
    data = BetaBinomial.synthetic_data(seed=0)
    for summary in (eager, compiled):
        alpha, beta = summary["theta"]["alpha"], summary["theta"]["beta"]
        exact = (alpha + data["successes"]) / (alpha + beta + data["trials"])
        guide = torch.tensor(summary["phi"]["qa"]) / (
            torch.tensor(summary["phi"]["qa"]) + torch.tensor(summary["phi"]["qb"])
        )
        assert (guide - exact).abs().mean() < 0.02
        assert (guide - exact).abs().max() < 0.08


def test_compiled_step_logs_every_quantity_the_eager_step_logs(train_in_process, tmp_path: Path) -> None:
    train_in_process("trainer.max_steps=40", "trainer.log_every_n_steps=10", "compile.enabled=true",
                     "compile.backend=fx")  # fmt: skip
    scalars = read_scalars(tmp_path / "run")
    tags = ["train/elbo", "trace/log_p", "trace/log_q", "trace/log_p/rate", "trace/log_q/rate",
            "trace/log_p/successes", "theta/alpha", "grad_norm/theta", "grad_norm/phi", "evidence/gap"]  # fmt: skip
    for tag in tags:
        assert scalars[tag] and all(math.isfinite(value) for _, value in scalars[tag]), tag
    elbo, log_p, log_q = (dict(scalars[tag]) for tag in ("train/elbo", "trace/log_p", "trace/log_q"))
    for step in elbo:
        assert elbo[step] == pytest.approx(log_p[step] - log_q[step], rel=1e-4, abs=1e-2)


def test_the_statistics_the_graph_reports_are_those_the_eager_loggers_compute(train_in_process, tmp_path: Path) -> None:
    """With the update inside the graph, a logged step is one graph call that also reports the gradient
    norms (before the update), θ and φ (after it) and the evidence (at θ before it): on the same draws
    (fx replays the eager step's operations), every logged scalar is the eager run's, step by step."""
    run = ["trainer.max_steps=60", "trainer.log_every_n_steps=10"]
    train_in_process(*run, run_dir=tmp_path / "eager")
    train_in_process(*run, "compile.enabled=true", "compile.backend=fx", run_dir=tmp_path / "compiled")
    eager, compiled = read_scalars(tmp_path / "eager"), read_scalars(tmp_path / "compiled")
    tags = ["train/elbo", "grad_norm/theta", "grad_norm/phi", "theta/alpha", "theta/beta", "phi/qa/min",
            "evidence/log_evidence", "evidence/gap"]  # fmt: skip
    for tag in tags:
        assert [step for step, _ in compiled[tag]] == [1, 10, 20, 30, 40, 50, 60], tag
        for (_, ours), (_, theirs) in zip(compiled[tag], eager[tag], strict=True):
            assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-4), tag


def test_a_logger_that_reads_theta_before_the_update_sees_it_before_the_update(
    train_in_process, tmp_path: Path
) -> None:
    """A user's ``before_update`` that reads θ itself keeps the compiled update apart from the graph call."""
    from tests.step_spies import ThetaAroundUpdate

    ThetaAroundUpdate.seen.clear()
    spy = "+callbacks.spy={_target_: tests.step_spies.ThetaAroundUpdate}"
    run = ["trainer.max_steps=30", "trainer.log_every_n_steps=10", "compile.enabled=true", "compile.backend=fx"]
    summary = train_in_process(*run, spy)
    assert len(ThetaAroundUpdate.seen) == 4  # steps 1, 10, 20, 30
    assert all(before != after for before, after in ThetaAroundUpdate.seen)
    assert ThetaAroundUpdate.seen[-1][1] == pytest.approx(summary["theta"]["alpha"], rel=1e-6)


@pytest.mark.slow
def test_a_second_run_takes_its_compiled_step_from_the_cache(train_in_process, tmp_path: Path) -> None:
    """Inductor's cache in ``compile.cache_dir`` serves the next run of the same step (a sweep's jobs): the
    first run compiles, the second reports a hit and spends a fraction of the first's compile time."""
    run = ["trainer.max_steps=5", "compile.enabled=true", f"compile.cache_dir={tmp_path / 'inductor'}"]
    first = train_in_process(*run, run_dir=tmp_path / "first")
    second = train_in_process(*run, run_dir=tmp_path / "second")
    assert first["timing"]["compile_cache_hit"] is False and second["timing"]["compile_cache_hit"] is True
    assert any((tmp_path / "inductor").iterdir())
    assert second["theta"] == pytest.approx(first["theta"], rel=1e-6)  # the same step, from the cache


@pytest.mark.parametrize("arguments", ["tensor, tensor", "tensor, float", "float, tensor"])
def test_the_inductor_graph_draws_normals_as_torch_normal_does(arguments: str) -> None:
    """``torch.normal`` goes into the inductor graph as ``randn * std + mean`` (inductor's own decomposition
    leaves a slow Python fallback): the same draws from the same generator state."""
    from lightning_svi.compile.compiled_step import _normal

    mean, std = torch.tensor([[0.0], [1.0]]), torch.tensor([1.0, 2.0, 3.0])
    args = {"tensor, tensor": (mean, std), "tensor, float": (mean, 2.0), "float, tensor": (0.5, std)}[arguments]
    torch.manual_seed(0)
    expected = torch.normal(*args)
    torch.manual_seed(0)
    assert torch.equal(_normal(*args), expected)


def test_a_model_that_branches_on_a_sample_trains_eagerly_and_says_why(train_in_process, tmp_path: Path) -> None:
    model = ["model._target_=tests.branching_model.BranchingModel", "~model.alpha_init", "~model.beta_init",
             "elbo.vectorize_particles=false"]  # fmt: skip
    run = [*model, "guide=normal", "trainer.max_steps=5", "seed=3"]
    with pytest.warns(UserWarning, match=r"could not be traced into a static graph: .*this run trains eagerly"):
        fallback = train_in_process(*run, "compile.enabled=true", "compile.backend=fx", run_dir=tmp_path / "fallback")
    assert fallback["status"] == "completed"
    # The reason names the user's line that reads a sampled value.
    reason = fallback["compile"]["fallback"]
    assert "forward (" in reason and "branching_model.py:" in reason
    assert "reads a tensor's value in `scale = 1.0 if loc > 0 else 2.0" in reason
    assert fallback["timing"]["compile_seconds"] is None
    # The failed trace drew nothing from the run's random stream: the same run as one never compiled.
    eager = train_in_process(*run, run_dir=tmp_path / "eager")
    assert "compile" not in eager
    assert fallback["theta"] == eager["theta"] and fallback["phi"] == eager["phi"]


def test_compiled_minibatches_take_the_steps_of_eager_minibatches(train_in_process, tmp_path: Path) -> None:
    """Minibatches of a fixed size replay one graph; the batch's rows (and its ``index`` for the plate's
    N/B scale) are inputs: the same rows, draws and updates as the eager step, up to float rounding."""
    run = ["data.batch_size=10", "trainer.max_steps=60", "trainer.log_every_n_steps=10"]
    eager = train_in_process(*run, run_dir=tmp_path / "eager")
    compiled = train_in_process(*run, "compile.enabled=true", "compile.backend=fx", run_dir=tmp_path / "compiled")
    assert "compile" not in compiled and compiled["timing"]["compile_seconds"] > 0
    assert compiled["theta"] == pytest.approx(eager["theta"], rel=1e-4)
    for name in ("qa", "qb"):
        assert compiled["phi"][name] == pytest.approx(eager["phi"][name], rel=1e-4)
    assert compiled["final"]["elbo"] == pytest.approx(eager["final"]["elbo"], rel=1e-4)


@pytest.mark.slow
def test_compiled_ddp_takes_the_steps_of_eager_ddp(tmp_path: Path) -> None:
    """Two processes, each replaying its own graph, gradients averaged by one all-reduce: with a delta guide
    and SGD (no random draws, no per-parameter step sizes) the same trajectory as eager DDP, on every rank."""
    from tests.test_ddp import DETERMINISTIC, rank_states, train_ddp

    eager_dir = train_ddp(tmp_path, "eager", *DETERMINISTIC)
    eager = rank_states(eager_dir)
    compiled_dir = train_ddp(tmp_path, "compiled", *DETERMINISTIC, "compile.enabled=true", "compile.backend=fx")
    compiled = rank_states(compiled_dir)
    summary = read_summary(compiled_dir)
    assert summary["world_size"] == 2 and summary["timing"]["compile_seconds"] > 0 and "compile" not in summary
    for name, value in compiled[0]["state_dict"].items():
        assert torch.equal(value, compiled[1]["state_dict"][name]), name  # the ranks agree exactly
        torch.testing.assert_close(value, eager[0]["state_dict"][name], rtol=1e-4, atol=1e-5)
    # The norms of the averaged gradients, which the optimizer applied, not of one rank's own.
    eager_scalars, compiled_scalars = read_scalars(eager_dir), read_scalars(compiled_dir)
    norms = [tag for tag in eager_scalars if tag.startswith("grad_norm/")]
    assert norms
    for tag in norms:
        assert [step for step, _ in compiled_scalars[tag]] == [step for step, _ in eager_scalars[tag]]
        for (_, got), (_, want) in zip(compiled_scalars[tag], eager_scalars[tag], strict=True):
            assert got == pytest.approx(want, rel=1e-4, abs=1e-6), tag
