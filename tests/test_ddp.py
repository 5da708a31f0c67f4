"""Data-parallel training on CPU: two processes joined by gloo (``trainer=ddp_cpu``), as in CI.

The runs are shared by the tests of this module (each costs tens of seconds on a 2-core machine).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import compose_config, read_scalars, read_summary, run_train_py

pytestmark = pytest.mark.slow

STEPS = 400
FULL_GUIDE = [f"trainer.max_steps={STEPS}", "optim.lr=0.3", "trainer.log_every_n_steps=10"]
# A delta guide draws no random numbers after the warm-up, and SGD, unlike Adam, sees the scale of
# each gradient: the same global batch must then give the same trajectory up to float rounding.
DETERMINISTIC_STEPS = 100
DETERMINISTIC = ["guide=delta", "optim=sgd", f"trainer.max_steps={DETERMINISTIC_STEPS}", "trainer.log_every_n_steps=10"]


def train_ddp(base: Path, name: str, *overrides: str) -> Path:
    """``python train.py trainer=ddp_cpu OVERRIDES`` into ``base/name``, from ``base``; the run folder."""
    run_dir = base / name
    result = run_train_py("trainer=ddp_cpu", "rank_dumps=true", *overrides, f"hydra.run.dir={run_dir}", cwd=base)
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir


def rank_states(run_dir: Path) -> list[dict]:
    return [torch.load(path, weights_only=False) for path in sorted((run_dir / "rank_state").glob("rank*.pt"))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A two-process run and a one-process run of the same settings, same global (full) batch."""
    from lightning_svi.training.run import train

    base = tmp_path_factory.mktemp("ddp")
    ddp = train_ddp(base, "ddp", *FULL_GUIDE)
    single = base / "single"
    train(compose_config(*FULL_GUIDE), single)
    return {"base": base, "ddp": ddp, "single": single}


def test_ranks_end_with_identical_theta_and_phi(runs: dict[str, Path]) -> None:
    states = rank_states(runs["ddp"])
    assert [state["global_rank"] for state in states] == [0, 1]
    assert all(state["world_size"] == 2 and state["step"] == STEPS for state in states)
    first, second = (state["state_dict"] for state in states)
    assert (
        set(first)
        == set(second)
        == {
            "svi.model.alpha_unconstrained",
            "svi.model.beta_unconstrained",
            "svi.guide.qa_unconstrained",
            "svi.guide.qb_unconstrained",
        }
    )
    for name in first:
        assert torch.equal(first[name], second[name]), name
    # ... and they trained: θ left its initial value 1.0.
    assert not torch.equal(first["svi.model.alpha_unconstrained"], torch.tensor(0.0))


def test_one_run_folder_written_once_by_rank_zero(runs: dict[str, Path]) -> None:
    assert sorted(path.name for path in runs["base"].iterdir()) == ["ddp", "single"]  # no folder per rank
    run_dir = runs["ddp"]
    summary = read_summary(run_dir)
    assert summary["world_size"] == 2 and summary["steps"] == STEPS and summary["status"] == "completed"
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # The rank Lightning re-launched wrote its log beside rank 0's, nothing else.
    assert not list(run_dir.glob("*/.hydra"))


def test_logged_elbo_is_the_average_over_ranks(runs: dict[str, Path]) -> None:
    """Each rank's ELBO estimate covers half the groups, scaled by 2; only the average over ranks
    estimates the full-data ELBO, so only then the gap to the closed-form evidence is small and
    ``train/elbo = trace/log_p − trace/log_q`` holds step by step."""
    scalars = read_scalars(runs["ddp"])
    elbo, log_p, log_q = (dict(scalars[tag]) for tag in ("train/elbo", "trace/log_p", "trace/log_q"))
    assert sorted(elbo) == [1, *range(10, STEPS + 1, 10)]
    for step, value in elbo.items():
        assert value == pytest.approx(log_p[step] - log_q[step], rel=1e-4, abs=1e-2)
    final = read_summary(runs["ddp"])["final"]
    assert 0 < final["gap"] < 3.0
    assert final["elbo"] == pytest.approx(read_summary(runs["single"])["final"]["elbo"], abs=1.0)


def test_two_processes_reach_the_answer_of_one_within_monte_carlo_error(runs: dict[str, Path]) -> None:
    """Same settings, same global batch, independent draws: θ agrees within a few percent (seeds of
    one-process runs spread by about 1% at this step count; 400 steps is short of the type-II MLE
    α=2.91, β=6.85, which both approach from below)."""
    ddp, single = read_summary(runs["ddp"])["theta"], read_summary(runs["single"])["theta"]
    for name in ("alpha", "beta"):
        assert ddp[name] == pytest.approx(single[name], rel=0.05), name
    assert 2.4 < ddp["alpha"] < 3.0 and 5.8 < ddp["beta"] < 7.0


@pytest.fixture(scope="module")
def deterministic_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Full batch, delta guide, SGD: 100 steps in two processes and in one, each resumed for 20
    more steps in the other world size, and one process straight to 120 steps."""
    from lightning_svi.training.run import train

    base = tmp_path_factory.mktemp("deterministic")
    ddp = train_ddp(base, "ddp", *DETERMINISTIC)
    train(compose_config(*DETERMINISTIC), base / "single")
    more = [*DETERMINISTIC, f"trainer.max_steps={DETERMINISTIC_STEPS + 20}"]
    two_then_one = train(compose_config(*more, f"ckpt_path={ddp / 'checkpoints' / 'last.ckpt'}"), base / "2to1")
    one_then_two = train_ddp(base, "1to2", *more, f"ckpt_path={base / 'single' / 'checkpoints' / 'last.ckpt'}")
    return {
        "ddp": read_summary(ddp),
        "single": read_summary(base / "single"),
        "two_then_one": two_then_one,
        "one_then_two": read_summary(one_then_two),
        "one_then_two_ranks": rank_states(one_then_two),
        "straight": train(compose_config(*more), base / "straight"),
    }


def assert_same_trajectory(first: dict, second: dict) -> None:
    for name in ("alpha", "beta"):
        assert first["theta"][name] == pytest.approx(second["theta"][name], rel=1e-4), name
    assert first["phi"]["rate"] == pytest.approx(second["phi"]["rate"], rel=1e-4)
    assert first["final"]["log_evidence"] == pytest.approx(second["final"]["log_evidence"], rel=1e-4)


def test_same_global_batch_gives_the_same_step_for_global_and_local_parameters(deterministic_runs: dict) -> None:
    """Two ranks of 25 rows vs one process of 50: θ and the per-row φ (``rate``) follow one
    trajectory. DDP's average over ranks undoes exactly the plate's N / b over-scaling of local φ;
    scaled wrongly by 2, SGD would move φ twice as far."""
    ddp, single = deterministic_runs["ddp"], deterministic_runs["single"]
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert_same_trajectory(ddp, single)
    # The same logged steps, so also the same final ELBO (averaged over ranks in the DDP run).
    assert ddp["final"]["elbo"] == pytest.approx(single["final"]["elbo"], rel=1e-4)
    assert abs(single["theta"]["alpha"] - 1.0) > 0.5  # not a trivial agreement: θ moved far from 1.0


def test_two_process_checkpoint_resumes_in_one_process(deterministic_runs: dict) -> None:
    resumed = deterministic_runs["two_then_one"]
    assert resumed["steps"] == DETERMINISTIC_STEPS + 20 and resumed["world_size"] == 1
    assert resumed["status"] == "completed"
    assert_same_trajectory(resumed, deterministic_runs["straight"])


def test_one_process_checkpoint_resumes_in_two_processes(deterministic_runs: dict) -> None:
    resumed = deterministic_runs["one_then_two"]
    assert resumed["steps"] == DETERMINISTIC_STEPS + 20 and resumed["world_size"] == 2
    assert resumed["status"] == "completed"
    assert_same_trajectory(resumed, deterministic_runs["straight"])
    first, second = (state["state_dict"] for state in deterministic_runs["one_then_two_ranks"])
    assert all(torch.equal(first[name], second[name]) for name in first)


GROUPED = [
    "data.batch_size=5", "optim.scheduler=null", "trainer.log_every_n_steps=5",
    "checkpoint.every_n_steps=10", "tensorboard.image_every_n_steps=null",
]  # fmt: skip


@pytest.fixture(scope="module")
def grouped_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Minibatches of 5 of each rank's 25 rows: 45 steps one per batch, 27 seven per batch (batches
    of 7, 3, 7, 3, 7 between the checkpoints at 10 and 20); with the delta guide and SGD (no draws
    after the warm-up) 45 steps one per batch, and 27 seven per batch resumed seven per batch to 45."""
    base = tmp_path_factory.mktemp("grouped")
    deterministic = [*GROUPED, "guide=delta", "optim=sgd", "optim.lr=0.002"]
    first = train_ddp(base, "first", *deterministic, "steps_per_batch=7", "trainer.max_steps=27")
    resumed = [
        *deterministic,
        "steps_per_batch=7",
        "trainer.max_steps=45",
        f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}",
    ]
    return {
        "one": train_ddp(base, "one", *GROUPED, "optim.lr=0.3", "steps_per_batch=1", "trainer.max_steps=45"),
        "seven": train_ddp(base, "seven", *GROUPED, "optim.lr=0.3", "steps_per_batch=7", "trainer.max_steps=27"),
        "first": first,
        "resumed": train_ddp(base, "resumed", *resumed),
        "straight": train_ddp(base, "straight", *deterministic, "steps_per_batch=1", "trainer.max_steps=45"),
    }


def test_several_steps_per_batch_under_ddp_take_the_steps_of_one_per_batch(grouped_runs: dict[str, Path]) -> None:
    """Each rank groups its own shards per step, the steps average their gradients with one
    all-reduce: the logged estimates (averaged over ranks, at steps inside batches) and θ/φ are
    those of one step per batch, and the ranks agree."""
    one, seven = read_scalars(grouped_runs["one"]), read_scalars(grouped_runs["seven"])
    tags = [tag for tag in seven if tag.startswith(("train/elbo", "trace/", "grad_norm/", "theta/", "phi/"))]
    assert len(tags) >= 10
    for tag in tags:
        assert [step for step, _ in seven[tag]] == [1, 5, 10, 15, 20, 25, 27], tag
        expected = [value for step, value in one[tag] if step <= 25]  # the one-per-batch run logs 27 too
        assert [value for _, value in seven[tag][:-1]] == pytest.approx(expected, rel=1e-5, abs=1e-6), tag
    first, second = (state["state_dict"] for state in rank_states(grouped_runs["seven"]))
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_a_resumed_ddp_run_with_several_steps_per_batch_ends_where_one_per_batch_does(
    grouped_runs: dict[str, Path],
) -> None:
    checkpoint = torch.load(grouped_runs["first"] / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 27 and checkpoint["TensorDataModule"] == {"minibatches_taken": 27}
    resumed, straight = read_summary(grouped_runs["resumed"]), read_summary(grouped_runs["straight"])
    assert resumed["status"] == "completed" and resumed["steps"] == straight["steps"] == 45
    for side in ("theta", "phi"):
        for name, value in straight[side].items():
            assert resumed[side][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (side, name)
    first, second = (state["state_dict"] for state in rank_states(grouped_runs["resumed"]))
    assert all(torch.equal(first[name], second[name]) for name in first)


RANDOM_GUIDE = [
    "guide=full",
    "optim.lr=0.05",
    "optim.scheduler=null",
    "trainer.log_every_n_steps=10",
    "checkpoint.every_n_steps=1000",
]


@pytest.fixture(scope="module")
def random_guide_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The full guide (a fresh draw every step, from each rank's own stream) with Adam on two
    processes: 40 steps straight, and 20 steps resumed to 40."""
    base = tmp_path_factory.mktemp("random_guide")
    first = train_ddp(base, "first", *RANDOM_GUIDE, "trainer.max_steps=20")
    return {
        "straight": train_ddp(base, "straight", *RANDOM_GUIDE, "trainer.max_steps=40"),
        "resumed": train_ddp(
            base, "resumed", *RANDOM_GUIDE, "trainer.max_steps=40", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"
        ),
    }


def test_a_resumed_ddp_run_with_a_random_guide_draws_what_a_straight_run_draws(
    random_guide_runs: dict[str, Path],
) -> None:
    """Each rank resumes its own random stream from the checkpoint: the resumed run's θ and φ are
    the straight run's. With rank 0's stream restored on both ranks, rank 1's draws after step 20
    differ and so do θ and φ."""
    resumed, straight = read_summary(random_guide_runs["resumed"]), read_summary(random_guide_runs["straight"])
    assert resumed["status"] == "completed" and resumed["steps"] == straight["steps"] == 40
    for side in ("theta", "phi"):
        assert straight[side]
        for name, value in straight[side].items():
            assert resumed[side][name] == pytest.approx(value, rel=1e-6, abs=1e-7), (side, name)
