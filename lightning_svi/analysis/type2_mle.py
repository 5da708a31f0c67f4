"""Type-II maximum likelihood (empirical Bayes): the θ that maximises the closed-form log evidence.

This is where SVI with a guide that contains the exact posterior drives θ, so it is the yardstick
for what a guide did to θ (``scripts/compare_runs.py --type2-mle``, ``tests/test_type2_mle.py``).
"""

from __future__ import annotations

import copy

import torch

from lightning_svi.core.params import constrained_values
from lightning_svi.core.svi_model import Batch, SVIModel


def type2_maximum_likelihood(model: SVIModel, data: Batch) -> tuple[dict[str, float], float]:
    """(θ, log p_θ(x)) at the maximum of ``model.log_evidence(data)`` over the model's parameters.

    L-BFGS in float64 on the unconstrained parameters, started from the model's current θ (the
    model itself is left untouched). Raises ``ValueError`` for a model without a closed form.
    """
    model_name = getattr(model, "name", type(model).__name__)
    if getattr(model, "log_evidence", None) is None:  # a user's program: no closed form
        raise ValueError(f"model {model_name!r} has no closed-form log evidence")
    model = copy.deepcopy(model).double()
    data = {name: tensor.double() if tensor.is_floating_point() else tensor for name, tensor in data.items()}
    if model.log_evidence(data) is None:
        raise ValueError(f"model {model_name!r} has no closed-form log evidence")
    parameters = list(model.parameters())
    optimizer = torch.optim.LBFGS(parameters, max_iter=500, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = -model.log_evidence(data)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        log_evidence = float(model.log_evidence(data))
    return {name: value.item() for name, value in constrained_values(model).items()}, log_evidence
