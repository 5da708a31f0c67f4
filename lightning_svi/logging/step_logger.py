"""When to log, and how to write scalars, histograms and pictures from rank 0."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_svi.logging.tensorboard_logger import BufferedTensorBoardLogger, finite_elements

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch.utils.tensorboard import SummaryWriter

MAX_ELEMENT_SCALARS = 16

Metrics = dict[str, torch.Tensor | float]  # scalars of one step, by tag


def is_logging_step(trainer: pl.Trainer, step: int | None = None) -> bool:
    """True on the first step, every ``trainer.log_every_n_steps`` steps, and on the last step.

    ``step`` counts completed optimizer steps (``trainer.global_step`` after the update).
    """
    step = trainer.global_step if step is None else step
    return step == 1 or step % trainer.log_every_n_steps == 0 or step == trainer.max_steps


class StepLogger(pl.Callback):
    """A callback that logs SVI steps. ``SVIModule`` calls its hooks on every logging step
    (``is_logging_step``), also on the steps inside a batch of several, which Lightning's own hooks
    never see: a logged step then costs its logging, not a Lightning batch of its own.

    The hooks return the step's scalars (or None); ``SVIModule`` writes those of all loggers with
    one ``log_scalars`` call, one copy to the host for the step. ``step`` is the step being logged,
    counted as ``trainer.global_step`` counts it after the update.
    """

    def before_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> Metrics | None:
        """Before the step's loss: θ and φ are those the step's ELBO will be estimated at."""
        return None

    def before_update(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer, step: int
    ) -> Metrics | None:
        """After the step's loss and gradients, before the optimizer applies them (but see
        ``reads_results_before_update``)."""
        return None

    def reads_results_before_update(self) -> bool:
        """Whether ``before_update`` reads only the step's results (``pl_module.last_loss``,
        ``last_traces``, ``last_statistics``), not θ, φ or their ``.grad``. When every logger's does,
        compiled mode applies the update inside the same graph call, and ``before_update`` runs after
        it. A logger that overrides ``before_update`` keeps the update apart unless it says so."""
        return type(self).before_update is StepLogger.before_update

    def after_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> Metrics | None:
        """After the optimizer has applied the step's gradients."""
        return None


class Cadence:
    """Which logged steps also log something that costs more than their scalars (a histogram of a
    large tensor, a posterior draw): the first logged step, the first at or past each multiple of
    ``every_n_steps``, and (with ``last_step``) the run's last step; none when ``every_n_steps`` is
    None. A short run still shows its first and last, and a logged step in between costs its
    scalars only."""

    def __init__(self, every_n_steps: int | None, name: str, last_step: bool = True) -> None:
        valid = isinstance(every_n_steps, int) and not isinstance(every_n_steps, bool) and every_n_steps >= 1
        if every_n_steps is not None and not valid:
            raise ValueError(f"{name} must be a positive number of steps or null (never), got {every_n_steps!r}")
        self.every_n_steps = every_n_steps
        self.last_step = last_step
        self.latest: int | None = None  # the last step it was due at

    def due(self, trainer: pl.Trainer, step: int) -> bool:
        """Whether the logged step ``step`` is one of them (it then counts as the latest)."""
        every, last = self.every_n_steps, self.latest
        if every is None:
            return False
        if last is None or (self.last_step and step == trainer.max_steps) or step // every > last // every:
            self.latest = step
            return True
        return False


def merged(loggers: list[StepLogger], name: str) -> Callable[..., Metrics]:
    """One step hook standing for the hook ``name`` (``"before_update"``, ...) of several loggers: calls
    them in order and merges the scalars they return. Loggers that do not override it are left out,
    so a logged step calls only hooks with something to do."""
    default = getattr(StepLogger, name)
    hooks = [getattr(logger, name) for logger in loggers if getattr(type(logger), name) is not default]

    def hook(*args: Any, **kwargs: Any) -> Metrics:
        metrics: Metrics = {}
        for each in hooks:
            metrics.update(each(*args, **kwargs) or {})
        return metrics

    return hook


def log_scalars(trainer: pl.Trainer, metrics: Metrics, step: int) -> None:
    """Write scalars to every logger with Lightning's ``log_metrics``, once (rank 0), all at one step,
    after one copy to the host (``BufferedTensorBoardLogger`` keeps them as one event). Scalars that a
    callback monitors (``EarlyStopping(monitor="train/elbo")``) also go to ``trainer.callback_metrics``,
    on every rank."""
    if not metrics:
        return
    _update_monitored(trainer, metrics)
    if not trainer.is_global_zero:
        return
    values = dict(zip(metrics, as_floats(list(metrics.values())), strict=True))
    for logger in trainer.loggers:
        logger.log_metrics(values, step=step)


def _update_monitored(trainer: pl.Trainer, metrics: Metrics) -> None:
    """``SVIModule`` does not call ``self.log`` (its bookkeeping costs more than a small model's step),
    so Lightning's ``callback_metrics`` get the monitored scalars from here."""
    for callback in trainer.callbacks:
        tag = getattr(callback, "monitor", None)
        if isinstance(tag, str) and tag in metrics:
            value = metrics[tag]
            trainer.callback_metrics[tag] = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(value)


class EarlyStoppingChecks(pl.Callback):
    """Runs each ``EarlyStopping``'s check at the end of a batch in which its monitored scalar was logged.

    Lightning's ``EarlyStopping`` checks at the end of a training epoch or a validation run; an SVI run
    is one endless epoch without validation, so it would never check. Every rank logs the same
    values at the same steps, so under DDP all ranks run the check (a collective) together."""

    def __init__(self) -> None:
        self._checked: dict[int, torch.Tensor] = {}  # EarlyStopping id -> the value its last check saw

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        for callback in trainer.callbacks:
            if not isinstance(callback, EarlyStopping):
                continue
            value = trainer.callback_metrics.get(callback.monitor)
            if value is not None and self._checked.get(id(callback)) is not value:
                self._checked[id(callback)] = value
                callback._run_early_stopping_check(trainer)


def as_floats(values: list[torch.Tensor | float]) -> list[float]:
    """Python floats, with a single device-to-host copy for all the tensors among ``values`` (on the
    CPU there is nothing to copy, and reading each costs a sixth of stacking them)."""
    tensors = [value for value in values if isinstance(value, torch.Tensor)]
    if any(tensor.numel() != 1 for tensor in tensors):
        raise ValueError(f"scalars must have one element each, got shapes {[tuple(t.shape) for t in tensors]}")
    if all(tensor.device.type == "cpu" for tensor in tensors):
        copied = iter([tensor.item() for tensor in tensors])
    else:
        copied = iter(_stacked_scalars(tensors).tolist())
    return [next(copied) if isinstance(value, torch.Tensor) else float(value) for value in values]


@torch.no_grad()
def _stacked_scalars(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One-element tensors as one float tensor on the CPU: a single stack when they share a shape
    and a device (the usual case: a logging step's dozen scalars cost one op, not four each)."""
    first = tensors[0]
    if all(tensor.shape == first.shape and tensor.device == first.device for tensor in tensors):
        return torch.stack(tensors).reshape(-1).float().cpu()
    # Shapes () and (1,) mixed, or a few on the CPU beside the training device.
    return torch.stack([tensor.reshape(()).to(first.device) for tensor in tensors]).float().cpu()


def tensorboard_writers(trainer: pl.Trainer) -> list[SummaryWriter]:
    """The TensorBoard writers of the run, on rank 0 only (empty elsewhere)."""
    if not trainer.is_global_zero:
        return []
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def tensor_scalars(tag: str, value: torch.Tensor, max_elements: int = MAX_ELEMENT_SCALARS) -> Metrics:
    """The scalars that stand for a tensor: itself if it is a scalar, one per element if it has at
    most ``max_elements``, else its ``min``, ``median`` and ``max`` (so a chart can still follow it).
    Tensors stay where they are, for ``log_scalars`` to copy with the rest: a large tensor's spread is
    three one-element tensors (``aminmax``, one pass, and ``median``), not the tensor on the host."""
    if value.numel() == 1:
        return {tag: value}
    flat = value.detach().flatten()
    if flat.numel() > max_elements:
        low, high = torch.aminmax(flat)
        return {f"{tag}/min": low, f"{tag}/median": lower_median(flat, high), f"{tag}/max": high}
    return {f"{tag}/{position}": element for position, element in enumerate(flat.float().cpu().tolist())}


def lower_median(flat: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``flat.median()``: the lower of the two middle values, NaN where ``high`` (its maximum, from
    ``aminmax``) is. On the CPU numpy's selection finds it several times faster than torch's median,
    which on a VAE's weight tensors was most of a compiled logged step's logging."""
    if flat.device.type != "cpu" or flat.dtype not in (torch.float32, torch.float64) or high.isnan():
        return flat.median()
    values = flat.numpy()
    middle = (values.size - 1) // 2
    return torch.from_numpy(numpy.partition(values, middle)[middle : middle + 1]).reshape(())


def log_tensor(
    trainer: pl.Trainer,
    tag: str,
    value: torch.Tensor,
    step: int,
    max_elements: int = MAX_ELEMENT_SCALARS,
    histogram: bool = True,
) -> Metrics:
    """A histogram of a tensor-valued quantity too large for a scalar per element (TensorBoard loggers
    only, and only when ``histogram``: the caller's ``Cadence``); returns the scalars to log for it
    (``tensor_scalars``). Small tensors get no histogram: their elements' charts say all it would,
    and a histogram costs more than a small model's step."""
    if histogram and value.numel() > max_elements and trainer.is_global_zero:
        for logger in trainer.loggers:
            if isinstance(logger, BufferedTensorBoardLogger):
                logger.add_histogram(tag, value, step)
            elif isinstance(logger, TensorBoardLogger) and (finite := finite_elements(value)).numel():
                logger.experiment.add_histogram(tag, finite, step)  # Lightning's own, named by a user's config
    return tensor_scalars(tag, value, max_elements)


def log_figure(trainer: pl.Trainer, tag: str, figure: Figure, step: int) -> None:
    """Render a matplotlib figure off screen (Agg, no pyplot state) into TensorBoard's images, from rank 0."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    writers = tensorboard_writers(trainer)
    if not writers:
        return
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    image = numpy.asarray(canvas.buffer_rgba())[..., :3]
    for writer in writers:
        writer.add_image(tag, image, global_step=step, dataformats="HWC")
