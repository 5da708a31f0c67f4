"""A model whose structure depends on a sampled value: it cannot be compiled into a static graph."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from lightning_svi.config.table import TableSpec
from lightning_svi.core.svi_model import Batch, SVIModel


class BranchingModel(SVIModel):
    name = "branching"
    table = TableSpec(columns=("x",), integer=False, non_negative=False)

    @classmethod
    def synthetic_data(cls, seed: int) -> Batch:
        return {"x": torch.randn(20, generator=torch.Generator().manual_seed(seed))}

    def forward(self, batch: Batch) -> None:
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        scale = 1.0 if loc > 0 else 2.0  # a Python branch on a sampled value
        with self.data_plate(batch):
            pyro.sample("x", dist.Normal(loc, scale), obs=batch["x"])

    def full_guide(self) -> PyroModule:
        return pyro.infer.autoguide.AutoNormal(self)
