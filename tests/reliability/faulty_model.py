"""Test-only model for fault injection: the beta-binomial, except that DDP rank ``$FAULT_RANK`` raises
mid-training.

Loaded by ``model._target_=tests.reliability.faulty_model.BetaBinomialFailingOnOneRank`` with the repository
on ``PYTHONPATH``. It writes the moment of the fault to ``$FAULT_TIME_FILE`` so a test can time the exit.
"""

from __future__ import annotations

import os
import time

import torch.distributed

from lightning_svi.core.svi_model import Batch
from lightning_svi.models.beta_binomial import BetaBinomial

FAILING_CALL = 20  # forward calls: one warm-up, then one per training step


class InjectedFault(RuntimeError):
    pass


class BetaBinomialFailingOnOneRank(BetaBinomial):
    def __init__(self, num_data: int, **options: float) -> None:
        super().__init__(num_data, **options)
        self.calls = 0

    def forward(self, batch: Batch) -> None:
        self.calls += 1
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else None
        if self.calls == FAILING_CALL and rank == int(os.environ["FAULT_RANK"]):
            with open(os.environ["FAULT_TIME_FILE"], "w") as file:
                file.write(str(time.time()))
            raise InjectedFault(f"injected fault on rank {rank} at forward call {self.calls}")
        return super().forward(batch)
