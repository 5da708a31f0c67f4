"""A sum all-reduce between the CPU ranks of one machine through shared memory, for the step's gradients.

Why not gloo's. Under DDP on CPU, a step's one all-reduce goes through gloo's TCP sockets: on a
2-core machine it costs milliseconds however few its bytes (``distributed`` has the figures), as
much as the step's own work on 5,000 rows. Ranks on one machine can instead write their buffers to
a shared memory segment and each sum all of them: a copy in, one byte to every other rank through
its pipe (a named FIFO) to say the copy is done, a wait for the others' bytes, a sum out. Every rank
adds the same buffers in the same order (rank 0, 1, ...), so all get the same bits, as parameters
kept in step by averaged gradients require. The pipes' write and read are system calls, which make
the buffer written before the byte visible to the rank that reads the byte, on any processor; a
waiting rank sleeps in its read instead of spinning on a core that the rank it waits for may need.

The segment holds two sets of slots, used by alternate calls: a rank can only be one call ahead of
the slowest (it waits for every rank's buffer of the previous call, which each posts after reading
the call before), so it never overwrites a slot that another rank has still to read. For the same
reason the bytes can be counted over the run: once a rank has received (world size - 1) bytes per
call so far, every rank has posted this call's buffer.

Ranks on several machines, or not on CPU, keep ``torch.distributed.all_reduce``.
"""

from __future__ import annotations

import mmap
import os
import select
import socket
import tempfile
from collections.abc import Callable

import torch
import torch.distributed

# How long a rank waits for the others' buffers before it gives up, as gloo's default timeout.
WAIT_SECONDS = 1800.0

AllReduce = Callable[[torch.Tensor], None]


def _shared_folder() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


class SharedMemoryAllReduce:
    """Sums a float tensor over the ranks of one machine in place (``torch.distributed.all_reduce``'s
    contract for ``op=SUM``), through a shared memory segment that grows to the largest buffer.
    Created collectively (every rank at once, with the default process group up)."""

    def __init__(self) -> None:
        self.rank = torch.distributed.get_rank()
        self.world_size = torch.distributed.get_world_size()
        self.capacity = 0
        self.calls = 0
        self.bytes_received = 0
        self.slots: torch.Tensor | None = None
        self.inbox, self.outboxes = self._connect()

    def __call__(self, flat: torch.Tensor) -> None:
        if flat.numel() > self.capacity:
            self._map(max(flat.numel(), 2 * self.capacity))
        self.calls += 1
        slots = self.slots[self.calls % 2, :, : flat.numel()]
        slots[self.rank].copy_(flat.reshape(-1))
        for outbox in self.outboxes:
            os.write(outbox, b"\0")
        self._wait_for_ranks()
        total = slots[0].clone()
        for rank in range(1, self.world_size):
            total += slots[rank]
        flat.copy_(total.view_as(flat))

    def _wait_for_ranks(self) -> None:
        expected = (self.world_size - 1) * self.calls
        while self.bytes_received < expected:
            ready, _, _ = select.select([self.inbox], [], [], WAIT_SECONDS)
            if not ready:
                raise RuntimeError(
                    f"rank {self.rank} waited {WAIT_SECONDS:.0f} s for the other ranks' gradients (all-reduce "
                    f"{self.calls} through shared memory): another rank has stopped"
                )
            self.bytes_received += len(os.read(self.inbox, 4096))

    def _connect(self) -> tuple[int, list[int]]:
        """Each rank's pipe (its inbox), and the other ranks' pipes open for writing. The pipes'
        folder is removed once every rank has opened them; the open pipes live on."""
        folder: list[str | None] = [None]
        if self.rank == 0:
            folder[0] = tempfile.mkdtemp(prefix="lightning-svi-all-reduce-", dir=_shared_folder())
        torch.distributed.broadcast_object_list(folder, src=0)
        paths = [os.path.join(folder[0], str(rank)) for rank in range(self.world_size)]
        if self.rank == 0:
            for path in paths:
                os.mkfifo(path)
        torch.distributed.barrier()
        inbox = os.open(paths[self.rank], os.O_RDWR)  # read and write: opening does not wait for a writer
        torch.distributed.barrier()
        outboxes = [os.open(path, os.O_WRONLY) for rank, path in enumerate(paths) if rank != self.rank]
        torch.distributed.barrier()
        if self.rank == 0:
            for path in paths:
                os.unlink(path)
            os.rmdir(folder[0])
        return inbox, outboxes

    def _map(self, capacity: int) -> None:
        """A fresh segment of ``capacity`` floats per slot, created by rank 0 and mapped by every rank.

        Collective (every rank calls it at the same call, as buffers have one size on all ranks). The
        file is removed once every rank has mapped it: the memory lives as long as the mappings.
        """
        size = 2 * self.world_size * capacity * 8
        path: list[str | None] = [None]
        if self.rank == 0:
            descriptor, path[0] = tempfile.mkstemp(prefix="lightning-svi-all-reduce-", dir=_shared_folder())
            os.ftruncate(descriptor, size)
            os.close(descriptor)
        torch.distributed.broadcast_object_list(path, src=0)
        with open(path[0], "r+b") as file:
            memory = mmap.mmap(file.fileno(), size)
        torch.distributed.barrier()
        if self.rank == 0:
            os.unlink(path[0])
        self.slots = torch.frombuffer(memory, dtype=torch.float64).view(2, self.world_size, capacity)
        self.capacity = capacity


def for_this_process(device: torch.device) -> AllReduce:
    """``SharedMemoryAllReduce`` when every rank runs on this machine's CPU, else
    ``torch.distributed.all_reduce``. Collective: every rank must call it."""
    hostnames: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(hostnames, socket.gethostname())
    if device.type == "cpu" and len(set(hostnames)) == 1:
        return SharedMemoryAllReduce()
    return torch.distributed.all_reduce
