"""Minibatches: the data plate scales each batch by N / batch size and the guide's local
parameters follow the batch's rows, so batch ELBO estimates average to the full-batch ELBO."""

from __future__ import annotations

import itertools

import pyro
import pytest
import torch

from lightning_svi.core.estimators import build_estimator
from lightning_svi.data.datamodule import TensorDataModule
from lightning_svi.models.beta_binomial import BetaBinomial
from tests.conftest import guide_of_kind

NUM_GROUPS, BATCH_SIZE = 50, 10


def one_pass_of_batches(datamodule: TensorDataModule) -> list[dict[str, torch.Tensor]]:
    """The first pass of the training loader: shuffled batches that partition the rows."""
    batches = list(itertools.islice(iter(datamodule.train_dataloader()), NUM_GROUPS // BATCH_SIZE))
    rows = torch.cat([batch["index"] for batch in batches]).sort().values
    assert torch.equal(rows, torch.arange(NUM_GROUPS))
    assert not torch.equal(batches[0]["index"], torch.arange(BATCH_SIZE))  # shuffled
    return batches


def setup(kind: str) -> tuple[BetaBinomial, torch.nn.Module, TensorDataModule]:
    pyro.settings.set(module_local_params=True)
    pyro.set_rng_seed(0)
    datamodule = TensorDataModule(BetaBinomial.synthetic_data(0, num_groups=NUM_GROUPS), batch_size=BATCH_SIZE)
    model = BetaBinomial(NUM_GROUPS, alpha_init=2.0, beta_init=5.0)
    guide = guide_of_kind(kind, model)
    if kind == "full":
        # Near each group's own posterior (so the estimates have little variance), but not at it (where
        # the variance is zero): a guide that read another row's parameters would be far off.
        data = datamodule.full_batch()
        posterior = model.exact_posterior(data)["rate"]
        guide.qa_unconstrained.data = (1.3 * posterior.concentration1).log().detach()
        guide.qb_unconstrained.data = (0.8 * posterior.concentration0).log().detach()
    return model, guide, datamodule


def test_delta_guide_batch_elbos_average_to_the_full_batch_elbo_exactly() -> None:
    # A point-mass guide makes each ELBO deterministic, so the identity holds to float precision.
    model, guide, datamodule = setup("delta")
    elbo = build_estimator("Trace_ELBO")
    elbo(model, guide)(datamodule.full_batch())  # creates the guide's parameters
    with torch.no_grad():
        guide.rate_unconstrained.data = torch.randn(NUM_GROUPS)  # distinct per-row values
        full = -elbo(model, guide)(datamodule.full_batch()).item()
        batches = one_pass_of_batches(datamodule)
        average = sum(-elbo(model, guide)(batch).item() for batch in batches) / len(batches)
    assert average == pytest.approx(full, rel=1e-5)
    # Without the N / batch-size scale a batch would count a fifth of the data.
    assert abs(-elbo(model, guide)(batches[0]).item() - full / 5) > 1.0


def exact_elbo(model: BetaBinomial, guide: torch.nn.Module, data: dict[str, torch.Tensor]) -> float:
    """E_q[log p(y, c) − log q(c)] in closed form for Beta guides: E log c = ψ(a) − ψ(a + b)."""
    a, b = guide.qa, guide.qb
    successes, trials = data["successes"], data["trials"]
    failures = trials - successes
    log_c, log_1mc = torch.digamma(a) - torch.digamma(a + b), torch.digamma(b) - torch.digamma(a + b)
    log_binomial = torch.lgamma(trials + 1) - torch.lgamma(successes + 1) - torch.lgamma(failures + 1)
    log_prior = (model.alpha - 1) * log_c + (model.beta - 1) * log_1mc - _log_beta(model.alpha, model.beta)
    entropy = torch.distributions.Beta(a, b).entropy()
    return (log_binomial + successes * log_c + failures * log_1mc + log_prior + entropy).sum().item()


def _log_beta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


def test_full_guide_batch_elbo_estimates_average_to_the_exact_full_data_elbo() -> None:
    model, guide, datamodule = setup("full")
    elbo = build_estimator("Trace_ELBO", num_particles=200, vectorize_particles=True)
    with torch.no_grad():
        exact = exact_elbo(model, guide, datamodule.full_batch())
        batches = one_pass_of_batches(datamodule)
        # Each repeat: the average over one pass of the batch estimates, each scaled by N / batch size.
        repeats = torch.tensor(
            [sum(-elbo(model, guide)(batch).item() for batch in batches) / len(batches) for _ in range(30)]
        )
        full_batch = torch.tensor([-elbo(model, guide)(datamodule.full_batch()).item() for _ in range(30)])
    for estimates in (repeats, full_batch):
        standard_error = estimates.std().item() / len(estimates) ** 0.5
        assert abs(estimates.mean().item() - exact) < 4 * standard_error
    assert abs(exact) > 100 and repeats.std() > 0  # a real comparison, not two small numbers
