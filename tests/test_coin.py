"""The coin of Pyro's SVI tutorial: closed forms, and a run whose guide recovers Beta(16, 14)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from scipy import integrate, special, stats

from lightning_svi.models.coin import Coin
from tests.conftest import read_scalars

DATA = Coin.synthetic_data(seed=0)
EXACT_MEAN, EXACT_SD = 16 / 30, math.sqrt(16 * 14 / (30**2 * 31))


def test_embedded_data_is_six_heads_and_four_tails() -> None:
    assert DATA["flip"].tolist() == [1.0] * 6 + [0.0] * 4


def test_exact_posterior_is_beta_16_14() -> None:
    posterior = Coin(num_data=10).exact_posterior(DATA)["fairness"]
    assert posterior.concentration1.item() == 16 and posterior.concentration0.item() == 14
    assert posterior.mean.item() == pytest.approx(0.5333, abs=1e-4)
    assert posterior.stddev.item() == pytest.approx(0.0896, abs=1e-4)


def test_log_evidence_matches_numerical_integration_over_the_fairness() -> None:
    def joint(f: float) -> float:
        return stats.beta(10, 10).pdf(f) * f**6 * (1 - f) ** 4

    evidence, _ = integrate.quad(joint, 0, 1)
    log_evidence = Coin(num_data=10).log_evidence(DATA).item()
    assert log_evidence == pytest.approx(math.log(evidence), rel=1e-6)
    assert log_evidence == pytest.approx(special.betaln(16, 14) - special.betaln(10, 10), rel=1e-6)


def test_an_empty_guide_is_refused_because_nothing_would_train(train_in_process) -> None:
    from lightning_svi.errors import ConfigError

    with pytest.raises(ConfigError, match="guide=empty with model=coin: nothing to train"):
        train_in_process("model=coin", "guide=empty", "trainer.max_steps=5")


@pytest.mark.slow
def test_full_guide_recovers_the_posterior_and_the_gap_shrinks(train_in_process, tmp_path: Path) -> None:
    summary = train_in_process("model=coin", "trainer.max_steps=1500", "elbo.num_particles=32")
    assert summary["theta"] == {}
    qa, qb = summary["phi"]["qa"], summary["phi"]["qb"]
    mean, sd = qa / (qa + qb), math.sqrt(qa * qb / ((qa + qb) ** 2 * (qa + qb + 1)))
    assert mean == pytest.approx(EXACT_MEAN, abs=0.01)
    assert sd == pytest.approx(EXACT_SD, abs=0.005)
    posterior = summary["posterior"]["fairness"]
    assert posterior["exact"]["mean"] == pytest.approx(EXACT_MEAN, rel=1e-5)
    assert posterior["exact"]["sd"] == pytest.approx(EXACT_SD, rel=1e-5)
    assert posterior["mean"] == pytest.approx(EXACT_MEAN, abs=0.015)
    assert posterior["q05"] == pytest.approx(posterior["exact"]["q05"], abs=0.02)
    assert posterior["q95"] == pytest.approx(posterior["exact"]["q95"], abs=0.02)
    # Posterior predictive check: 6 heads in 10 is what the fitted model expects, not an outlier.
    check = summary["posterior"]["flip"]["check"]["mean"]
    assert check["observed"] == pytest.approx(0.6)
    assert check["replicated_mean"] == pytest.approx(EXACT_MEAN, abs=0.02)
    assert 0.2 < check["p_value"] < 0.6

    scalars = read_scalars(tmp_path / "run")
    gap = [value for _, value in scalars["evidence/gap"]]
    start = torch.distributions.kl_divergence(
        torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0)),
        torch.distributions.Beta(torch.tensor(16.0), torch.tensor(14.0)),
    ).item()
    assert gap[0] == pytest.approx(start, rel=0.3)  # q starts at Beta(1, 1): gap = KL(q ‖ posterior)
    assert abs(sum(gap[-20:]) / 20) < 0.03
    # No θ, yet log p rises: φ moves the guide's samples to where p(x, f) is high.
    log_p = [value for _, value in scalars["trace/log_p"]]
    assert sum(log_p[-20:]) / 20 > sum(log_p[:5]) / 5
    assert torch.isfinite(torch.tensor(log_p)).all()
