"""``posterior.nc`` (``analysis/arviz_export.py``): ArviZ opens it and ``az.summary`` lists every latent site."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_svi.analysis.arviz_export import write_posterior_netcdf
from lightning_svi.analysis.importance import importance_estimate
from lightning_svi.analysis.posterior import Sites
from lightning_svi.models.eight_schools import EightSchools
from lightning_svi.models.gmm import GaussianMixture

pytestmark = pytest.mark.usefixtures("one_torch_thread", "module_local_params")


@pytest.fixture
def az():
    """ArviZ, an optional extra that the test extra installs."""
    return pytest.importorskip("arviz", reason="the arviz extra (part of the test extra): pip install -e .[test]")


def summary_sites(az, path: Path) -> set[str]:
    """The site names ``az.summary`` lists (``theta[3]`` is site ``theta``)."""
    return {label.split("[")[0] for label in az.summary(az.from_netcdf(str(path)), kind="stats").index}


def test_every_latent_site_its_predictive_the_data_and_the_weights_are_in_the_file(az, tmp_path: Path) -> None:
    data = {**EightSchools.synthetic_data(0), "index": torch.arange(8)}
    model = EightSchools(8, "non_centered")
    guide = model.full_guide()
    weights = importance_estimate(model, guide, data, num_particles=300).log_weights
    path = write_posterior_netcdf(model, guide, data, tmp_path / "posterior.nc", weights, num_draws=200)
    assert summary_sites(az, path) == set(Sites.of(model, guide, data).latent) == {"mu", "tau", "theta_raw"}
    inference = az.from_netcdf(str(path))
    assert inference.posterior["theta_raw"].shape == (1, 200, 8)
    assert inference.posterior_predictive["y"].shape == (1, 200, 8)
    assert inference.observed_data["y"].values.tolist() == data["y"].tolist()
    assert inference.importance_weights["log_weight"].values[0].tolist() == pytest.approx(weights.tolist())
    # The guide's draws, not the prior's: mu's guide is Normal(0, 1) at initialisation, its prior Normal(0, 5).
    assert float(inference.posterior["mu"].std()) == pytest.approx(1.0, abs=0.2)


def test_summed_out_sites_are_named_not_drawn(az, tmp_path: Path) -> None:
    data = {**GaussianMixture.synthetic_data(0, num_points=30), "index": torch.arange(30)}
    model = GaussianMixture(30)
    path = write_posterior_netcdf(model, model.full_guide(), data, tmp_path / "posterior.nc", num_draws=50)
    assert summary_sites(az, path) == {"weights", "locs", "scale"}
    assert az.from_netcdf(str(path)).attrs["summed_out"] == "assignment"


def test_a_run_writes_posterior_nc_that_arviz_summarises(az, train_in_process, tmp_path: Path) -> None:
    summary = train_in_process("trainer.max_steps=20", "tensorboard.image_every_n_steps=null")
    assert summary["status"] == "completed"
    path = tmp_path / "run" / "posterior.nc"
    assert summary_sites(az, path) == {"rate"}
    inference = az.from_netcdf(str(path))
    assert inference.posterior["rate"].shape[-1] == 50  # every group of the default data
    assert inference.importance_weights["log_weight"].shape == (1, 1000)


def test_without_arviz_the_run_says_posterior_nc_was_skipped(train_in_process, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("lightning_svi.logging.diagnostics.netcdf_available", lambda: False)
    with pytest.warns(UserWarning, match=r"posterior.nc skipped: ArviZ's file needs xarray and h5netcdf"):
        summary = train_in_process("trainer.max_steps=20", "tensorboard.image_every_n_steps=null")
    assert summary["status"] == "completed"
    assert not (tmp_path / "run" / "posterior.nc").exists()
