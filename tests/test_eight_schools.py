"""Eight schools: the two parameterizations are one model; the evidence against 2-D quadrature;
the mean-field guide fits the non-centred posterior far better than the centred funnel."""

from __future__ import annotations

import math
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from scipy import integrate

from lightning_svi.errors import ConfigError
from lightning_svi.models.eight_schools import EFFECTS, STANDARD_ERRORS, EightSchools

DATA = EightSchools.synthetic_data(seed=0)
BATCH = {"index": torch.arange(8), **DATA}


def test_log_evidence_matches_quadrature_over_mu_and_tau() -> None:
    offset = 31.0  # p(y) ≈ e^-31: integrate e^31 p(μ, τ, y) so that quad's tolerances mean something

    def normal_logpdf(x: float, loc: float, scale: float) -> float:
        return -0.5 * ((x - loc) / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)

    def joint(mu: float, tau: float) -> float:
        log_prior = normal_logpdf(mu, 0, 5) + math.log(2 / (5 * math.pi)) - math.log1p((tau / 5) ** 2)
        marginal_scales = [math.sqrt(sigma**2 + tau**2) for sigma in STANDARD_ERRORS]
        log_likelihood = sum(normal_logpdf(y, mu, s) for y, s in zip(EFFECTS, marginal_scales, strict=True))
        return math.exp(log_prior + log_likelihood + offset)

    scaled_evidence, _ = integrate.dblquad(joint, 0, 200, -40, 50, epsrel=1e-5)
    expected = math.log(scaled_evidence) - offset
    assert EightSchools(8).log_evidence(DATA).item() == pytest.approx(expected, abs=2e-3)


def test_parameterizations_have_their_own_sites_and_the_same_joint_density() -> None:
    pyro.set_rng_seed(0)
    centered, non_centered = EightSchools(8, "centered"), EightSchools(8, "non_centered")
    trace = poutine.trace(non_centered).get_trace(BATCH)
    assert "theta_raw" in trace.nodes and trace.nodes["theta"]["type"] == "sample"  # deterministic site
    mu, tau, theta = (trace.nodes[name]["value"] for name in ("mu", "tau", "theta"))
    replayed = poutine.trace(poutine.condition(centered, {"mu": mu, "tau": tau, "theta": theta})).get_trace(BATCH)
    # log p(μ, τ, θ, y) of the centred model = that of the non-centred one + the Jacobian log τ per school.
    non_centered_log_p = sum(trace.nodes[name]["fn"].log_prob(trace.nodes[name]["value"]).sum()
                             for name in ("mu", "tau", "theta_raw", "y"))  # fmt: skip
    assert replayed.log_prob_sum().item() == pytest.approx((non_centered_log_p - 8 * tau.log()).item(), rel=1e-5)


def test_an_unknown_parameterization_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.parameterization='funnel': unknown; allowed values are centered"):
        EightSchools(8, "funnel")


@pytest.mark.slow
def test_mean_field_fits_the_non_centred_posterior_better(train_in_process, tmp_path: Path) -> None:
    gaps = {}
    for parameterization in ("non_centered", "centered"):
        summary = train_in_process(
            "model=eight_schools", f"model.parameterization={parameterization}", "trainer.max_steps=800",
            run_dir=tmp_path / parameterization,
        )  # fmt: skip
        gaps[parameterization] = summary["final"]["gap"]
        assert summary["final"]["log_evidence"] == pytest.approx(-31.311, abs=1e-3)
        if parameterization == "non_centered":
            # Reference posterior (NUTS): μ 4.4 ± 3.3, τ 3.6 ± 3.2.
            assert summary["posterior"]["mu"]["mean"] == pytest.approx(4.4, abs=1.0)
            assert 1.5 < summary["posterior"]["tau"]["mean"] < 5.0
            assert set(summary["posterior"]) == {"mu", "tau", "theta_raw", "y"}
            assert 0.05 < summary["posterior"]["y"]["check"]["sd"]["p_value"] < 0.95
    assert -0.2 < gaps["non_centered"] < 1.0  # the gap is KL(q ‖ posterior) >= 0, up to estimator noise
    assert gaps["centered"] > gaps["non_centered"] + 1.0
