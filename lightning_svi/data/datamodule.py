"""A Lightning data module over a dict of equal-length tensors, one row per data point."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_svi.config.table import read_table
from lightning_svi.core.svi_model import Batch, SVIModel
from lightning_svi.data.readers import DtypeOption, read_columns

PERMUTATION_THREAD = "lightning-svi-next-pass"
# Passes of at least this many rows are shuffled one pass ahead, in PERMUTATION_THREAD: 100,000 rows'
# permutation takes 0.5 ms; a hand-off to the thread 0.025 ms at the median, and 0.12 ms a pass in
# batches of ten 10,000-row passes (3.8 ms a batch drawn ahead, 2.6 ms in line).
DRAWN_AHEAD_FROM_ROWS = 100_000


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

    def __getitems__(self, rows: Sequence[int] | torch.Tensor) -> Batch:
        index = torch.as_tensor(rows, dtype=torch.long)
        # index_select, not column[index]: 1.9 ms against 5.2 ms for a million rows of a vector,
        # 34 ms against 74 ms of a 3-column matrix (torch 2.13, one thread).
        return {"index": index, **{name: column.index_select(0, index) for name, column in self.data.items()}}


def _already_batched(batch: Batch) -> Batch:
    return batch


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of the current process; (0, 1) outside DDP."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _permutation(num_rows: int, seed: int) -> torch.Tensor:
    """``torch.randperm(num_rows)`` from a generator seeded with ``seed``, the same permutation, drawn
    in int32 where the rows fit: 6.7 ms against 19 ms for a million rows (torch 2.13, one thread);
    randperm's shuffle does not depend on the dtype it writes."""
    generator = torch.Generator().manual_seed(seed)
    if num_rows > torch.iinfo(torch.int32).max:
        return torch.randperm(num_rows, generator=generator)
    return torch.randperm(num_rows, generator=generator, dtype=torch.int32).long()


def _permutations(num_rows: int, seed: int, first_pass: int) -> Iterator[torch.Tensor]:
    """``_permutation(num_rows, seed + p)`` for the passes ``p`` from ``first_pass`` on, each drawn
    one pass ahead in a background thread (randperm releases the GIL), while the current pass
    trains: a million rows' permutation takes 7-14 ms, half a batch of a hundred compiled steps.
    Each pass seeds its own generator, so the order does not depend on when the thread runs;
    closing the iterator stops the thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=PERMUTATION_THREAD) as ahead:
        upcoming = ahead.submit(_permutation, num_rows, seed + first_pass)
        for data_pass in itertools.count(first_pass + 1):
            order = upcoming.result()
            upcoming = ahead.submit(_permutation, num_rows, seed + data_pass)
            yield order


class EndlessBatchSampler(Sampler[torch.Tensor]):
    """Batches of row indices without end: SVI counts optimizer steps, not epochs.

    Each pass over the data is split between DDP ranks first (rank r takes every world-size-th
    row of the pass), then into minibatches, so every rank sees a different shard of equal size.
    With ``shuffle`` every pass is a fresh permutation, identical on every rank (seeded by
    ``seed`` and the pass number). When the rows do not split evenly between ranks, the passes are
    shuffled too: the few rows left over then change from pass to pass instead of never being
    seen (their local guide parameters would never train). Minibatch ``b`` depends on nothing else,
    so a resumed run starts at minibatch ``start`` and draws exactly what the interrupted run would
    have drawn next.

    ``group``, where given, puts several consecutive minibatches in one batch (one index tensor,
    gathered at once): the batch that starts at minibatch ``b`` holds ``group(b)`` of them, the
    same minibatches in the same order as one batch each.
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int | None,
        shuffle: bool,
        seed: int = 0,
        start: int = 0,
        group: Callable[[int], int] | None = None,
    ) -> None:
        self.num_rows = num_rows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.start = start
        self.group = group

    def __iter__(self) -> Iterator[torch.Tensor]:
        with closing(self._minibatches()) as minibatches:
            if self.group is None:
                yield from minibatches
                return
            drawn = self.start
            while True:
                count = self.group(drawn)
                yield torch.cat([next(minibatches) for _ in range(count)])
                drawn += count

    def _minibatches(self) -> Iterator[torch.Tensor]:
        rank, world_size = rank_and_world_size()
        shard_size = self.num_rows // world_size
        batch_size = min(self.batch_size or shard_size, shard_size)
        batches_per_pass = shard_size // batch_size
        data_pass, skip = divmod(self.start, batches_per_pass)
        if not (self.shuffle or self.num_rows % world_size):
            orders = (torch.arange(self.num_rows) for _ in itertools.count())
        elif self.num_rows >= DRAWN_AHEAD_FROM_ROWS:
            orders = _permutations(self.num_rows, self.seed, data_pass)
        else:
            orders = (_permutation(self.num_rows, self.seed + later) for later in itertools.count(data_pass))
        with closing(orders):
            for order in orders:
                shard = order[rank : shard_size * world_size : world_size]
                # Index tensors, not lists: the table gathers a batch with one indexing op per column.
                yield from shard[skip * batch_size : batches_per_pass * batch_size].split(batch_size)
                skip = 0


class TensorDataModule(pl.LightningDataModule):
    """Full-batch (``batch_size=None``) or shuffled minibatches of a ``TensorTable``, without end.

    Under DDP each rank draws its own shard (``EndlessBatchSampler``); set the trainer's
    ``use_distributed_sampler=False`` so that Lightning leaves the sampler alone. The number of
    minibatches the training loop has used travels in the checkpoint, so a resumed run continues
    the sequence of minibatches instead of starting it again.
    """

    def __init__(self, data: Batch, batch_size: int | None = None, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.table = TensorTable(data)
        self._full_batch: Batch | None = None
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.minibatches_taken = 0
        self._group: Callable[[int], int] | None = None

    def group_minibatches(self, group: Callable[[int], int]) -> None:
        """Put ``group(b)`` consecutive minibatches in the batch that starts at minibatch ``b``
        (see ``EndlessBatchSampler``); called before the training loop asks for its data loader."""
        self._group = group

    def state_dict(self) -> dict[str, int]:
        # Each optimizer step uses one minibatch (one shard of the data under DDP), and a batch's
        # steps all run before a callback can save it: the step count is the minibatches used,
        # without those the data fetcher has prefetched.
        if self.trainer is None:
            return {"minibatches_taken": self.minibatches_taken}
        return {"minibatches_taken": self.trainer.global_step}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        # "batches_taken": checkpoints written before batches held several minibatches (one per step then).
        self.minibatches_taken = state_dict.get("minibatches_taken", state_dict.get("batches_taken", 0))

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def full_batch(self) -> Batch:
        """Every row at once, in order: for warm-up, closed-form evidence and summaries (gathered once)."""
        if self._full_batch is None:
            self._full_batch = self.table.__getitems__(torch.arange(self.num_rows))
        return self._full_batch

    def train_dataloader(self) -> DataLoader:
        shuffle = self.batch_size is not None and self.batch_size < self.num_rows
        return DataLoader(
            self.table,
            batch_sampler=EndlessBatchSampler(
                self.num_rows, self.batch_size, shuffle, self.seed, self.minibatches_taken, self._group
            ),
            collate_fn=_already_batched,
            # Its own generator: creating the iterator must not draw from the global one the model samples from.
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


class FileDataModule(TensorDataModule):
    """A ``TensorDataModule`` over the columns of a data file (CSV, Parquet, ``.npz``, ``.pt``):
    ``data=file data.path=points.csv`` on the command line, ``_target_: lightning_svi.data.FileDataModule``
    in a YAML.

    ``columns`` and ``dtype`` choose and convert the file's columns (see ``read_columns``); batches
    are dicts of those tensors plus the rows' ``index``. The file is read when the module is built,
    so that a bad file is reported before training starts. ``plate`` is the name of the model's
    plate over the rows, where the framework cannot find it by itself (``data.plate``); the module
    only keeps it.
    """

    def __init__(
        self,
        path: str | Path,
        columns: Sequence[str] | None = None,
        dtype: DtypeOption = None,
        batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        plate: str | None = None,
    ) -> None:
        super().__init__(read_columns(path, columns, dtype), batch_size, num_workers, seed)
        self.path = Path(path)
        self.plate = plate


def load_data(
    model_class: type[SVIModel],
    path: str | None,
    seed: int,
    synthetic: dict | None = None,
    table: dict[str, list[float]] | None = None,
) -> Batch:
    """The CSV file at ``path`` checked against the model's table spec, or the model's synthetic data.

    ``table`` is the file's columns where they were read already: ``train.py`` reads a built-in model's
    file before importing torch. A user's own model keeps its spec in its class, which imports torch,
    so its file is read and checked only here.
    """
    if path is None:
        return model_class.synthetic_data(seed, **(synthetic or {}))
    if table is None:
        table = read_table(Path(path), model_class.table)
    return model_class.data_from_table(table)
