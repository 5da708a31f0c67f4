"""A user's own model, defined outside the package, trained by ``train.py`` with no framework change."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import read_summary, run_train_py

USER_MODEL = '''
"""Counts with a Gamma prior on their Poisson rate: the user's model and its own guide."""
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from lightning_svi.config.table import TableSpec
from lightning_svi.core.svi_model import SVIModel


class PoissonGamma(SVIModel):
    name = "poisson_gamma"
    table = TableSpec(columns=("count",))

    def __init__(self, num_data, prior_shape=2.0, prior_rate=1.0):
        super().__init__(num_data)
        self.prior_shape, self.prior_rate = prior_shape, prior_rate

    @classmethod
    def synthetic_data(cls, seed, num_points=40):
        generator = torch.Generator().manual_seed(seed)
        return {"count": torch.poisson(torch.full((num_points,), 4.0), generator=generator)}

    def forward(self, batch):
        rate = pyro.sample("rate", dist.Gamma(self.prior_shape, self.prior_rate))
        with self.data_plate(batch):
            pyro.sample("count", dist.Poisson(rate), obs=batch["count"])

    def full_guide(self):
        return PoissonGammaGuide()

    def exact_posterior(self, data):
        return {"rate": dist.Gamma(self.prior_shape + data["count"].sum(), self.prior_rate + len(data["count"]))}


class PoissonGammaGuide(PyroModule):
    def __init__(self):
        super().__init__()
        self.q_shape = PyroParam(torch.tensor(1.0), constraint=constraints.positive)
        self.q_rate = PyroParam(torch.tensor(1.0), constraint=constraints.positive)

    def forward(self, batch):
        pyro.sample("rate", dist.Gamma(self.q_shape, self.q_rate))
'''


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A user's project: ``my_models/counts.py`` and ``my_conf/model/counts.yaml``, nothing in the package."""
    (tmp_path / "my_models").mkdir()
    (tmp_path / "my_models" / "__init__.py").write_text("")
    (tmp_path / "my_models" / "counts.py").write_text(textwrap.dedent(USER_MODEL))
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "counts.yaml").write_text(
        "_target_: my_models.counts.PoissonGamma\nprior_shape: 2.0\nprior_rate: 1.0\n"
    )
    return tmp_path


def check_run(run_dir: Path) -> None:
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["model"] == "poisson_gamma"
    assert set(summary["phi"]) == {"q_shape", "q_rate"} and summary["theta"] == {}
    posterior = summary["posterior"]["rate"]
    assert posterior["mean"] == pytest.approx(posterior["exact"]["mean"], rel=0.1)


@pytest.mark.slow
def test_own_model_through_a_config_folder_on_hydras_search_path(user_folder: Path) -> None:
    run_dir = user_folder / "run"
    result = run_train_py(
        f"hydra.searchpath=[file://{user_folder / 'my_conf'}]", "model=counts", "trainer.max_steps=300",
        f"hydra.run.dir={run_dir}", cwd=user_folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    check_run(run_dir)


@pytest.mark.slow
def test_own_model_by_its_target_alone(user_folder: Path) -> None:
    run_dir = user_folder / "run"
    result = run_train_py(
        "model=custom", "model._target_=my_models.counts.PoissonGamma", "+model.prior_shape=2.0",
        "trainer.max_steps=300", f"hydra.run.dir={run_dir}", cwd=user_folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    check_run(run_dir)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=custom"], "model._target_ is not set: give the dotted path of your Pyro model"),
        pytest.param(
            ["model=custom", "model._target_=my_models.nowhere.Model"], "my_models.nowhere.Model: cannot be imported",
            marks=pytest.mark.slow,  # as test_early_checks' no_such_package.Model
        ),
        pytest.param(
            ["model=custom", "model._target_=torch.nn.Linear"], "model._target_=torch.nn.Linear brings no data set",
            marks=pytest.mark.slow,  # as test_early_checks' textwrap.indent
        ),
    ],
)  # fmt: skip
def test_a_bad_model_target_exits_2_with_a_reason(user_folder: Path, overrides: list[str], message: str) -> None:
    result = run_train_py(*overrides, f"hydra.run.dir={user_folder / 'run'}", cwd=user_folder)
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_bad_data_file_of_a_users_model_is_refused_once_its_class_is_imported(user_folder: Path) -> None:
    # The table spec lives in the user's class, which imports torch: this check comes after the heavy imports.
    csv = user_folder / "counts.csv"
    csv.write_text("count\n3\n-1\n")
    result = run_train_py(
        "model=custom", "model._target_=my_models.counts.PoissonGamma", f"data.path={csv}",
        f"hydra.run.dir={user_folder / 'run'}", cwd=user_folder,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"data.path={csv}, line 3, column count: '-1' is not allowed" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
