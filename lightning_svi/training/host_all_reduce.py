"""A sum all-reduce between the CPU ranks of one machine through shared memory, for the step's gradients.

Why not gloo's. Under DDP on CPU, a step's one all-reduce goes through gloo's TCP sockets: on a
2-core machine it costs milliseconds however few its bytes (``distributed`` has the figures), as
much as the step's own work on 5,000 rows. Ranks on one machine can instead write their buffers to
a shared memory segment and each sum all of them: a copy in, one byte to every other rank through
a pipe (a named FIFO) to say the copy is done, a wait for the others' bytes, a sum out. Every rank
adds the same buffers in the same order (rank 0, 1, ...), so all get the same bits, as parameters
kept in step by averaged gradients require. The pipes' write and read are system calls, which make
the buffer written before the byte visible to the rank that reads the byte, on any processor; a
waiting rank sleeps in its read instead of spinning on a core that the rank it waits for may need.

The segment holds two sets of slots, used by alternate calls: a rank can only be one call ahead of
the slowest (it waits for every rank's buffer of the previous call, which each posts after reading
the call before), so it never overwrites a slot that another rank has still to read. For the same
reason each pipe's bytes can be counted over the run: once a rank has as many bytes from another
as calls so far, that rank has posted this call's buffer. A rank whose process ends closes its
pipes, and the ranks waiting on them stop with its number instead of waiting for it.

Ranks on several machines, or not on CPU, keep ``torch.distributed.all_reduce``.
"""

from __future__ import annotations

import mmap
import os
import select
import socket
import tempfile
import weakref
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
        self.slots: torch.Tensor | None = None
        self.total: torch.Tensor | None = None  # the sum, kept between calls: no allocation per step
        self.inboxes, self.outboxes = self._connect()
        self.received = dict.fromkeys(self.inboxes, 0)  # bytes from each other rank so far
        # The pipes close with the object (a sweep's jobs in one process make one per fit).
        weakref.finalize(self, _close, [*self.inboxes.values(), *self.outboxes.values()])

    def __call__(self, flat: torch.Tensor) -> None:
        if flat.numel() > self.capacity:
            self._map(max(flat.numel(), 2 * self.capacity))
        self.calls += 1
        slots = self.slots[self.calls % 2, :, : flat.numel()]
        slots[self.rank].copy_(flat.reshape(-1))
        for rank, outbox in self.outboxes.items():
            try:
                os.write(outbox, b"\0")
            except BrokenPipeError:
                raise self._stopped(rank) from None
        self._wait_for_ranks()
        total = self.total[: flat.numel()]
        total.copy_(slots[0])
        for rank in range(1, self.world_size):
            total += slots[rank]
        flat.copy_(total.view_as(flat))

    def _wait_for_ranks(self) -> None:
        """Until every other rank has sent its byte of this call; a rank whose pipe closed (its
        process ended, say on an exception) stops this one too, as gloo's closed socket would."""
        waiting = [rank for rank, count in self.received.items() if count < self.calls]
        while waiting:
            ready, _, _ = select.select([self.inboxes[rank] for rank in waiting], [], [], WAIT_SECONDS)
            if not ready:
                raise RuntimeError(
                    f"rank {self.rank} waited {WAIT_SECONDS:.0f} s for rank(s) {waiting} to post their gradients "
                    f"(all-reduce {self.calls} through shared memory)"
                )
            for rank in waiting:
                if self.inboxes[rank] in ready:
                    sent = os.read(self.inboxes[rank], 4096)
                    if not sent:
                        raise self._stopped(rank)
                    self.received[rank] += len(sent)
            waiting = [rank for rank, count in self.received.items() if count < self.calls]

    def _stopped(self, rank: int) -> RuntimeError:
        return RuntimeError(
            f"rank {rank} stopped during all-reduce {self.calls} through shared memory (its pipe to rank "
            f"{self.rank} closed): see rank {rank}'s error"
        )

    def _connect(self) -> tuple[dict[int, int], dict[int, int]]:
        """A pipe from every rank to every other: this rank's ends to read ({sender: fd}) and to write
        ({receiver: fd}). A pipe of its own per sender lets a rank see which rank's process ended
        (its pipe reads end-of-file). The pipes' folder is removed once every rank has opened them."""
        folder: list[str | None] = [None]
        if self.rank == 0:
            folder[0] = tempfile.mkdtemp(prefix="lightning-svi-all-reduce-", dir=_shared_folder())
        torch.distributed.broadcast_object_list(folder, src=0)
        others = [rank for rank in range(self.world_size) if rank != self.rank]

        def pipe(sender: int, receiver: int) -> str:
            return os.path.join(folder[0], f"{sender}-{receiver}")

        for sender in others:
            os.mkfifo(pipe(sender, self.rank))
        torch.distributed.barrier()
        # Non-blocking: opening to read does not wait for a writer (the wait is select's).
        inboxes = {sender: os.open(pipe(sender, self.rank), os.O_RDONLY | os.O_NONBLOCK) for sender in others}
        torch.distributed.barrier()
        outboxes = {receiver: os.open(pipe(self.rank, receiver), os.O_WRONLY) for receiver in others}
        torch.distributed.barrier()
        for sender in others:
            os.unlink(pipe(sender, self.rank))
        torch.distributed.barrier()
        if self.rank == 0:
            os.rmdir(folder[0])
        return inboxes, outboxes

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
        self.total = torch.empty(capacity, dtype=torch.float64)
        self.capacity = capacity


def _close(descriptors: list[int]) -> None:
    for descriptor in descriptors:
        os.close(descriptor)


def for_this_process(device: torch.device) -> AllReduce:
    """``SharedMemoryAllReduce`` when every rank runs on this machine's CPU, else
    ``torch.distributed.all_reduce``. Collective: every rank must call it."""
    hostnames: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(hostnames, socket.gethostname())
    if device.type == "cpu" and len(set(hostnames)) == 1:
        return SharedMemoryAllReduce()
    return torch.distributed.all_reduce
