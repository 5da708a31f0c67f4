"""The shared-memory all-reduce between two CPU processes (gloo for its setup): every call's sum on
every rank, the same bits on both, buffers that outgrow the segment, and gloo kept when the ranks
are on different machines."""

from __future__ import annotations

import gc
import os
import socket
import time

import pytest
import torch
import torch.distributed
import torch.multiprocessing

from lightning_svi.training import host_all_reduce

WORLD_SIZE = 2
# Buffer sizes in call order: growth past the first segment (10 -> 25 -> 3000), then smaller again.
SIZES = [10, 10, 25, 7, 3000, 1, *([40] * 200)]


def rank_buffer(rank: int, call: int, size: int, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 * call + rank)
    return torch.randn(size, generator=generator, dtype=torch.float64).to(dtype)


def join(rank: int, port: int) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )


def sums_on_each_rank(rank: int, port: int) -> None:
    join(rank, port)
    machine = socket.gethostname
    socket.gethostname = lambda: f"machine-{rank}"  # in this process only
    assert host_all_reduce.for_this_process(torch.device("cpu")) is torch.distributed.all_reduce
    socket.gethostname = machine
    all_reduce = host_all_reduce.for_this_process(torch.device("cpu"))
    assert isinstance(all_reduce, host_all_reduce.SharedMemoryAllReduce)
    if rank == 1:  # a slow reader: rank 0 runs on to its next call while rank 1 has this one's slots to read
        wait = all_reduce._wait_for_ranks

        def wait_then_dawdle() -> None:
            wait()
            time.sleep(0.002)

        all_reduce._wait_for_ranks = wait_then_dawdle
    results = []
    for call, size in enumerate(SIZES):
        dtype = torch.float32 if call % 2 else torch.float64
        flat = rank_buffer(rank, call, size, dtype)
        all_reduce(flat)
        expected = sum(rank_buffer(other, call, size, torch.float64) for other in range(WORLD_SIZE)).to(dtype)
        torch.testing.assert_close(
            flat, expected, rtol=1e-6, atol=1e-6, msg=lambda text, call=call: f"call {call}: {text}"
        )
        results.append(flat.double())
    # Parameters stay in step only if every rank gets the same bits: compare them through gloo, at
    # the end (a collective in the loop would keep rank 0 from running ahead of rank 1).
    results = torch.cat(results)
    gathered = [torch.empty_like(results) for _ in range(WORLD_SIZE)]
    torch.distributed.all_gather(gathered, results)
    assert all(torch.equal(gathered[0], other) for other in gathered[1:])
    assert all_reduce.capacity >= 3000
    pipes = [*all_reduce.inboxes.values(), *all_reduce.outboxes.values()]
    if rank == 1:
        del wait, wait_then_dawdle  # they hold the object too
    del all_reduce
    gc.collect()
    for descriptor in pipes:  # closed with the object
        with pytest.raises(OSError):
            os.fstat(descriptor)
    torch.distributed.destroy_process_group()


def one_rank_ends(rank: int, port: int) -> None:
    """Rank 1's process ends after three calls; rank 0, waiting in its fourth, stops with rank 1's number."""
    join(rank, port)
    all_reduce = host_all_reduce.SharedMemoryAllReduce()
    for _ in range(3):
        all_reduce(torch.ones(4))
    if rank == 1:  # ends while rank 0 waits for its fourth buffer, as a process that raised would
        time.sleep(1)
        os._exit(0)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"rank 1 stopped during all-reduce 4 through shared memory"):
        all_reduce(torch.ones(4))
    assert time.monotonic() - started < 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_on_one_machine_sum_through_shared_memory_and_on_two_through_gloo() -> None:
    torch.multiprocessing.spawn(sums_on_each_rank, args=(free_port(),), nprocs=WORLD_SIZE, join=True)


def test_a_rank_whose_process_ends_stops_the_others_waiting_for_it() -> None:
    torch.multiprocessing.spawn(one_rank_ends, args=(free_port(),), nprocs=WORLD_SIZE, join=True)
