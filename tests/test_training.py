"""In-process training runs: every guide and estimator, the optimizer groups, TensorBoard and resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lightning_svi.models.beta_binomial import BetaBinomial
from tests.conftest import compose_config, read_histogram_tags, read_scalars, read_summary

SHORT = ["trainer.max_steps=30", "trainer.log_every_n_steps=5"]

DATA_COLUMNS = [column.tolist() for column in BetaBinomial.synthetic_data(0).values()]

PHI_NAMES = {
    "full": {"qa", "qb"},
    "empty": set(),
    "delta": {"rate"},
    "normal": {"locs.rate", "scales.rate"},
    "diag_normal": {"loc", "scale"},
    "lowrank": {"loc", "scale", "cov_factor"},
}


@pytest.mark.parametrize("kind", sorted(PHI_NAMES))
def test_every_guide_kind_trains_and_reports_its_phi(train_in_process, kind: str) -> None:
    summary = train_in_process(*SHORT, f"guide={kind}")
    assert summary["status"] == "completed"
    assert summary["steps"] == 30
    assert summary["guide"] == kind
    assert set(summary["phi"]) == PHI_NAMES[kind]
    assert set(summary["theta"]) == {"alpha", "beta"}
    assert all(value > 0 for value in summary["theta"].values())
    assert math.isfinite(summary["final"]["elbo"])


@pytest.mark.parametrize("name", ["trace", "trace_graph", "trace_mean_field"])
def test_every_estimator_trains(train_in_process, name: str) -> None:
    summary = train_in_process(*SHORT, f"elbo={name}", "elbo.num_particles=2", "elbo.vectorize_particles=false")
    assert summary["status"] == "completed"
    assert summary["elbo"] == compose_config(f"elbo={name}").elbo._target_.removeprefix("pyro.infer.")
    assert math.isfinite(summary["final"]["loss"])


@pytest.mark.parametrize("optim", ["adam", "clipped_adam", "sgd"])
def test_optimizer_has_theta_and_phi_groups_with_their_own_rates(optim: str) -> None:
    from lightning_svi.core.programs.warmup import warm_up
    from lightning_svi.data.datamodule import TensorDataModule
    from lightning_svi.models.beta_binomial import BetaBinomial
    from lightning_svi.training.run import build_module, reset_global_state

    cfg = compose_config(f"optim={optim}", "optim.lr=0.02", "optim.phi_lr=0.3")
    reset_global_state(0)
    datamodule = TensorDataModule(BetaBinomial.synthetic_data(0, num_groups=5))
    module, _ = build_module(cfg, datamodule)
    module.sides = warm_up(module.svi, module.estimator, datamodule.full_batch(), validate=True)  # what setup does
    module.trainer = type("FakeTrainer", (), {"max_steps": 10})()  # configure_optimizers reads max_steps
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert groups["theta"]["lr"] == pytest.approx(0.02)
    assert groups["phi"]["lr"] == pytest.approx(0.3)
    assert {id(p) for p in groups["theta"]["params"]} == {id(p) for p in module.model.parameters()}
    assert {id(p) for p in groups["phi"]["params"]} == {id(p) for p in module.guide.parameters()}


def test_tensorboard_has_every_tag_and_the_elbo_identity_holds_step_by_step(train_in_process, tmp_path: Path) -> None:
    train_in_process(*SHORT, "elbo.num_particles=3")
    scalars = read_scalars(tmp_path / "run")
    expected = {
        "train/loss", "train/elbo", "trace/log_p", "trace/log_q",
        "trace/log_p/rate", "trace/log_p/successes", "trace/log_q/rate",
        "theta/alpha", "theta/beta", "evidence/log_evidence", "evidence/gap",
        "grad_norm/theta", "grad_norm/phi",
    }  # fmt: skip
    assert expected <= set(scalars)
    # phi/qa has 50 elements: a histogram and its spread, no per-element scalars.
    assert {tag for tag in scalars if tag.startswith("phi/qa")} == {"phi/qa/min", "phi/qa/median", "phi/qa/max"}
    assert read_histogram_tags(tmp_path / "run") == {"phi/qa", "phi/qb"}  # θ's scalars get none
    for tag in expected:
        assert all(math.isfinite(value) for _, value in scalars[tag]), tag
    steps = [step for step, _ in scalars["train/elbo"]]
    assert steps == [1, 5, 10, 15, 20, 25, 30]
    elbo = dict(scalars["train/elbo"])
    log_p, log_q = dict(scalars["trace/log_p"]), dict(scalars["trace/log_q"])
    for step in steps:
        assert elbo[step] == pytest.approx(log_p[step] - log_q[step], rel=1e-4, abs=1e-2)
    gap, log_evidence = dict(scalars["evidence/gap"]), dict(scalars["evidence/log_evidence"])
    for step in steps:
        assert gap[step] == pytest.approx(log_evidence[step] - elbo[step], rel=1e-4, abs=1e-2)


def test_small_tensor_parameters_get_one_scalar_per_element(train_in_process, tmp_path: Path) -> None:
    train_in_process(*SHORT, "data.synthetic={num_groups: 3}")
    scalars = read_scalars(tmp_path / "run")
    assert {"phi/qa/0", "phi/qa/1", "phi/qa/2", "phi/qb/2"} <= set(scalars)


def test_summary_json_follows_the_contract(train_in_process, tmp_path: Path) -> None:
    summary = train_in_process(*SHORT)
    assert summary == read_summary(tmp_path / "run")
    assert set(summary) == {
        "model",
        "guide",
        "elbo",
        "seed",
        "steps",
        "world_size",
        "status",
        "final",
        "theta",
        "phi",
        "timing",
        "posterior",
        "diagnostics",
        "tags",
    }
    assert summary["model"] == "beta_binomial" and summary["elbo"] == "TraceEnum_ELBO" and summary["world_size"] == 1
    iw_keys = {"iw_log_evidence", "iw_log_evidence_se", "iw_gap", "iw_gap_se"}
    assert set(summary["final"]) == {"loss", "elbo", "log_p", "log_q", "log_evidence", "gap", *iw_keys}
    assert {"num_particles", "psis_khat", "reading", "ess"} <= set(summary["diagnostics"]) and summary["tags"] == []
    final = summary["final"]
    assert final["elbo"] == pytest.approx(-final["loss"])
    assert final["elbo"] == pytest.approx(final["log_p"] - final["log_q"], rel=1e-4)
    assert final["gap"] == pytest.approx(final["log_evidence"] - final["elbo"])
    # The averages are over the logged steps of the run's last 5 %, at least the last one (here step 30
    # alone), the same values TensorBoard got.
    scalars = read_scalars(tmp_path / "run")
    for key, tag in (("loss", "train/loss"), ("log_p", "trace/log_p"), ("log_q", "trace/log_q")):
        assert [step for step, _ in scalars[tag]] == [1, 5, 10, 15, 20, 25, 30], tag
        assert final[key] == pytest.approx(scalars[tag][-1][1], rel=1e-5), key
    assert len(summary["phi"]["qa"]) == 50
    assert summary["timing"]["steps_per_second"] > 0
    assert summary["timing"]["wall_seconds"] > 0
    rate = summary["posterior"]["rate"]
    assert set(rate) == {"mean", "sd", "q05", "q95", "exact"}
    assert set(rate["exact"]) == {"mean", "sd", "q05", "q95"}
    assert all(len(values) == 50 for values in rate.values() if isinstance(values, list))
    assert all(low < mean < high for low, mean, high in zip(rate["q05"], rate["mean"], rate["q95"], strict=True))
    alpha, beta = summary["theta"]["alpha"], summary["theta"]["beta"]
    exact_means = [(alpha + y) / (alpha + beta + n) for y, n in zip(*DATA_COLUMNS, strict=True)]
    assert rate["exact"]["mean"] == pytest.approx(exact_means, rel=1e-4)
    check = summary["posterior"]["successes"]["check"]
    assert set(check) == {"mean", "sd"}
    assert check["mean"]["observed"] == pytest.approx(sum(DATA_COLUMNS[0]) / 50, rel=1e-6)
    assert all(0 <= statistic["p_value"] <= 1 for statistic in check.values())


def test_resume_continues_from_the_checkpoint(train_in_process, tmp_path: Path) -> None:
    # A constant rate: the exponential schedule's per-step factor depends on max_steps.
    constant = "optim.scheduler=null"
    first = train_in_process("trainer.max_steps=20", "checkpoint.every_n_steps=10", constant)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    state = torch.load(checkpoint, weights_only=False)
    assert state["global_step"] == 20
    assert state["state_dict"]["svi.model.alpha_unconstrained"].exp().item() == pytest.approx(first["theta"]["alpha"])
    resumed = train_in_process(
        "trainer.max_steps=30", f"ckpt_path={checkpoint}", constant, run_dir=tmp_path / "resumed"
    )
    assert resumed["steps"] == 30
    assert resumed["status"] == "completed"
    # Ten more steps move θ a little from where the first run left it, not from the initial value 1.0.
    assert resumed["theta"]["alpha"] == pytest.approx(first["theta"]["alpha"], rel=0.5)
    assert abs(resumed["theta"]["alpha"] - first["theta"]["alpha"]) < abs(first["theta"]["alpha"] - 1.0)
    # ... and exactly where an uninterrupted run gets in 30 steps (RNG and sampler state are resumed too).
    uninterrupted = train_in_process(
        "trainer.max_steps=30", "checkpoint.every_n_steps=10", constant, run_dir=tmp_path / "straight"
    )
    assert resumed["theta"] == uninterrupted["theta"]
    assert resumed["phi"] == uninterrupted["phi"]
    assert [step for step, _ in read_scalars(tmp_path / "resumed")["train/loss"]] == [30]


def test_final_averages_the_logged_steps_of_the_runs_last_five_percent(train_in_process, tmp_path: Path) -> None:
    """Not the last 10 logged steps whatever they span: on a short run those reached back to its middle."""
    final = train_in_process("trainer.max_steps=60", "trainer.log_every_n_steps=1")["final"]
    logged = read_scalars(tmp_path / "run")["train/loss"]
    assert [step for step, _ in logged[-3:]] == [58, 59, 60]  # 5 % of 60 steps
    assert final["loss"] == pytest.approx(sum(value for _, value in logged[-3:]) / 3, rel=1e-5)


def test_parameters_up_to_a_thousand_elements_are_listed_and_larger_ones_summarised() -> None:
    import torch

    from lightning_svi.logging.summary import LISTED_ELEMENTS, parameter_json

    assert parameter_json(torch.tensor(2.5)) == 2.5
    assert parameter_json(torch.arange(4.0).reshape(2, 2)) == [[0.0, 1.0], [2.0, 3.0]]
    assert len(parameter_json(torch.zeros(LISTED_ELEMENTS))) == LISTED_ELEMENTS
    weights = parameter_json(torch.arange(2000.0).reshape(40, 50))  # a network's weight matrix
    assert weights["shape"] == [40, 50] and weights["mean"] == pytest.approx(999.5)
    assert (weights["min"], weights["max"]) == (0.0, 1999.0)
    assert weights["sd"] == pytest.approx(torch.arange(2000.0).std().item())
