"""evaluate.py: the guide diagnostics of a run from its checkpoint, without training (issue 16, item 6)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lightning_svi.checkpointing.atomic_io import CheckpointError
from lightning_svi.errors import ConfigError
from lightning_svi.training.evaluate import EVALUATION_FILE, evaluate, run_config
from tests.conftest import REPO, compose_config, read_summary

TRAINED = ("model=coin", "trainer.max_steps=50", "tensorboard.image_every_n_steps=null")


@pytest.fixture(scope="module")
def coin_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 50-step coin run (its guide is good: k̂ < 0.5), with the run config Hydra would have written."""
    from lightning_svi.training.run import train

    run_dir = tmp_path_factory.mktemp("coin") / "run"
    cfg = compose_config(*TRAINED)
    train(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir


def evaluate_run(run_dir: Path, output_dir: Path, *overrides: str) -> dict:
    """As ``python evaluate.py ckpt_path=RUN/checkpoints/last.ckpt OVERRIDES`` does, in this process."""
    cfg = run_config(run_dir, compose_config(*overrides).diagnostics, overrides)
    return evaluate(cfg, str(run_dir / "checkpoints" / "last.ckpt"), output_dir)


def test_evaluation_from_the_checkpoint_meets_the_runs_own_estimate(coin_run: Path, tmp_path: Path) -> None:
    summary_before = (coin_run / "summary.json").read_text()
    evaluation = evaluate_run(coin_run, tmp_path, "diagnostics.num_particles=4000")
    written = json.loads((tmp_path / EVALUATION_FILE).read_text())
    assert written["final"] == pytest.approx(evaluation["final"])
    run = read_summary(coin_run)
    assert written["step"] == run["steps"] == 50
    assert written["phi"] == run["phi"]  # φ is the checkpoint's, not the warm-up's fresh one
    assert written["diagnostics"]["num_particles"] == 4000 and written["diagnostics"]["reading"] == "good"
    ours, theirs = written["final"], run["final"]
    error = math.hypot(ours["iw_log_evidence_se"], theirs["iw_log_evidence_se"])
    assert abs(ours["iw_log_evidence"] - theirs["iw_log_evidence"]) < 4 * error
    assert abs(ours["iw_log_evidence"] - ours["log_evidence"]) < 4 * ours["iw_log_evidence_se"]  # the exact value
    assert ours["log_evidence"] == pytest.approx(theirs["log_evidence"])
    assert ours["iw_log_evidence_se"] < theirs["iw_log_evidence_se"]  # 4,000 draws against the run's 1,000
    assert (coin_run / "summary.json").read_text() == summary_before  # the run's own record is left as it was

    assert written["files"] == ["evaluation.json", "posterior.nc", "posterior.png"]
    import matplotlib.image
    import xarray

    with xarray.open_dataset(tmp_path / "posterior.nc", group="posterior", engine="h5netcdf") as posterior:
        assert list(posterior.data_vars) == ["fairness"] and posterior.sizes["draw"] == 500
    with xarray.open_dataset(tmp_path / "posterior.nc", group="importance_weights", engine="h5netcdf") as weights:
        assert weights.sizes["particle"] == 4000
    image = matplotlib.image.imread(tmp_path / "posterior.png")
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_a_nuts_reference_from_the_checkpoint(coin_run: Path, tmp_path: Path) -> None:
    overrides = ("diagnostics.reference=nuts", "diagnostics.reference_warmup=30", "diagnostics.reference_draws=30")
    evaluation = evaluate_run(coin_run, tmp_path, *overrides)
    reference = json.loads((tmp_path / EVALUATION_FILE).read_text())["reference"]
    assert reference["method"] == "nuts" and reference["draws"] == 30
    assert list(reference["sites"]) == ["fairness"] and reference["sites"]["fairness"]["distance"] >= 0
    assert "reference.png" in evaluation["files"] and (tmp_path / "reference.png").is_file()


def test_a_users_own_model_from_its_checkpoint(tmp_path: Path) -> None:
    """README's own-model example (plain Pyro functions, a data file): parameters made by the warm-up, then loaded."""
    from lightning_svi.training.run import train

    run_dir = tmp_path / "run"
    overrides = (
        "model=custom", "model._target_=examples.coin.model", "guide=custom", "guide._target_=examples.coin.guide",
        "data=file", f"data.path={REPO / 'examples' / 'flips.csv'}", "trainer.max_steps=50",
        "tensorboard.image_every_n_steps=null",
    )  # fmt: skip
    cfg = compose_config(*overrides)
    summary = train(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    evaluation = evaluate_run(run_dir, tmp_path / "out")
    assert evaluation["phi"] == summary["phi"] and set(evaluation["phi"]) == {"alpha_q", "beta_q"}
    assert evaluation["final"]["log_evidence"] is None  # no closed form: the IW estimate is the only one
    ours, theirs = evaluation["final"], summary["final"]
    error = math.hypot(ours["iw_log_evidence_se"], theirs["iw_log_evidence_se"])
    assert abs(ours["iw_log_evidence"] - theirs["iw_log_evidence"]) < 4 * error
    assert evaluation["diagnostics"]["reading"] == "good"


def test_a_damaged_checkpoint_is_refused(coin_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "copy"
    shutil.copytree(coin_run, run_dir)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    with zipfile.ZipFile(checkpoint) as archive:  # torch.save stores its members uncompressed
        member = max(archive.infolist(), key=lambda info: info.file_size)
    content = bytearray(checkpoint.read_bytes())
    start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    content[start + member.file_size // 2] ^= 0xFF  # one byte inside the largest member
    checkpoint.write_bytes(bytes(content))
    with pytest.raises(CheckpointError, match=r"ckpt_path=.*last.ckpt: corrupted; the CRC of"):
        evaluate_run(run_dir, tmp_path / "out")
    assert not (tmp_path / "out" / EVALUATION_FILE).exists()


def test_a_checkpoint_of_another_model_is_refused(coin_run: Path, tmp_path: Path) -> None:
    cfg = compose_config()  # beta_binomial, not the coin that wrote the checkpoint
    with pytest.raises(CheckpointError, match="refused; it was written for another model, guide or data set"):
        evaluate(cfg, str(coin_run / "checkpoints" / "last.ckpt"), tmp_path)


def test_a_checkpoint_trained_on_other_data_is_refused(coin_run: Path, tmp_path: Path) -> None:
    cfg = compose_config("model=coin", "data.synthetic={heads: 2, tails: 8}")  # the run flipped 6 heads, 4 tails
    with pytest.raises(CheckpointError, match="refused; it was trained on other data"):
        evaluate(cfg, str(coin_run / "checkpoints" / "last.ckpt"), tmp_path)
    assert not (tmp_path / EVALUATION_FILE).exists()


def test_diagnostics_keys_of_the_command_line_go_on_top_of_the_runs_own(tmp_path: Path) -> None:
    (tmp_path / ".hydra").mkdir()
    run = compose_config("diagnostics.num_particles=5000", "diagnostics.max_chunk=100")
    OmegaConf.save(run, tmp_path / ".hydra" / "config.yaml")
    given = compose_config("diagnostics.reference=nuts").diagnostics
    cfg = run_config(tmp_path, given, ["diagnostics.reference=nuts"])
    assert (cfg.diagnostics.num_particles, cfg.diagnostics.max_chunk, cfg.diagnostics.reference) == (5000, 100, "nuts")
    with pytest.raises(ConfigError, match=r"diagnostics.num_particles=1\b"):
        run_config(tmp_path, compose_config("diagnostics.num_particles=1").diagnostics, ["diagnostics.num_particles=1"])


def evaluate_py(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def refusals(run_dir: Path, loose: Path) -> list[tuple[list[str], str]]:
    checkpoint = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    return [
        ([f"ckpt_path={run_dir / 'nope.ckpt'}"], f"ckpt_path={run_dir / 'nope.ckpt'}: no such checkpoint file"),
        ([], "ckpt_path: missing; evaluate.py evaluates a run from its checkpoint"),
        (
            [f"ckpt_path={run_dir / 'summary.json'}"],
            "not a readable checkpoint (not the zip archive torch.save writes)",
        ),
        ([f"ckpt_path={loose}"], f"ckpt_path={loose}: no run config beside it (RUN/.hydra/config.yaml"),
        ([checkpoint, "diagnostics.num_particle=5"], "diagnostics.num_particle=5: evaluate.py takes ckpt_path="),
        ([checkpoint, "model=gmm"], "model=gmm: evaluate.py takes ckpt_path=, output_dir= and diagnostics.KEY="),
    ]


def test_evaluate_py_refuses_bad_input_in_one_line_with_exit_2(coin_run: Path, tmp_path: Path) -> None:
    loose = tmp_path / "last.ckpt"  # a checkpoint outside its run folder: no config to rebuild the run from
    shutil.copy(coin_run / "checkpoints" / "last.ckpt", loose)
    for args, message in refusals(coin_run, loose):
        result = evaluate_py(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lightning-svi: error: ") and message in lines[0], lines
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.ckpt"]  # no folder made for a refused command


@pytest.mark.slow
def test_evaluate_py_end_to_end(coin_run: Path, tmp_path: Path) -> None:
    """As a user types it: the run folder's config is read, not overwritten; files go to ``output_dir``."""
    config_before = (coin_run / ".hydra" / "config.yaml").read_text()
    result = evaluate_py(
        f"ckpt_path={coin_run / 'checkpoints' / 'last.ckpt'}",
        "diagnostics.num_particles=2000",
        f"output_dir={tmp_path / 'evaluated'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "IW log evidence" in result.stderr and "(2000 draws)" in result.stderr and "PSIS k̂" in result.stderr
    evaluation = json.loads((tmp_path / "evaluated" / EVALUATION_FILE).read_text())
    assert evaluation["diagnostics"]["num_particles"] == 2000
    assert {"posterior.nc", "posterior.png"} <= {path.name for path in (tmp_path / "evaluated").iterdir()}
    assert (coin_run / ".hydra" / "config.yaml").read_text() == config_before
    assert not (coin_run / ".hydra" / "overrides.yaml").exists()  # Hydra wrote nothing into .hydra/

    bad = evaluate_py(
        f"ckpt_path={coin_run / 'checkpoints' / 'last.ckpt'}", "diagnostics.num_particles=1", cwd=tmp_path
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        "lightning-svi: error: diagnostics.num_particles=1"
    ), bad.stderr[-2000:]
