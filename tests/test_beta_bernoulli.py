"""The forum's beta-Bernoulli model against closed-form answers."""

from __future__ import annotations

import pyro.poutine as poutine
import pytest
import torch
from scipy import special

from lightning_svi.models.beta_bernoulli import BetaBernoulli

pytestmark = pytest.mark.usefixtures("module_local_params")


def test_log_evidence_is_the_beta_function_ratio() -> None:
    data = {"outcome": torch.tensor([1.0, 0, 0, 1, 1, 0, 0])}
    model = BetaBernoulli(num_data=7, alpha_init=2.0, beta_init=3.0)
    expected = special.betaln(2 + 3, 3 + 4) - special.betaln(2, 3)
    assert model.log_evidence(data).item() == pytest.approx(expected, rel=1e-6)


def test_elbo_of_the_exact_posterior_equals_the_log_evidence() -> None:
    data = BetaBernoulli.synthetic_data(seed=1, num_flips=40)
    model = BetaBernoulli(num_data=40, alpha_init=1.5, beta_init=0.8)
    posterior = model.exact_posterior(data)["rate"]
    rate = posterior.sample()
    batch = {"index": torch.arange(40), **data}
    log_joint = poutine.trace(poutine.condition(model, data={"rate": rate})).get_trace(batch).log_prob_sum()
    assert (log_joint - posterior.log_prob(rate)).item() == pytest.approx(model.log_evidence(data).item(), rel=1e-5)


def test_csv_outcomes_must_be_zero_or_one(tmp_path) -> None:
    from lightning_svi.config.table import read_table
    from lightning_svi.errors import DataError

    path = tmp_path / "flips.csv"
    path.write_text("outcome\n0\n1\n2\n")
    with pytest.raises(DataError, match="line 4: outcome=2 violates outcome is 0 or 1"):
        read_table(path, BetaBernoulli.table)
