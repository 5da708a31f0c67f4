"""Sweeps with Hydra's launchers and the Optuna sweeper, run for real (few steps), and compare_runs."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from tests.conftest import CONF_DIR, REPO, read_summary, run_train_py

TINY = ["trainer.max_steps=10", "trainer.log_every_n_steps=5"]


def job_folders(sweep_dir: Path) -> list[Path]:
    return sorted((path for path in sweep_dir.iterdir() if (path / "summary.json").is_file()), key=lambda p: p.name)


def compare_runs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "compare_runs.py"), *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``-m guide=full,empty,delta seed=0,1,2`` with the basic launcher: nine jobs in one process."""
    base = tmp_path_factory.mktemp("basic")
    sweep_dir = base / "sweep"
    result = run_train_py("guide=full,empty,delta", "seed=0,1,2", *TINY, f"hydra.sweep.dir={sweep_dir}", "-m", cwd=base)
    assert result.returncode == 0, result.stderr[-4000:]
    return sweep_dir


@pytest.mark.slow
def test_basic_launcher_writes_one_folder_and_summary_per_job(basic_sweep: Path) -> None:
    folders = job_folders(basic_sweep)
    assert len(folders) == 9
    seen = set()
    for folder in folders:
        summary = read_summary(folder)
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        assert summary["status"] == "completed" and summary["steps"] == 10
        assert f"guide={summary['guide']}" in overrides and f"seed={summary['seed']}" in overrides
        assert (folder / "tensorboard").is_dir() and (folder / "checkpoints" / "last.ckpt").is_file()
        seen.add((summary["guide"], summary["seed"]))
    assert seen == {(guide, seed) for guide in ("full", "empty", "delta") for seed in (0, 1, 2)}


@pytest.mark.slow
def test_no_state_leaks_from_one_job_to_the_next(basic_sweep: Path, tmp_path: Path) -> None:
    """The last job of the sweep ran after eight others in the same process; alone in a fresh
    process it gives the same numbers, bit for bit."""
    last = next(folder for folder in job_folders(basic_sweep) if folder.name.startswith("8-"))
    swept = read_summary(last)
    assert (swept["guide"], swept["seed"]) == ("delta", 2)
    result = run_train_py("guide=delta", "seed=2", *TINY, f"hydra.run.dir={tmp_path / 'alone'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    alone = read_summary(tmp_path / "alone")
    assert alone["theta"] == swept["theta"]
    assert alone["phi"] == swept["phi"]
    assert alone["final"] == swept["final"]


@pytest.mark.slow
def test_compare_runs_tables_every_job_and_plots_their_elbo(basic_sweep: Path, tmp_path: Path) -> None:
    plot = tmp_path / "curves.png"
    result = compare_runs(str(basic_sweep), "--type2-mle", "--plot", str(plot))
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.startswith("| ")][2:]  # past header and rule
    assert rows[0].startswith("| exact type-II MLE") and "alpha=2.909, beta=6.853" in rows[0]
    assert len(rows) == 1 + 9
    for folder in job_folders(basic_sweep):
        summary = read_summary(folder)
        row = next(row for row in rows if f"guide={summary['guide']} seed={summary['seed']}" in row)
        assert f"alpha={summary['theta']['alpha']:.3f}" in row
        assert f"{summary['final']['elbo']:.2f}" in row and f"{summary['final']['gap']:.2f}" in row
        assert " of MLE)" in row
        final, khat = summary["final"], summary["diagnostics"].get("psis_khat")
        iw_cells = [cell.strip() for cell in row.strip(" |").split(" | ")][5:8]  # IW log p_θ(x), IW gap, k̂
        if summary["guide"] == "delta":  # a point mass: no estimate, and the note under the table says why
            assert final["iw_log_evidence"] is None and iw_cells == ["—", "—", "—"]
            note = next(line for line in lines if f"guide=delta seed={summary['seed']} " in line and "|" not in line)
            assert ": no IW estimate: the guide is a point mass" in note
        else:
            assert iw_cells == [
                f"{final['iw_log_evidence']:.2f} ± {final['iw_log_evidence_se']:.2f}",
                f"{final['iw_gap']:.2f} ± {final['iw_gap_se']:.2f}",
                "∞" if khat is None else f"{khat:.2f}",
            ]
    import matplotlib.image

    image = matplotlib.image.imread(plot)
    assert image.shape[0] > 100 and image.shape[1] > 100


def write_job(folder: Path, guide: str, final: dict, diagnostics: dict) -> None:
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text(f"- model=gmm\n- guide={guide}\n")
    summary = {"status": "completed", "theta": {"scale": 1.5}, "final": final, "diagnostics": diagnostics}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_compare_runs_has_the_importance_weighted_evidence_of_any_model(tmp_path: Path) -> None:
    """A model without a closed form (the GMM): the IW columns tell which guide's ELBO meets the evidence."""
    from scripts.compare_runs import estimate_notes, find_jobs, format_table, table_rows

    estimate = {"iw_log_evidence": -401.234, "iw_log_evidence_se": 0.0412, "iw_gap": 0.318, "iw_gap_se": 0.05}
    write_job(
        tmp_path / "0-full",
        "full",
        {"elbo": -401.55, "log_evidence": None, **estimate},
        {"num_particles": 1000, "psis_khat": 0.271, "reading": "good"},
    )
    write_job(
        tmp_path / "1-normal",
        "normal",
        {"elbo": -409.0, "iw_log_evidence": -405.5, "iw_log_evidence_se": 1.25, "iw_gap": 3.5, "iw_gap_se": 1.3},
        {"num_particles": 1000, "psis_khat": None, "note": "psis_khat is infinite"},
    )
    write_job(
        tmp_path / "2-delta",
        "delta",
        {"elbo": -398.0, "iw_log_evidence": None},
        {"skipped": "the guide is a point mass at locs (e.g. guide=delta)"},
    )
    jobs = find_jobs(tmp_path)
    rows = table_rows(jobs, with_type2_mle=False)
    header, full, normal, delta = rows
    assert header[5:8] == ["IW log p_θ(x)", "IW gap", "k̂"]
    assert full[0] == "model=gmm guide=full" and full[3:8] == ["—", "—", "-401.23 ± 0.04", "0.32 ± 0.05", "0.27"]
    assert normal[5:8] == ["-405.50 ± 1.25", "3.50 ± 1.30", "∞"]
    assert delta[5:8] == ["—", "—", "—"]
    assert estimate_notes(jobs) == [
        "model=gmm guide=delta: no IW estimate: the guide is a point mass at locs (e.g. guide=delta)"
    ]
    shown = ["".join(c for c in line if not unicodedata.combining(c)) for line in format_table(rows).splitlines()]
    bars = {tuple(index for index, character in enumerate(line) if character == "|") for line in shown}
    assert len(bars) == 1  # the columns line up as shown, the hat of k̂ taking no column


def test_compare_runs_without_jobs_exits_2(tmp_path: Path) -> None:
    result = compare_runs(str(tmp_path))
    assert result.returncode == 2
    assert f"no job with a summary.json under {tmp_path}" in result.stderr


# submitit_local (SLURM's plugin) stays fast; joblib runs in the slow suite.
@pytest.mark.parametrize("launcher", [pytest.param("joblib", marks=pytest.mark.slow), "submitit_local"])
def test_parallel_launchers_run_for_real(tmp_path: Path, launcher: str) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_train_py(
        f"hydra/launcher={launcher}", "guide=full,empty", *TINY, f"hydra.sweep.dir={sweep_dir}", "-m", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summaries = [read_summary(folder) for folder in job_folders(sweep_dir)]
    assert sorted(summary["guide"] for summary in summaries) == ["empty", "full"]
    assert all(summary["status"] == "completed" and summary["steps"] == 10 for summary in summaries)
    if launcher == "submitit_local":
        assert (sweep_dir / ".submitit").is_dir()  # the jobs really went through submitit


OBJECTIVES = [
    pytest.param([], "final", "elbo", max, id="final-elbo"),
    pytest.param(
        ["optimized_metric=final.gap", "hydra.sweeper.direction=minimize"], "final", "gap", min,
        id="final-gap", marks=pytest.mark.slow,
    ),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "section", "key", "best"), OBJECTIVES)
def test_optuna_search_optimises_the_optimized_metric(
    tmp_path: Path, overrides: list[str], section: str, key: str, best: Callable
) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_train_py(
        "hparams_search=optuna", "hydra.sweeper.n_trials=3", *overrides, *TINY, f"hydra.sweep.dir={sweep_dir}", "-m",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "setup plugin" not in result.stdout + result.stderr  # alembic's plugin list, imported by optuna
    summaries = [read_summary(folder) for folder in job_folders(sweep_dir)]
    assert len(summaries) == 3
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(best(summary[section][key] for summary in summaries))
    assert set(results["best_params"]) == {"optim.lr", "elbo.num_particles"}
    assert 0.005 <= results["best_params"]["optim.lr"] <= 0.5


def compose_with_hydra(*overrides: str):
    """The config with Hydra's own node, as ``train.py`` composes it (its resolver registered)."""
    from lightning_svi.config.launch_time import register_resolver

    register_resolver()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_slurm_preset_gives_one_task_per_device() -> None:
    cfg = compose_with_hydra("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert launcher.partition == "gpu" and launcher.timeout_min == 120
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.accelerator == "gpu"


def test_slurm_preset_prints_with_cfg_hydra(tmp_path: Path) -> None:
    result = run_train_py("hydra/launcher=slurm", "trainer=ddp", "--cfg", "hydra", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    launcher = yaml.safe_load(result.stdout)["hydra"]["launcher"]
    follows = "${oc.select:trainer.devices,1}"
    assert launcher["tasks_per_node"] == follows and launcher["gpus_per_node"] == follows
    assert launcher["partition"] == "gpu"


@pytest.mark.parametrize("part", ["hydra", "job", "all"])
def test_cfg_resolve_prints_every_part_of_the_config(tmp_path: Path, part: str) -> None:
    """``--cfg hydra --resolve`` prints Hydra's node alone: its keys that follow the job's config resolve too."""
    result = run_train_py("hydra/launcher=slurm", "trainer=ddp", "tags=[a,b]", "--cfg", part, "--resolve", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    printed = yaml.safe_load(result.stdout)
    if part != "job":
        assert printed["hydra"]["launcher"]["tasks_per_node"] >= 1
    if part != "hydra":
        assert printed["tags"] == ["a", "b"] and printed["trainer"]["devices"] == 2
    if part == "all":
        assert printed["hydra"]["launcher"]["tasks_per_node"] == 2
        assert "-a-b/" in printed["hydra"]["run"]["dir"]


def test_forum_experiment_sweeps_full_and_empty_guides() -> None:
    cfg = compose_with_hydra("experiment=forum_guides")
    assert cfg.hydra.sweeper.params == {"guide": "full,empty"}
    assert cfg.model._target_.endswith("BetaBinomial") and cfg.trainer.max_steps == 3000
    assert cfg.hydra.sweep.dir.startswith("multirun/forum_guides/")
