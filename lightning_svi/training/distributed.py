"""What data-parallel SVI needs beyond Lightning's DDP: averaged step estimates and per-rank noise.

Why the gradients need nothing extra. Rank r of W evaluates the ELBO on its own b rows B_r; the
model's plate (``SVIModel.data_plate``) scales each row's terms by N / b, and DDP averages the
gradients over ranks:

    g = (1/W) Σ_r ∇ L_r,    L_r = −[global terms + (N / b) Σ_{i ∈ B_r} ℓ_i].

* θ (global): g = −∇[global terms + (N / (W b)) Σ_{i ∈ B_1 ∪ … ∪ B_W} ℓ_i], exactly the gradient of
  one process with the global batch of W b rows, an unbiased estimate of the full-data gradient.
* φ_i local to row i (``qa[i]``, ``qb[i]`` of the full guide, the autoguides' per-row locs): only
  the rank holding row i touches it, so DDP's average divides that rank's (N / b) ∇ℓ_i by W,
  giving (N / (W b)) ∇ℓ_i, again exactly what one process with the global batch computes. Row i
  is in the global batch with probability W b / N, so the expected step is ∇ℓ_i: unbiased. With
  the full batch split over ranks (b = N / W) the factor is 1, the exact full-data gradient.

So the division by W is wanted, not a loss: without it local parameters would move W times faster
than in a one-process run with the same global batch. What the ranks do need: the same θ and φ at
the start (same seed, and DDP broadcasts rank 0's parameters when it wraps the module), different
Monte Carlo draws after the warm-up (``seed_ranks_apart``), and the step's estimates averaged over
ranks before they are logged (``mean_over_ranks``).
"""

from __future__ import annotations

import pyro
import torch
import torch.distributed
from pytorch_lightning.strategies import Strategy

from lightning_svi.core.estimators import ComputedLogProbs, LogProbs


def mean_over_ranks(strategy: Strategy, loss: torch.Tensor, traces: LogProbs) -> tuple[torch.Tensor, LogProbs]:
    """``loss`` and the per-site sums of ``traces`` averaged over all ranks, in one all-reduce.

    Each rank's value estimates the full-data quantity from its shard, so their mean is the
    estimate from the global batch. Every rank must call this at the same step.
    """
    p_names, q_names = list(traces.log_p_sites), list(traces.log_q_sites)
    local = torch.stack(
        [loss.detach(), *(torch.as_tensor(traces.log_p_sites[name]) for name in p_names)]
        + [torch.as_tensor(traces.log_q_sites[name]) for name in q_names]
    ).to(loss.device, loss.dtype)
    mean = strategy.reduce(local, reduce_op="mean")
    p_values, q_values = mean[1 : 1 + len(p_names)], mean[1 + len(p_names) :]
    return mean[0], ComputedLogProbs(
        dict(zip(p_names, p_values, strict=True)), dict(zip(q_names, q_values, strict=True))
    )


def seed_ranks_apart(global_rank: int, world_size: int) -> None:
    """Give each rank its own random stream, derived from the run's seed, once θ and φ exist.

    Identical streams would draw the same noise for every rank's shard, correlating the ranks'
    gradient estimates; one process (``world_size == 1``) keeps its stream untouched.
    """
    if world_size > 1:
        pyro.set_rng_seed(torch.initial_seed() + global_rank)


def average_gradients(gradients: list[torch.Tensor]) -> None:
    """Average ``gradients`` over all ranks in place, with one all-reduce of a flat buffer: what DDP's
    reducer does for gradients that reach it through autograd (compiled mode's come from its graph)."""
    flat = torch.cat([gradient.reshape(-1) for gradient in gradients])
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    for gradient, averaged in zip(gradients, flat.split([gradient.numel() for gradient in gradients]), strict=True):
        gradient.copy_(averaged.view_as(gradient))
