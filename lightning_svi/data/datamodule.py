"""A Lightning data module over a dict of equal-length tensors, one row per data point."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_svi.data.table import read_table
from lightning_svi.models.base import Batch, SVIModel


class TensorTable(Dataset):
    """Rows of a dict of tensors. A batch is gathered by one indexing operation per column
    (``__getitems__``), not row by row, and carries the rows' ``index`` for the model's plate."""

    def __init__(self, data: Batch) -> None:
        lengths = {name: len(column) for name, column in data.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"columns differ in length: {lengths}")
        self.data = data
        self.num_rows = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, row: int) -> Batch:
        return self.__getitems__([row])

    def __getitems__(self, rows: Sequence[int]) -> Batch:
        index = torch.as_tensor(rows, dtype=torch.long)
        return {"index": index, **{name: column[index] for name, column in self.data.items()}}


def _already_batched(batch: Batch) -> Batch:
    return batch


class TensorDataModule(pl.LightningDataModule):
    """Full-batch (``batch_size=None``) or shuffled minibatches of a ``TensorTable``.

    Under DDP, Lightning gives each rank its own shard through a distributed sampler.
    """

    def __init__(self, data: Batch, batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__()
        self.table = TensorTable(data)
        self.batch_size = batch_size

        self.num_workers = num_workers

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def full_batch(self) -> Batch:
        """Every row at once, in order: for warm-up, closed-form evidence and summaries."""
        return self.table.__getitems__(range(self.num_rows))

    def train_dataloader(self) -> DataLoader:
        full_batch = self.batch_size is None or self.batch_size >= self.num_rows
        return DataLoader(
            self.table,
            batch_size=self.num_rows if full_batch else self.batch_size,
            shuffle=not full_batch,
            drop_last=False,
            collate_fn=_already_batched,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


def load_data(model_class: type[SVIModel], path: str | None, seed: int, synthetic: dict | None = None) -> Batch:
    """The CSV file at ``path`` checked against the model's table spec, or the model's synthetic data."""
    if path is None:
        return model_class.synthetic_data(seed, **(synthetic or {}))
    return model_class.data_from_table(read_table(Path(path), model_class.table))
