"""Batches without end: full batch, shuffled minibatches, disjoint DDP shards."""

from __future__ import annotations

import threading

import pytest
import torch

from lightning_svi.data import datamodule
from lightning_svi.data.datamodule import EndlessBatchSampler, TensorDataModule


def take(sampler: EndlessBatchSampler, count: int) -> list[torch.Tensor]:
    iterator = iter(sampler)
    return [next(iterator) for _ in range(count)]


def test_full_batch_repeats_every_row_in_order() -> None:
    batches = take(EndlessBatchSampler(7, None, shuffle=False), 3)
    assert all(torch.equal(batch, torch.arange(7)) for batch in batches)


def test_minibatches_cover_each_pass_once_then_reshuffle() -> None:
    batches = take(EndlessBatchSampler(10, 5, shuffle=True, seed=3), 4)
    first_pass, second_pass = torch.cat(batches[:2]), torch.cat(batches[2:])
    assert sorted(first_pass.tolist()) == list(range(10)) == sorted(second_pass.tolist())
    assert not torch.equal(first_pass, second_pass)
    assert torch.equal(torch.cat(take(EndlessBatchSampler(10, 5, shuffle=True, seed=3), 2)), first_pass)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_draw_disjoint_shards_of_equal_size(monkeypatch: pytest.MonkeyPatch, world_size: int) -> None:
    shards = []
    for rank in range(world_size):
        monkeypatch.setattr(datamodule, "rank_and_world_size", lambda rank=rank: (rank, world_size))
        shards.append(take(EndlessBatchSampler(12, None, shuffle=True, seed=0), 1)[0])
    assert len({len(shard) for shard in shards}) == 1
    combined = torch.cat(shards).tolist()
    assert len(set(combined)) == len(combined) == 12


@pytest.mark.parametrize("ahead", [False, True], ids=["in-line", "drawn-ahead"])
def test_each_pass_is_torch_randperm_seeded_by_seed_plus_pass(monkeypatch: pytest.MonkeyPatch, ahead: bool) -> None:
    """The order a resumed run and every DDP rank rebuild from the seed and the pass number alone
    (drawn in int32 for speed: the same permutation as randperm's default int64), whether the
    passes are drawn in line or ahead in a thread (large data)."""
    monkeypatch.setattr(datamodule, "DRAWN_AHEAD_FROM_ROWS", 1000 if ahead else 1001)
    batches = take(EndlessBatchSampler(1000, 100, shuffle=True, seed=7), 30)
    for data_pass in range(3):
        expected = torch.randperm(1000, generator=torch.Generator().manual_seed(7 + data_pass))
        drawn = torch.cat(batches[10 * data_pass : 10 * (data_pass + 1)])
        assert drawn.dtype == torch.long and torch.equal(drawn, expected), data_pass


def test_the_next_pass_is_drawn_ahead_in_a_thread_that_stops_with_the_iterator(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []

    def record(num_rows: int, seed: int) -> torch.Tensor:
        drawn.append((seed, threading.current_thread().name))
        return torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed))

    monkeypatch.setattr(datamodule, "_permutation", record)
    monkeypatch.setattr(datamodule, "DRAWN_AHEAD_FROM_ROWS", 10)
    iterator = iter(EndlessBatchSampler(10, 5, shuffle=True, seed=3, start=2))  # minibatch 2: pass 1
    next(iterator)
    iterator.close()  # waits for the pass being drawn ahead
    assert [seed for seed, _ in drawn] == [3 + 1, 3 + 2]
    assert all(name.startswith(datamodule.PERMUTATION_THREAD) for _, name in drawn)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith(datamodule.PERMUTATION_THREAD)]


def test_batches_carry_their_row_index() -> None:
    data = {"x": torch.arange(6.0) * 10, "xy": torch.arange(12).reshape(6, 2)}
    loader = TensorDataModule(data, batch_size=2).train_dataloader()
    batch = next(iter(loader))
    assert torch.equal(batch["x"], batch["index"].float() * 10)
    assert torch.equal(batch["xy"], torch.stack([2 * batch["index"], 2 * batch["index"] + 1], dim=1))
    assert batch["index"].dtype == torch.long and len(batch["index"]) == 2


@pytest.mark.parametrize("start", [0, 4])
def test_grouped_batches_hold_the_same_minibatches_in_the_same_order(start: int) -> None:
    """Groups of 1 to 3 minibatches, across pass boundaries (three minibatches a pass), from a resumed position."""
    sizes = {start + offset: size for offset, size in zip((0, 2, 5, 6, 9), (2, 3, 1, 3, 2), strict=True)}
    plain = take(EndlessBatchSampler(10, 3, shuffle=True, seed=5, start=start), 11)
    grouped = take(EndlessBatchSampler(10, 3, shuffle=True, seed=5, start=start, group=sizes.__getitem__), 5)
    assert [len(batch) for batch in grouped] == [3 * size for size in sizes.values()]
    assert torch.equal(torch.cat(grouped), torch.cat(plain))
    assert torch.equal(grouped[1], torch.cat(plain[2:5]))  # the second group: minibatches 2, 3, 4 after start


@pytest.mark.parametrize("key", ["minibatches_taken", "batches_taken"], ids=["current", "before-grouping"])
def test_a_loaded_position_starts_the_loader_at_that_minibatch(key: str) -> None:
    """Checkpoints written before batches held several minibatches call the position ``batches_taken``."""
    module = TensorDataModule({"x": torch.arange(10.0)}, batch_size=3, seed=2)
    module.load_state_dict({key: 7})
    first = next(iter(module.train_dataloader()))
    assert torch.equal(first["index"], take(EndlessBatchSampler(10, 3, shuffle=True, seed=2), 8)[7])
    assert module.state_dict() == {"minibatches_taken": 7}
