"""A sum all-reduce between the CPU ranks of one machine through shared memory, for the step's gradients.

Why not gloo's. Under DDP on CPU, a step's one all-reduce goes through gloo's TCP sockets: on a
2-core machine it costs milliseconds however few its bytes (``distributed`` has the figures), as
much as the step's own work on 5,000 rows. Ranks on one machine can instead write their buffers to
a shared memory segment and each sum all of them: a copy in, a wait for the other ranks' sequence
numbers, a sum out. Every rank adds the same buffers in the same order (rank 0, 1, ...), so all get
the same bits, as parameters kept in step by averaged gradients require.

The segment holds two sets of slots, used by alternate calls: a rank can only be one call ahead of
the slowest (it waits for every rank's buffer of the previous call, which each posts after reading
the call before), so it never overwrites a slot that another rank has still to read. A rank posts
its buffer by writing its sequence number after the buffer; x86's memory model keeps those two
stores in that order for the other cores, which is why other machines keep gloo (``for_this_process``).

Ranks on several machines, or not on CPU, keep ``torch.distributed.all_reduce``.
"""

from __future__ import annotations

import mmap
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed

# One counter per 64-byte cache line, so that ranks posting their counters do not share a line.
COUNTER_STRIDE = 8
# How long a rank waits for the others' buffers before it gives up, as gloo's default timeout.
WAIT_SECONDS = 1800.0
# x86's stores are seen by other cores in program order (a buffer before the counter after it).
ORDERED_STORES = {"x86_64", "AMD64", "i386", "i686"}

AllReduce = Callable[[torch.Tensor], None]


class SharedMemoryAllReduce:
    """Sums a float tensor over the ranks of one machine in place (``torch.distributed.all_reduce``'s
    contract for ``op=SUM``), through a shared memory segment that grows to the largest buffer."""

    def __init__(self) -> None:
        self.rank = torch.distributed.get_rank()
        self.world_size = torch.distributed.get_world_size()
        self.capacity = 0
        self.calls = 0
        self.counters: np.ndarray | None = None
        self.slots: torch.Tensor | None = None

    def __call__(self, flat: torch.Tensor) -> None:
        if flat.numel() > self.capacity:
            self._open(max(flat.numel(), 2 * self.capacity))
        self.calls += 1
        slots = self.slots[self.calls % 2, :, : flat.numel()]
        slots[self.rank].copy_(flat.reshape(-1))
        self.counters[self.rank * COUNTER_STRIDE] = self.calls
        self._wait_for_ranks()
        total = slots[0].clone()
        for rank in range(1, self.world_size):
            total += slots[rank]
        flat.copy_(total.view_as(flat))

    def _wait_for_ranks(self) -> None:
        posted = self.counters[::COUNTER_STRIDE]
        started = time.monotonic()
        while posted.min() < self.calls:
            os.sched_yield()  # when ranks outnumber cores, the rank being waited for may need this one
            if time.monotonic() - started > WAIT_SECONDS:
                waiting = [rank for rank, count in enumerate(posted) if count < self.calls]
                raise RuntimeError(
                    f"rank {self.rank} waited {WAIT_SECONDS:.0f} s for rank(s) {waiting} to post their gradients "
                    f"(all-reduce {self.calls} through shared memory): another rank has stopped"
                )

    def _open(self, capacity: int) -> None:
        """A fresh segment of ``capacity`` floats per slot, created by rank 0 and mapped by every rank.

        Collective (every rank calls it at the same call, as buffers have one size on all ranks). The
        file is removed once every rank has mapped it: the memory lives as long as the mappings.
        """
        counter_bytes = self.world_size * COUNTER_STRIDE * 8
        size = counter_bytes + 2 * self.world_size * capacity * 8
        path = [None]
        if self.rank == 0:
            folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
            descriptor, path[0] = tempfile.mkstemp(prefix="lightning-svi-all-reduce-", dir=folder)
            os.ftruncate(descriptor, size)
            os.close(descriptor)
        torch.distributed.broadcast_object_list(path, src=0)
        with open(path[0], "r+b") as file:
            memory = mmap.mmap(file.fileno(), size)
        torch.distributed.barrier()
        if self.rank == 0:
            os.unlink(path[0])
        self.counters = np.frombuffer(memory, dtype=np.int64, count=self.world_size * COUNTER_STRIDE)
        self.slots = torch.frombuffer(memory, dtype=torch.float64, offset=counter_bytes).view(
            2, self.world_size, capacity
        )
        self.capacity, self.calls = capacity, 0


def for_this_process(device: torch.device) -> AllReduce:
    """``SharedMemoryAllReduce`` when every rank runs on this machine's CPU (with x86's ordered
    stores), else ``torch.distributed.all_reduce``. Collective: every rank must call it."""
    hostnames: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(hostnames, socket.gethostname())
    if device.type == "cpu" and platform.machine() in ORDERED_STORES and len(set(hostnames)) == 1:
        return SharedMemoryAllReduce()
    return torch.distributed.all_reduce
