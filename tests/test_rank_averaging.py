"""Under DDP a step's gradients and, on a logged step, its estimates are averaged over ranks in one
all-reduce (``EagerStep._average_over_ranks``): here a second rank is simulated by an all-reduce
that adds its buffer, so the averaging is checked without starting processes (``test_ddp`` runs two)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed
from torch import nn

from lightning_svi.core.estimators import ComputedLogProbs
from lightning_svi.training.distributed import average_gradients
from lightning_svi.training.step_engine import EagerStep, UpdateRoute

# The other rank's flat buffer: gradients of `weights` (2) and `unused` (1), then the loss and the
# per-site sums of log p ("x") and log q ("z").
OTHER_RANK = torch.tensor([10.0, 20.0, 6.0, 30.0, -40.0, 3.0])


class Squares(nn.Module):
    """loss = Σ weights², whose gradient is 2 weights; ``unused`` gets no gradient on this rank."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.unused = nn.Parameter(torch.tensor([5.0]))

    def forward(self, batch: dict) -> torch.Tensor:
        return (self.weights**2).sum()


@pytest.fixture
def all_reduces(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Every all-reduce's input; each adds ``OTHER_RANK`` (as long as the buffer) to it: world size 2."""
    calls: list[torch.Tensor] = []

    def all_reduce(flat: torch.Tensor, op: object = None) -> None:
        calls.append(flat.clone())
        flat += OTHER_RANK[: len(flat)]

    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    return calls


def engine() -> EagerStep:
    svi = Squares()
    optimizer = torch.optim.SGD(svi.parameters(), lr=0.1)
    traces = ComputedLogProbs({"x": torch.tensor(-6.0)}, {"z": torch.tensor(1.0)})
    route = UpdateRoute(torch.Tensor.backward, optimizer, None, lambda: None)
    return EagerStep(svi, SimpleNamespace(last_traces=traces), route, average_gradients)


def test_a_logged_step_averages_gradients_loss_and_traces_in_one_all_reduce(all_reduces: list) -> None:
    step = engine()
    loss, traces, _ = step.loss_and_gradients({}, logged=True)
    assert len(all_reduces) == 1
    assert all_reduces[0].tolist() == [2.0, 4.0, 0.0, 5.0, -6.0, 1.0]  # the unused parameter's gradient as 0
    assert step.svi.weights.grad.tolist() == [6.0, 12.0] and step.svi.unused.grad.tolist() == [3.0]
    assert float(loss) == 17.5
    assert float(traces.log_p_sites["x"]) == -23.0 and float(traces.log_q_sites["z"]) == 2.0
    assert float(traces.log_p) - float(traces.log_q) == -25.0


def test_a_step_nobody_logs_averages_the_loss_and_keeps_its_rank_traces(all_reduces: list) -> None:
    step = engine()
    own_traces = step.estimator.last_traces
    loss, traces, _ = step.loss_and_gradients({})
    assert len(all_reduces) == 1 and len(all_reduces[0]) == 4  # no per-site sums in the buffer
    assert float(loss) == 17.5 and traces is own_traces
    step.update()
    assert step.svi.weights.tolist() == pytest.approx([1.0 - 0.6, 2.0 - 1.2])
