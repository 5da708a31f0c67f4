"""The NUTS reference (``analysis/reference.py``): the guide's moments against NUTS's at the fitted θ."""

from __future__ import annotations

from pathlib import Path

import pyro
import pytest
import torch
from pyro.distributions import constraints
from torch.distributions import transform_to

from lightning_svi.analysis.reference import TooLarge, nuts_reference, reference_figure
from lightning_svi.models.beta_binomial import BetaBinomial
from lightning_svi.models.coin import Coin
from tests.conftest import read_events

pytestmark = pytest.mark.usefixtures("one_torch_thread", "module_local_params")


def coin_guide(model: Coin, heads: float, tails: float) -> torch.nn.Module:
    guide = model.full_guide()
    with torch.no_grad():
        guide.qa_unconstrained.copy_(transform_to(constraints.positive).inv(torch.tensor(heads)))
        guide.qb_unconstrained.copy_(transform_to(constraints.positive).inv(torch.tensor(tails)))
    return guide


def test_nuts_agrees_with_the_exact_posterior_and_tells_a_bad_guide_from_a_good_one() -> None:
    data = {**Coin.synthetic_data(0), "index": torch.arange(10)}
    model = Coin(10)
    pyro.set_rng_seed(0)
    # The exact posterior. 1,000 draws: the NUTS mean's Monte Carlo error is then about 0.005, a quarter of
    # the tolerance; with 200 it was about 0.01, and seed 0's chain missed by 0.027 on another CPU's rounding.
    good = nuts_reference(model, coin_guide(model, 16.0, 14.0), data, warmup=100, draws=1000)
    exact = model.exact_posterior(data)["fairness"]
    nuts = good["sites"]["fairness"]["nuts"]
    assert float(nuts["mean"]) == pytest.approx(float(exact.mean), abs=0.02)
    assert float(nuts["sd"]) == pytest.approx(float(exact.stddev), abs=0.02)
    assert good["sites"]["fairness"]["distance"] < 0.4
    assert (good["method"], good["warmup"], good["draws"]) == ("nuts", 100, 1000)
    # Far too wide: Beta(1, 1) against the posterior's Beta(16, 14) is 2.25 posterior sds away in closed form
    # (Beta(2, 2), 1.54 sds, sat too near the bound for 100 draws: 1.48 on an AMD EPYC).
    bad = nuts_reference(model, coin_guide(model, 1.0, 1.0), data, warmup=30, draws=100)
    assert bad["sites"]["fairness"]["distance"] > 1.5
    figure = reference_figure(bad)
    assert "fairness" in figure.axes[0].get_title()


def test_a_model_with_many_latents_gets_no_reference() -> None:
    data = {**BetaBinomial.synthetic_data(0), "index": torch.arange(50)}
    model = BetaBinomial(50)
    with pytest.raises(TooLarge, match="50 latent elements"):
        nuts_reference(model, model.full_guide(), data, max_elements=10)


@pytest.mark.slow
def test_a_run_with_reference_nuts_reports_it_per_site_and_draws_it(train_in_process, tmp_path: Path) -> None:
    summary = train_in_process(
        "model=eight_schools",
        "trainer.max_steps=500",
        "tensorboard.image_every_n_steps=null",
        "diagnostics.reference=nuts",
        "diagnostics.reference_warmup=100",
        "diagnostics.reference_draws=100",
    )
    reference = summary["reference"]
    assert (reference["method"], reference["warmup"], reference["draws"]) == ("nuts", 100, 100)
    assert set(reference["sites"]) == {"mu", "tau", "theta_raw"}
    for entry in reference["sites"].values():
        assert {"guide", "nuts", "distance"} <= set(entry) and entry["distance"] >= 0
    assert len(reference["sites"]["theta_raw"]["nuts"]["mean"]) == 8
    assert "diagnostics/reference" in read_events(tmp_path / "run").Tags()["images"]
