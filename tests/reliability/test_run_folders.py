"""Run folders that never mix two runs: a folder holding a run refuses a new one, a folder in use refuses a
second writer, a resumed run continues in its own folder, a run refused before training leaves no folder."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_svi.checkpointing.atomic_io import remove_stale_temporaries
from lightning_svi.config.launch_time import ID_ENV_VARIABLE, launch_id, run_folder_of
from lightning_svi.config.run_folder import LOCK_NAME
from tests.conftest import CONF_DIR, REPO, read_scalars, read_summary, run_train_py
from tests.reliability.processes import checkpoint_step

PRE_TORCH_SECONDS = 10  # a refusal before torch is imported: Hydra's start-up and one check (3 s unloaded)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-step run, trained in-process, as ``train.py`` leaves it (with Hydra's ``.hydra/``)."""
    from lightning_svi.training.run import train
    from tests.conftest import compose_config

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(
        compose_config("trainer.max_steps=20", "optim.scheduler=null", "tensorboard.image_every_n_steps=null"), run_dir
    )
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text("the first run's config\n")
    return run_dir


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(path.relative_to(run_dir)): path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}


def test_a_new_run_into_a_folder_holding_a_run_is_refused_and_changes_nothing(
    finished_run: Path, tmp_path: Path
) -> None:
    before = _snapshot(finished_run)
    started = time.monotonic()
    result = run_train_py("trainer.max_steps=30", f"hydra.run.dir={finished_run}", cwd=tmp_path)
    assert time.monotonic() - started < PRE_TORCH_SECONDS
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("lightning-svi: error:")]
    assert errors == [
        f"lightning-svi: error: hydra.run.dir={finished_run}: holds another run (checkpoints/last.ckpt); a new run "
        "would mix with it. Continue that run with resume=true, or give a new hydra.run.dir (or none: a new dated "
        "folder)."
    ]
    after = _snapshot(finished_run)
    after.pop(LOCK_NAME, None)
    assert after == before  # no last-v1.ckpt, the first run's .hydra/config.yaml and summary untouched
    # The documented resume still resumes the first run: its step, its θ.
    assert checkpoint_step(finished_run / "checkpoints" / "last.ckpt") == 20


def test_a_second_writer_to_a_folder_in_use_is_refused_before_hydra_writes_into_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / LOCK_NAME, "a+") as lock:  # what a live run holds
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("process 4242\n")
        lock.flush()
        result = run_train_py(f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"lightning-svi: error: hydra.run.dir={run_dir}: in use by another run (process 4242)" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in run_dir.iterdir()) == [LOCK_NAME]  # no .hydra/ of the second run


def test_resume_true_needs_a_checkpoint_in_the_run_folder(tmp_path: Path) -> None:
    result = run_train_py("resume=true", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert f"lightning-svi: error: resume=true: hydra.run.dir={tmp_path / 'run'} holds no checkpoints/last.ckpt" in (
        result.stderr
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=0"], "optim.lr=0: must be a number > 0"),
        (["+trainer.foo=1"], "trainer.foo: not an argument of pytorch_lightning.Trainer"),
        (
            ["+trainer.max_step=5"],
            "trainer.max_step: not an argument of pytorch_lightning.Trainer; did you mean max_steps",
        ),
    ],
    ids=["bad-value", "unknown-trainer-key", "misspelt-trainer-key"],
)
def test_a_config_refused_before_training_leaves_no_run_folder(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    started = time.monotonic()
    result = run_train_py(*overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert time.monotonic() - started < PRE_TORCH_SECONDS
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("lightning-svi: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_trainer_keys_listed_for_the_pre_torch_check_are_the_trainers_arguments() -> None:
    import inspect

    import pytorch_lightning as pl

    from lightning_svi.config.trainer_keys import TRAINER_ARGUMENTS

    assert tuple(inspect.signature(pl.Trainer.__init__).parameters)[1:] == TRAINER_ARGUMENTS


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "trainer=gpu",
            "trainer.accelerator=gpu: this machine has no gpu that torch can use; train here with trainer=cpu",
        ),
        (
            "+trainer.precision=abc",
            "trainer.precision='abc': refused by pytorch_lightning.Trainer (ValueError: Precision",
        ),
    ],
    ids=["no-gpu", "bad-precision"],
)
def test_a_trainer_that_cannot_be_built_here_exits_2_with_a_failed_summary(
    tmp_path: Path, override: str, message: str
) -> None:
    if override == "trainer=gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run_dir = tmp_path / "run"
    result = run_train_py(override, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("lightning-svi: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"lightning-svi: error: {message}"), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    summary = read_summary(run_dir)
    assert summary["status"] == "failed" and summary["error"] == errors[0].removeprefix("lightning-svi: error: ")


def test_resolvers_name_a_resumed_runs_own_folder_and_a_new_run_a_folder_of_its_own(
    finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_folder_of(str(finished_run / "checkpoints" / "last.ckpt"), "outputs/new") == str(finished_run)
    assert run_folder_of(None, "outputs/new") == "outputs/new"
    loose = tmp_path / "last.ckpt"  # a checkpoint outside a run folder: the run gets a new folder
    assert run_folder_of(str(loose), "outputs/new") == "outputs/new"
    # One id per launch, inherited by the ranks it starts; another launch (the same second) draws another.
    monkeypatch.delenv(ID_ENV_VARIABLE, raising=False)  # restored (removed) after the test
    assert launch_id() == os.environ[ID_ENV_VARIABLE] == launch_id()
    env = {key: value for key, value in os.environ.items() if key != ID_ENV_VARIABLE}
    program = "from lightning_svi.config.launch_time import launch_id; print(launch_id())"
    ids = {
        subprocess.run([sys.executable, "-c", program], env=env, cwd=REPO, capture_output=True, text=True).stdout
        for _ in range(3)
    }
    assert len(ids) == 3
    assert "${launch_id:}" in (CONF_DIR / "config.yaml").read_text().split("hydra:")[1].split("sweep:")[0]


def test_stale_temporary_checkpoints_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".last.ckpt.{dead.pid}.tmp"
    live = tmp_path / f".last.ckpt.{os.getppid()}.tmp"  # a writer that is still running
    for path in (stale, live):
        path.write_bytes(b"PK half a checkpoint")
    (tmp_path / "last.ckpt").write_bytes(b"kept")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([live.name, "last.ckpt"])


@pytest.mark.slow
def test_resume_true_continues_in_the_same_folder_and_the_same_tensorboard_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    common = ("optim.scheduler=null", "trainer.log_every_n_steps=5", f"hydra.run.dir={run_dir}")
    first = run_train_py("trainer.max_steps=30", *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run_train_py("trainer.max_steps=60", "resume=true", *common, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_summary(run_dir)["steps"] == 60
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    # One event directory, one continuous curve: the first step, then 5, 10, ..., 60, each step once.
    assert [path.name for path in run_dir.iterdir() if path.name.startswith("tensorboard")] == ["tensorboard"]
    assert [step for step, _ in read_scalars(run_dir)["train/loss"]] == [1, *range(5, 61, 5)]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 60


@pytest.mark.slow
def test_two_runs_started_together_get_folders_of_their_own_and_ckpt_path_continues_in_place(tmp_path: Path) -> None:
    """``for s in 0 1; do python train.py & done`` with the same overrides: the same second, two folders."""
    command = [sys.executable, str(REPO / "train.py"), "progress_bar_refresh_rate=0", "trainer.max_steps=5"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIGHTNING_SVI_LAUNCH")}
    processes = [subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for _ in "01"]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()[-3000:]
    folders = sorted(path.parent for path in (tmp_path / "outputs").rglob("summary.json"))
    assert len(folders) == 2 and all(read_summary(folder)["steps"] == 5 for folder in folders)

    checkpoint = folders[0] / "checkpoints" / "last.ckpt"
    # Quoted: the folder's name holds the overrides (a=b,c=d), which Hydra's grammar reads as more overrides.
    result = run_train_py(f"ckpt_path='{checkpoint}'", "trainer.max_steps=10", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.parent for path in (tmp_path / "outputs").rglob("summary.json")) == folders
    assert read_summary(folders[0])["steps"] == 10 and read_summary(folders[1])["steps"] == 5
