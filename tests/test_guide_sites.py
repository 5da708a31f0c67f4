"""φ grouped by the latent site it shapes, found from one trace of the guide, for every guide kind."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import autoguide
from pyro.nn import PyroModule

from lightning_svi.analysis.guide_sites import UNATTACHED, parameters_by_site
from lightning_svi.models.beta_binomial import BetaBinomial
from tests.conftest import guide_of_kind


def grouped(guide: PyroModule, batch: dict) -> dict[str, set[str]]:
    guide(batch)  # autoguides create their parameters on the first call
    return {site: set(names) for site, names in parameters_by_site(guide, batch).items()}


@pytest.fixture
def beta_binomial() -> tuple[BetaBinomial, dict[str, torch.Tensor]]:
    pyro.settings.set(module_local_params=True)
    pyro.set_rng_seed(0)
    return BetaBinomial(num_data=6), {"index": torch.arange(6), **BetaBinomial.synthetic_data(0, num_groups=6)}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("full", {"rate": {"qa", "qb"}}),
        ("normal", {"rate": {"locs.rate", "scales.rate"}}),
        ("delta", {"rate": {"rate"}}),
        ("diag_normal", {"rate": {"loc", "scale"}}),
        ("lowrank", {"rate": {"loc", "scale", "cov_factor"}}),
        ("empty", {}),
    ],
)
def test_beta_binomial_guides_group_phi_under_rate(beta_binomial: tuple, kind: str, expected: dict) -> None:
    model, batch = beta_binomial
    assert grouped(guide_of_kind(kind, model), batch) == expected


class TwoLevels(PyroModule):
    """mu ~ Normal(0, 1); theta_i ~ Normal(mu, 1); y_i ~ Normal(theta_i, 1): two latent sites."""

    def forward(self, batch: dict) -> None:
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(batch["y"])):
            theta = pyro.sample("theta", dist.Normal(mu, 1.0))
            pyro.sample("y", dist.Normal(theta, 1.0), obs=batch["y"])


class HalfUsedGuide(PyroModule):
    """A guide with one parameter that shapes no site at all."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(()))
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, batch: dict) -> None:
        pyro.sample("mu", dist.Normal(self.loc, 1.0))


def test_per_site_guides_separate_sites_and_joint_guides_name_all_they_shape() -> None:
    pyro.settings.set(module_local_params=True)
    batch = {"y": torch.tensor([0.5, -1.0, 2.0])}
    assert grouped(autoguide.AutoNormal(TwoLevels()), batch) == {
        "mu": {"locs.mu", "scales.mu"},
        "theta": {"locs.theta", "scales.theta"},
    }
    assert grouped(autoguide.AutoDiagonalNormal(TwoLevels()), batch) == {"mu, theta": {"loc", "scale"}}
    assert grouped(HalfUsedGuide(), batch) == {"mu": {"loc"}, UNATTACHED: {"unused"}}
