"""The checkpoint's random-number-generator state under DDP: every rank's stream saved, and each
resumed rank given its own back (with rank 0's alone, every resumed rank drew rank 0's noise)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed
import torch.multiprocessing

from lightning_svi.checkpointing import rng_state
from lightning_svi.checkpointing.rng_state import RngStateCheckpoint
from lightning_svi.data import datamodule

WORLD_SIZE = 2


def draws() -> tuple[torch.Tensor, float, float]:
    """What the next draws of torch's, Python's and NumPy's generators are."""
    return torch.rand(5), random.random(), float(np.random.rand())


def scramble() -> None:
    torch.manual_seed(12345)
    random.seed(12345)
    np.random.seed(12345)


def resumed_draws(path: Path) -> tuple[torch.Tensor, float, float]:
    """The draws after a fresh callback restores the checkpoint's state at ``path`` (weights-only load)."""
    callback = RngStateCheckpoint()
    callback.load_state_dict(torch.load(path, weights_only=True))
    callback.on_train_start(None, None)
    return draws()


def each_rank_saves_and_resumes(rank: int, port: int, folder: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )
    torch.manual_seed(100 + rank)  # as seed_ranks_apart gives each rank its own stream
    random.seed(100 + rank)
    np.random.seed(100 + rank)
    path = Path(folder) / "rng.pt"
    state = RngStateCheckpoint().state_dict()  # collective, on every rank, as Lightning dumps a checkpoint
    if rank == 0:  # Lightning writes rank 0's checkpoint
        torch.save(state, path)
    torch.distributed.barrier()
    expected = draws()
    scramble()
    restored = resumed_draws(path)
    assert torch.equal(restored[0], expected[0]) and restored[1:] == expected[1:], f"rank {rank}"
    gathered = [torch.empty(5) for _ in range(WORLD_SIZE)]
    torch.distributed.all_gather(gathered, restored[0])
    assert not torch.equal(gathered[0], gathered[1]), "the resumed ranks draw the same numbers"
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_each_resumed_rank_draws_what_it_would_have_drawn(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(
        each_rank_saves_and_resumes, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True
    )


def test_one_process_round_trips_its_state_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(7)
    torch.save(RngStateCheckpoint().state_dict(), tmp_path / "rng.pt")
    expected = draws()
    scramble()
    restored = resumed_draws(tmp_path / "rng.pt")
    assert torch.equal(restored[0], expected[0]) and restored[1:] == expected[1:]


def test_a_rank_the_checkpoint_holds_no_state_for_keeps_its_own_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saved by one process, resumed on two: rank 0 takes the saved state, rank 1 keeps the stream it has."""
    torch.manual_seed(7)
    torch.save(RngStateCheckpoint().state_dict(), tmp_path / "rng.pt")
    saved_continuation = draws()
    monkeypatch.setattr(datamodule, "rank_and_world_size", lambda: (1, 2))
    torch.manual_seed(8)
    own = draws()
    torch.manual_seed(8)
    assert torch.equal(resumed_draws(tmp_path / "rng.pt")[0], own[0])
    assert not torch.equal(own[0], saved_continuation[0])


def test_a_checkpoint_of_one_unranked_state_resumes_rank_zero(tmp_path: Path) -> None:
    """Checkpoints written before states were kept per rank hold one state, rank 0's."""
    torch.manual_seed(7)
    torch.save(rng_state.collect_rng_state(), tmp_path / "rng.pt")
    expected = draws()
    scramble()
    assert torch.equal(resumed_draws(tmp_path / "rng.pt")[0], expected[0])
