"""SIGTERM and SIGINT (Ctrl-C) stop a run at the end of its running step, on every rank, with a checkpoint.

Lightning turns SIGTERM into a ``SIGTERMException`` at the end of the running step (``LastCheckpoint``
then writes ``last.ckpt``), but Ctrl-C raises ``KeyboardInterrupt`` wherever the step is, and no
checkpoint is written. And under DDP its SIGTERM handler broadcasts from rank 0 inside the handler:
a SIGTERM delivered to another rank only (one node of a multi-node job pre-empted) leaves the ranks
waiting on each other until the process group's timeout (30 minutes with gloo).

``StopSignals`` replaces both handlers while training runs. A handler only records the signal (and
forwards it to the ranks this process launched, as Lightning's does); at the end of every step the
ranks agree, in one all-reduce, whether any rank received one, and all of them then set Lightning's
own flag, so that every rank stops after the same step through Lightning's ``SIGTERMException``
path. A second Ctrl-C stops at once (``KeyboardInterrupt``, no checkpoint).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any
from weakref import WeakKeyDictionary

import pytorch_lightning as pl
import torch
import torch.distributed

from lightning_svi.lightning_state import stop_after_this_step

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Agreed over ranks with a max: Ctrl-C (the user's) wins over pre-emption.
_CODES = {signal.SIGTERM: 1, signal.SIGINT: 2}
_received: WeakKeyDictionary[pl.Trainer, signal.Signals] = WeakKeyDictionary()


class StoppedBySignal(Exception):
    """The run stopped after a step because of ``signal_name``; ``last.ckpt`` holds that step."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def received_signal(trainer: pl.Trainer) -> str | None:
    """``"SIGINT"`` or ``"SIGTERM"`` when a signal stopped (or is stopping) ``trainer``'s run, else None."""
    received = _received.get(trainer)
    return received.name if received is not None else None


class StopSignals(pl.Callback):
    """SIGINT handled like SIGTERM, and either signal on any rank stopping all ranks after the same step."""

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; Lightning's stay
        self._trainer = trainer
        _received.pop(trainer, None)
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        trainer = self._trainer
        received = signal.Signals(signum)
        if trainer is None:
            return
        if received == signal.SIGINT and _received.get(trainer) == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if trainer not in _received:
            launcher = trainer.strategy.launcher
            if launcher is not None:
                launcher.kill(signum)  # the ranks this process started, as Lightning's handler does
        if _CODES[received] > _CODES.get(_received.get(trainer), 0):
            _received[trainer] = received
        if trainer.world_size == 1:
            stop_after_this_step(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.world_size == 1 or self._trainer is None:
            return
        code = torch.tensor(_CODES.get(_received.get(trainer), 0), device=pl_module.device)
        # Not ``trainer.strategy.reduce``: on gloo it puts a barrier before the all-reduce, two
        # collectives per batch where the all-reduce alone waits for every rank (``training.distributed``).
        torch.distributed.all_reduce(code, op=torch.distributed.ReduceOp.MAX)
        agreed = int(code)
        if agreed:
            _received[trainer] = next(name for name, value in _CODES.items() if value == agreed)
            stop_after_this_step(trainer)  # Lightning stops every rank after this step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()  # a signal during the end-of-run work stops the process as it would any other

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        self._trainer = None
