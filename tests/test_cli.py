"""``train.py`` as a user runs it: a subprocess in a fresh folder."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.conftest import imported_modules, read_scalars, read_summary, run_train_py


@pytest.mark.slow  # train.py's run folder and resume stay fast in test_first_hour
def test_train_py_writes_the_run_folder_and_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_train_py(
        "model=beta_binomial", "guide=full", "trainer.max_steps=40", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["steps"] == 40
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    scalars = read_scalars(run_dir)
    for tag in ("train/loss", "train/elbo", "trace/log_p", "trace/log_q", "theta/alpha", "evidence/gap"):
        assert scalars[tag] and all(math.isfinite(value) for _, value in scalars[tag])

    resumed_dir = tmp_path / "resumed"
    result = run_train_py(
        "trainer.max_steps=60", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={resumed_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_summary(resumed_dir)["steps"] == 60


def test_csv_data_path_is_used(tmp_path: Path) -> None:
    csv = tmp_path / "my_counts.csv"
    csv.write_text("successes,trials\n3,10\n5,12\n0,8\n9,9\n")
    run_dir = tmp_path / "run"
    result = run_train_py(f"data.path={csv}", "trainer.max_steps=10", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_summary(run_dir)["phi"]["qa"]) == 4


BAD_CONFIGS = [
    (["optim.lr=0"], "optim.lr=0: must be a number > 0"),
    (["optim.lr=-0.1"], "optim.lr=-0.1: must be a number > 0"),
    (["optim.theta_lr=-1"], "optim.theta_lr=-1: must be a number > 0 or null"),
    (["elbo.num_particles=0"], "elbo.num_particles=0: must be an integer >= 1"),
    (["elbo._target_=magic.Magic_ELBO"], "elbo._target_=magic.Magic_ELBO: cannot be imported (No module named"),
    (["trainer.max_steps=0"], "trainer.max_steps=0: must be an integer >= 1"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_CONFIGS, ids=[o[0] for o, _ in BAD_CONFIGS])
def test_bad_config_exits_2_with_a_one_line_reason(tmp_path: Path, overrides: list[str], message: str) -> None:
    result = run_train_py(*overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, importtime=True)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "torch" not in imported_modules(result.stderr)
    assert not (tmp_path / "run" / "summary.json").exists()


BAD_FILES = [
    (None, "no such file"),
    ("", "the file is empty"),
    ("successes,n\n1,2\n", "missing column(s) trials"),
    ("successes,trials\n1.5,3\n", "line 2, column successes: '1.5' is not allowed"),
    ("successes,trials\n-2,3\n", "line 2, column successes: '-2' is not allowed"),
    ("successes,trials\n4,3\n", "line 2: successes=4, trials=3 violates successes <= trials"),
]


@pytest.mark.parametrize(("content", "message"), BAD_FILES, ids=[m for _, m in BAD_FILES])
def test_bad_csv_exits_2_before_torch_is_imported(tmp_path: Path, content: str | None, message: str) -> None:
    csv = tmp_path / "counts.csv"
    if content is not None:
        csv.write_text(content)
    result = run_train_py(f"data.path={csv}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, importtime=True)
    assert result.returncode == 2
    assert message in result.stderr
    assert f"data.path={csv}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "torch" not in imported_modules(result.stderr)
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_unknown_group_option_keeps_hydras_list_of_choices(tmp_path: Path) -> None:
    result = run_train_py("guide=fancy", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 1
    assert "Could not find 'guide/fancy'" in result.stderr
    assert "Available options in 'guide':" in result.stderr and "empty" in result.stderr
