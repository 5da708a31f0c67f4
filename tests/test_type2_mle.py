"""The forum question, answered with numbers: what value does SVI give θ?

With the ``full`` guide (which contains the exact posterior) SVI drives θ = (α, β) to the type-II
maximum-likelihood values, the maximiser of the closed-form log evidence. With the ``empty``
guide it does not: the objective becomes E_prior[log p(x, z)] and θ runs off elsewhere.
"""

from __future__ import annotations

import pytest

from lightning_svi.analysis.type2_mle import type2_maximum_likelihood
from lightning_svi.models.beta_binomial import BetaBinomial


@pytest.mark.slow
def test_full_guide_reaches_type2_mle_and_empty_guide_does_not(train_in_process, tmp_path) -> None:
    data = BetaBinomial.synthetic_data(seed=0)  # the default run's data set
    theta_mle, log_evidence_mle = type2_maximum_likelihood(BetaBinomial(num_data=50), data)
    alpha_mle, beta_mle = theta_mle["alpha"], theta_mle["beta"]

    full = train_in_process("guide=full", run_dir=tmp_path / "full")  # the default settings
    assert full["theta"]["alpha"] == pytest.approx(alpha_mle, rel=0.04)
    assert full["theta"]["beta"] == pytest.approx(beta_mle, rel=0.04)
    final = full["final"]
    assert final["log_evidence"] == pytest.approx(log_evidence_mle, abs=0.05)
    assert 0 < final["gap"] < 1.0  # ELBO ≤ log evidence, and the guide nearly matches the posterior

    empty = train_in_process("guide=empty", "trainer.max_steps=1000", run_dir=tmp_path / "empty")
    alpha, beta = empty["theta"]["alpha"], empty["theta"]["beta"]
    assert alpha > 10 * alpha_mle and beta > 10 * beta_mle  # the prior collapses onto one rate
    pooled_rate = (data["successes"].sum() / data["trials"].sum()).item()
    assert alpha / (alpha + beta) == pytest.approx(pooled_rate, rel=0.05)
    assert empty["final"]["log_evidence"] < log_evidence_mle - 50
