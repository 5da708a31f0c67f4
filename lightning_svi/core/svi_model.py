"""The contract a model keeps with the framework."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import pyro
import torch
from pyro.nn import PyroModule

from lightning_svi.config.table import TableSpec

if TYPE_CHECKING:
    import pyro.distributions as dist

Batch = dict[str, torch.Tensor]


class SVIModel(PyroModule):
    """A Pyro model p_θ(x, z) whose θ are ``PyroParam`` attributes (module-local ``nn.Parameter``s).

    ``forward(batch)`` reads like the generative story. Data points live in one plate,
    ``data_plate(batch)``, which subsamples by the batch's ``index`` so that a minibatch (or a
    DDP shard) is scaled up to an unbiased estimate of the full-data ELBO.
    """

    name: ClassVar[str] = "model"
    table: ClassVar[TableSpec]
    plate_name: ClassVar[str] = "data"

    def __init__(self, num_data: int) -> None:
        super().__init__()
        self.num_data = num_data

    @classmethod
    def synthetic_data(cls, seed: int, **options: object) -> Batch:
        """The embedded data set, made from ``seed``: a dict of equal-length tensors."""
        raise NotImplementedError

    @classmethod
    def data_from_table(cls, table: dict[str, list[float]]) -> Batch:
        """Turn the checked CSV columns into the tensors ``forward`` reads."""
        return {name: torch.tensor(values, dtype=torch.get_default_dtype()) for name, values in table.items()}

    def data_plate(self, batch: Batch) -> pyro.plate:
        """The plate over data points, subsampled to the rows in ``batch``."""
        return pyro.plate(self.plate_name, self.num_data, subsample=batch["index"], dim=-1)

    def full_guide(self) -> PyroModule:
        """The model's own variational family (for conjugate models it contains the exact posterior)."""
        raise NotImplementedError(f"model {self.name!r} has no full guide")

    def log_evidence(self, data: Batch) -> torch.Tensor | None:
        """log p_θ(x) of the full data set in closed form, or None where none exists."""
        return None

    def exact_posterior(self, data: Batch) -> dict[str, dist.Distribution] | None:
        """The exact posterior p_θ(z | x) of each latent site under the current θ, where known in
        closed form (batch shape = the site's shape); None otherwise. Pictures draw it beside the guide."""
        return None
