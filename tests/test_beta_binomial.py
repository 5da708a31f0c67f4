"""The beta-binomial model against closed-form answers."""

from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from scipy import stats

from lightning_svi.models.beta_binomial import BetaBinomial, beta_binomial_log_evidence

pytestmark = pytest.mark.usefixtures("module_local_params")


def test_log_evidence_matches_scipy_beta_binomial() -> None:
    successes = torch.tensor([0.0, 3.0, 10.0, 7.0])
    trials = torch.tensor([5.0, 10.0, 10.0, 30.0])
    alpha, beta = torch.tensor(2.5), torch.tensor(0.7)
    expected = stats.betabinom.logpmf(successes.numpy(), trials.numpy(), 2.5, 0.7).sum()
    actual = beta_binomial_log_evidence(successes, trials, alpha, beta)
    assert actual.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("alpha", "beta"), [(2.5, 0.7), (468_210.0, 1_100_570.0), (3e7, 1e7)])
def test_log_evidence_in_float32_keeps_its_digits_where_theta_runs_large(alpha: float, beta: float) -> None:
    """An empty guide drives α and β to ~1e6, where each log B(·, ·) is ~1e6 and the evidence a few hundred."""
    data = BetaBinomial.synthetic_data(seed=0)
    successes, trials = data["successes"].numpy(), data["trials"].numpy()
    expected = stats.betabinom.logpmf(successes, trials, alpha, beta).sum()
    actual = beta_binomial_log_evidence(data["successes"], data["trials"], torch.tensor(alpha), torch.tensor(beta))
    assert actual.dtype == torch.float32
    assert actual.item() == pytest.approx(expected, rel=1e-5)


def test_the_beta_bernoulli_evidence_keeps_its_digits_where_theta_runs_large() -> None:
    from lightning_svi.models.beta_bernoulli import beta_bernoulli_log_evidence

    outcomes = (torch.arange(5000) % 10 < 3).float()
    alpha, beta = 3e5, 7e5
    expected = (
        stats.betabinom.logpmf(1500, 5000, alpha, beta) - stats.binom.logpmf(1500, 5000, 0.5) + 5000 * math.log(0.5)
    )
    actual = beta_bernoulli_log_evidence(outcomes, torch.tensor(alpha), torch.tensor(beta))
    assert actual.item() == pytest.approx(expected, rel=1e-5)


def test_log_evidence_equals_elbo_of_the_exact_posterior() -> None:
    """With q = the exact posterior, log p(x, z) − log q(z) = log p(x) for every z."""
    data = BetaBinomial.synthetic_data(seed=3, num_groups=6)
    model = BetaBinomial(num_data=6, alpha_init=1.7, beta_init=4.2)
    batch = {"index": torch.arange(6), **data}
    posterior = model.exact_posterior(data)["rate"]
    rate = posterior.sample()
    conditioned = poutine.condition(model, data={"rate": rate})
    log_joint = poutine.trace(conditioned).get_trace(batch).log_prob_sum()
    elbo_sample = log_joint - posterior.log_prob(rate).sum()
    assert elbo_sample.item() == pytest.approx(model.log_evidence(data).item(), rel=1e-5)


def test_synthetic_data_is_reproducible_and_valid() -> None:
    first = BetaBinomial.synthetic_data(seed=0)
    second = BetaBinomial.synthetic_data(seed=0)
    assert torch.equal(first["successes"], second["successes"])
    assert len(first["trials"]) == 50
    assert (first["successes"] <= first["trials"]).all()
    assert not torch.equal(first["successes"], BetaBinomial.synthetic_data(seed=1)["successes"])


def test_theta_are_positive_module_parameters_named_alpha_and_beta() -> None:
    pyro.clear_param_store()
    model = BetaBinomial(num_data=3, alpha_init=2.0, beta_init=5.0)
    names = {name for name, _ in model.named_parameters()}
    assert names == {"alpha_unconstrained", "beta_unconstrained"}
    assert model.alpha.item() == pytest.approx(2.0)
    assert len(pyro.get_param_store()) == 0  # module-local: nothing leaks into the global store


def test_full_guide_samples_every_latent_site_of_the_minibatch() -> None:
    model = BetaBinomial(num_data=10)
    guide = model.full_guide()
    batch = {
        "index": torch.tensor([2, 5, 7]),
        "successes": torch.tensor([1.0, 2, 3]),
        "trials": torch.tensor([5.0, 5, 5]),
    }
    guide_trace = poutine.trace(guide).get_trace(batch)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch)
    assert guide_trace.nodes["rate"]["value"].shape == (3,)
    assert model_trace.nodes["rate"]["value"] is guide_trace.nodes["rate"]["value"]
    # The plate scales a minibatch up to the full data set.
    model_trace.compute_log_prob()
    assert model_trace.nodes["successes"]["scale"] == pytest.approx(10 / 3)
