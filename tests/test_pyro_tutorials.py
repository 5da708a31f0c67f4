"""Pyro's own tutorials and examples, their model and guide code unchanged (``tests/pyro_models``), trained
through lightning-svi with only YAML (``tests/pyro_models/conf``) and a data file, against the plain Pyro
``SVI.step`` loop of the same model, guide, optimizer, estimator and seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, compose_config, read_scalars, read_summary, run_train_py
from tests.pyro_models.make_files import write_file
from tests.pyro_models.reference import GOOD_SEEDS, overrides, run

CONF = REPO / "tests" / "pyro_models" / "conf"
SEARCH_PATH = f"hydra.searchpath=[file://{CONF}]"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def settings_of(name: str, steps: int | None = None) -> list[str]:
    """The tutorial's YAML and the reference loop's settings; every step logged, so ``final`` averages the
    last steps as the reference's final ELBO does."""
    return [
        SEARCH_PATH,
        f"model=pyro_{name}",
        f"guide=pyro_{name}",
        *overrides(name, steps),
        "trainer.log_every_n_steps=1",
    ]


def train(name: str, tmp_path: Path, *overrides: str, steps: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Train tutorial ``name`` on the data set the reference loop of ``seed`` draws, with that training seed."""
    from lightning_svi.training.run import train as train_run

    data = write_file(name, tmp_path / "data", seed=seed)
    cfg = compose_config(*settings_of(name, steps), "data=file", f"data.path={data}", f"seed={seed}", *overrides)
    return train_run(cfg, tmp_path / "run")


def within_noise(ours: float, reference: dict[str, Any], floor: float) -> bool:
    """Our final ELBO (mean of the last 10 steps) against the reference's (the last 20): both are Monte Carlo
    averages of single-step estimates with the reference window's spread."""
    return abs(ours - reference["elbo"]) <= max(4 * reference["elbo_std"] / 10**0.5, floor)


def test_svi_part_i_coin_matches_plain_pyro(tmp_path: Path) -> None:
    summary = train("coin", tmp_path)
    reference = run("coin", seed=0)
    assert summary["status"] == "completed"
    assert (summary["model"], summary["guide"]) == ("coin.model", "coin.guide")
    assert summary["theta"] == {} and set(summary["phi"]) == {"alpha_q", "beta_q"}
    assert within_noise(summary["final"]["elbo"], reference, floor=0.3)
    alpha, beta = summary["phi"]["alpha_q"], summary["phi"]["beta_q"]
    assert alpha / (alpha + beta) == pytest.approx(reference["inferred_mean"], abs=0.02)
    assert summary["posterior"]["latent_fairness"]["mean"] == pytest.approx(16 / 30, abs=0.04)
    scalars = read_scalars(tmp_path / "run")
    assert {"phi/alpha_q", "phi/beta_q", "trace/log_p/obs_0", "trace/log_q/latent_fairness"} <= set(scalars)


def test_gmm_tutorial_with_enumeration_and_autodelta_finds_the_two_clusters(tmp_path: Path) -> None:
    summary = train("gmm", tmp_path, seed=1)
    reference = run("gmm", seed=1)
    assert summary["status"] == "completed"
    # The loss is exact (MAP globals, the assignment summed out): both runs reach the tutorial's optimum.
    assert reference["elbo"] == pytest.approx(-17.443, abs=0.05)
    assert summary["final"]["elbo"] == pytest.approx(reference["elbo"], abs=0.05)
    assert sorted(summary["phi"]["locs"]) == pytest.approx([0.5, 11.0], abs=0.1)
    assert "assignment" in summary["posterior"]


def test_bayesian_regression_pyro_module_with_autonormal_matches_plain_pyro(tmp_path: Path) -> None:
    summary = train("regression", tmp_path)
    reference = run("regression", seed=0)
    assert summary["status"] == "completed"
    assert summary["theta"] == {}  # PyroSample priors: every learnable number is the guide's
    assert {"locs.linear.weight", "scales.linear.weight", "locs.sigma"} <= set(summary["phi"])
    assert within_noise(summary["final"]["elbo"], reference, floor=2.0)
    (weights,) = summary["phi"]["locs.linear.weight"]
    ((expected),) = reference["params"]["AutoNormal.locs.linear.weight"]
    assert weights == pytest.approx(expected, abs=0.15)


@pytest.mark.slow
def test_hmm_example_with_enumeration_in_a_markov_loop_matches_plain_pyro(tmp_path: Path) -> None:
    summary = train("hmm", tmp_path, seed=2)
    reference = run("hmm", seed=2)
    assert summary["status"] == "completed"
    assert set(summary["phi"]) == {"probs_x", "probs_y"}
    assert summary["final"]["elbo"] == pytest.approx(reference["elbo"], rel=0.02)
    # The summed-out hidden states: one term with a tag TensorBoard can show.
    marginal = [tag for tag in read_scalars(tmp_path / "run") if tag.startswith("trace/log_p/marginal(")]
    assert marginal and all(len(tag) < 80 for tag in marginal)


@pytest.mark.slow
def test_vae_example_object_trains_decoder_as_theta_and_encoder_as_phi(tmp_path: Path) -> None:
    summary = train("vae", tmp_path)
    reference = run("vae", seed=0)
    assert summary["status"] == "completed"
    assert summary["theta"] and all(name.startswith("decoder$$$") for name in summary["theta"])
    assert summary["phi"] and all(name.startswith("encoder$$$") for name in summary["phi"])
    # A network's weights are summarised in summary.json (the checkpoint holds them), small tensors listed.
    weights = summary["theta"]["decoder$$$fc21.weight"]
    assert weights["shape"] == [784, 32] and set(weights) == {"shape", "mean", "sd", "min", "max"}
    assert isinstance(summary["theta"]["decoder$$$fc1.bias"], list)
    assert within_noise(summary["final"]["elbo"], reference, floor=0.03 * abs(reference["elbo"]))


@pytest.mark.slow
def test_the_vae_on_minibatches_reports_the_full_data_elbo(tmp_path: Path) -> None:
    full = train("vae", tmp_path / "full")
    batched = train("vae", tmp_path / "batched", "data.batch_size=64", "trainer.log_every_n_steps=1")
    # The example's plate("data", x.shape[0]) is scaled by N / 64: the minibatch ELBO estimates the full one.
    assert batched["final"]["elbo"] == pytest.approx(full["final"]["elbo"], rel=0.15)


@pytest.mark.slow
def test_a_user_runs_a_tutorial_from_the_command_line_and_resumes_it_exactly(tmp_path: Path) -> None:
    data = write_file("coin", tmp_path)
    common = ["data=file", f"data.path={data}", "checkpoint.every_n_steps=20"]
    straight = run_train_py(*settings_of("coin", 40), *common, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    first = run_train_py(*settings_of("coin", 20), *common, f"hydra.run.dir={tmp_path / 'first'}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = run_train_py(
        *settings_of("coin", 40),
        *common,
        f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path / 'second'}",
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    resumed_summary = read_summary(tmp_path / "second")
    assert resumed_summary["phi"] == read_summary(tmp_path / "straight")["phi"]
    assert resumed_summary["steps"] == 40 and resumed_summary["status"] == "completed"
    assert json.loads((tmp_path / "straight" / "summary.json").read_text())["steps"] == 40


def test_an_after_step_hook_clamps_a_pyro_param_by_name_as_sparse_gamma_def_does(tmp_path: Path) -> None:
    import numpy as np

    from lightning_svi.training.run import train as train_run

    rows = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    np.savez(tmp_path / "xy.npz", x=rows, y=rows @ np.array([2.0, 1.0], dtype=np.float32))
    cfg = compose_config(
        "model=custom",
        "model._target_=tests.test_programs.regression",
        "guide=empty",
        "data=file",
        f"data.path={tmp_path / 'xy.npz'}",
        "optim.after_step=tests.after_step_hooks.clip_params",
        "trainer.max_steps=60",
    )
    summary = train_run(cfg, tmp_path / "run")
    # Unclamped, both weights grow towards (2, 1); the hook holds them at 0.25 after every step.
    assert summary["theta"]["weight"] == pytest.approx([0.25, 0.25])


@pytest.mark.slow
@pytest.mark.parametrize(("name", "seed"), [("regression", 0), ("hmm", 2)])
def test_tutorials_train_under_ddp_as_on_one_process(tmp_path: Path, name: str, seed: int) -> None:
    """Two CPU processes joined by gloo, each on half the rows: the model's own plate("data", len(x)) is scaled
    by N / half, and DDP's mean of the two gradients is the full data's."""
    import torch

    data = write_file(name, tmp_path / "data", seed=seed)
    common = [*settings_of(name), "data=file", f"data.path={data}", f"seed={seed}"]
    result = run_train_py(
        "trainer=ddp_cpu", "rank_dumps=true", *common, f"hydra.run.dir={tmp_path / 'ddp'}", cwd=tmp_path, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = read_summary(tmp_path / "ddp")
    single = train(name, tmp_path / "single", seed=seed)
    assert ddp["world_size"] == 2 and ddp["status"] == "completed"
    first, second = (
        torch.load(path, weights_only=False)["state_dict"]
        for path in sorted((tmp_path / "ddp" / "rank_state").glob("rank*.pt"))
    )
    assert first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)
    if name == "hmm":  # an exact loss (MAP tables, hidden states summed out): the same optimum
        assert ddp["final"]["elbo"] == pytest.approx(single["final"]["elbo"], rel=1e-3)
    else:
        assert ddp["final"]["elbo"] == pytest.approx(single["final"]["elbo"], abs=5.0)


def test_a_model_without_a_data_plate_is_refused_under_ddp(tmp_path: Path) -> None:
    data = write_file("coin", tmp_path)
    result = run_train_py(
        "trainer=ddp_cpu", *settings_of("coin"), "data=file", f"data.path={data}", f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert (
        "batches of 5 of the 10 rows (data.batch_size, or a DDP rank's shard): observed site(s) obs_0" in result.stderr
    )


def _flat(values: Any) -> list[float]:
    """A summary's θ or φ entry (a number, nested lists, or a large tensor's summary) as a flat list."""
    if isinstance(values, dict):
        return [values[key] for key in ("mean", "sd", "min", "max")]
    if isinstance(values, list):
        return [number for value in values for number in _flat(value)]
    return [values]


@pytest.mark.parametrize(
    ("name", "seed"),
    [
        ("coin", 0),
        *(
            pytest.param(name, seed, marks=pytest.mark.slow)
            for name, seed in [("gmm", 0), ("regression", 0), ("vae", 0)]
        ),
        pytest.param("hmm", GOOD_SEEDS["hmm"][0], marks=pytest.mark.slow),
    ],
)
def test_compiled_mode_trains_the_tutorial_as_the_eager_step_does(tmp_path: Path, name: str, seed: int) -> None:
    """The replayed graph runs the same aten ops in the same order as Pyro's eager step, random draws
    included, from the same random state: the same θ and φ up to float rounding, and no fall-back.
    The HMM reads values of its data (``range(lengths.max())``), which a run on the whole data set
    lets the trace read (``CompiledSVIStep(fixed_batch=True)``)."""
    steps = ["trainer.log_every_n_steps=10"]
    eager = train(name, tmp_path / "eager", *steps, steps=60, seed=seed)
    compiled = train(
        name, tmp_path / "compiled", *steps, "compile.enabled=true", "compile.backend=fx", steps=60, seed=seed
    )
    assert "compile" not in compiled and compiled["timing"]["compile_seconds"] > 0
    for side in ("theta", "phi"):
        assert set(compiled[side]) == set(eager[side])
        for parameter in eager[side]:
            assert _flat(compiled[side][parameter]) == pytest.approx(_flat(eager[side][parameter]), rel=1e-3, abs=1e-4)
    assert compiled["final"]["elbo"] == pytest.approx(eager["final"]["elbo"], rel=1e-3)
