"""``SVIModule``: a Pyro model and guide as one LightningModule whose loss is −ELBO."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pyro
import pytorch_lightning as pl
import torch
from pyro.infer import ELBO
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lightning_svi.checkpointing.identity import IDENTITY_KEY, check_identity, checkpoint_identity
from lightning_svi.core.estimators import LogProbs
from lightning_svi.core.optim import build_optimizer, build_scheduler
from lightning_svi.core.programs.program import parameters_in_scope
from lightning_svi.core.programs.sides import ParameterSides
from lightning_svi.core.programs.warmup import warm_up
from lightning_svi.core.rng import untouched_rng
from lightning_svi.core.step_statistics import StepStatistics
from lightning_svi.core.svi_model import Batch
from lightning_svi.data.datamodule import TensorDataModule
from lightning_svi.logging.step_logger import Metrics, StepLogger, is_logging_step, log_scalars, merged
from lightning_svi.training import host_all_reduce
from lightning_svi.training.distributed import average_gradients, seed_ranks_apart
from lightning_svi.training.observed_steps import (
    batch_seconds,
    resolve_steps_per_batch,
    steps_this_batch,
    steps_to_observed,
)
from lightning_svi.training.step_engine import CompiledStep, EagerStep, UpdateRoute


class SVIModule(pl.LightningModule):
    """Trains θ (the model's parameters) and φ (the guide's) together by maximising the ELBO.

    The pair lives in Pyro's ``ELBOModule`` (``self.svi``), so θ and φ are ordinary module
    parameters: Lightning checkpoints them and moves them between devices; under DDP the step engine
    all-reduces their gradients (``distributed.average_gradients``), or with a precision plugin
    DDP's hooks do. Lazily created parameters (autoguides) are made in ``setup`` by one loss
    evaluation on the training device, before the optimizer and DDP see the module (see
    ``programs.warmup``); that evaluation runs with Pyro's validation on unless
    ``validate_first_step`` is false, later steps only if ``validate_every_step``. θ and φ are
    decided there by which program uses each parameter (``sides``).


    Under DDP each rank evaluates the ELBO on its own shard; on logging steps ``last_loss`` and
    ``last_traces`` are averaged over ranks, the estimates of the global batch (see
    ``lightning_svi.training.distributed`` for why the gradients need no correction).
    """

    def __init__(
        self,
        model: nn.Module,
        guide: nn.Module,
        estimator: ELBO,
        warmup_batch: Batch,
        optim: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        validate_every_step: bool = False,
        validate_first_step: bool = True,
        compile_backend: str | None = None,
        after_step: Callable[[], None] | None = None,
        steps_per_batch: int | None = None,
        observed_every: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.svi = estimator(model, guide)
        self.estimator = estimator
        self.optim_options = dict(optim or {})
        self.scheduler_options = dict(scheduler) if scheduler else None  # None: a constant rate
        self._warmup_batch = warmup_batch
        self.validate_every_step = validate_every_step
        self.validate_first_step = validate_first_step
        self.compile_backend = compile_backend
        self.after_step = after_step  # optim.after_step: user code run after every optimizer step
        self.engine: EagerStep | None = None  # built in on_train_start, once the optimizer exists
        self.compile_fallback: str | None = None  # why compile.enabled=true could not trace this model
        self.steps_per_batch_option = steps_per_batch
        self.steps_per_batch = 1  # decided in setup, once the number of processes is known
        self.minibatch_rows: int | None = None  # rows of a step's minibatch when a batch holds several (setup)
        self.batch_steps = 1  # steps the latest batch ran (for the divergence guard's message)
        self.observed_every = observed_every  # checkpoint and picture intervals (see observed_steps)
        # The step applies its own update: Lightning's closure machinery for automatic optimization
        # costs about as much as a small model's backward pass.
        self.automatic_optimization = False
        self.last_loss: torch.Tensor | None = None
        self.last_traces: LogProbs | None = None
        self.last_statistics: StepStatistics | None = None  # what the step computed itself (compiled mode)
        # The trainer's step loggers, merged into one hook each (set in on_train_start).
        self.log_before_step: Callable[..., Metrics] = merged([], "before_step")
        self.log_before_update: Callable[..., Metrics] = merged([], "before_update")
        self.log_after_update: Callable[..., Metrics] = merged([], "after_update")
        self.sides: ParameterSides | None = None  # θ and φ by use, found in setup

    @property
    def model(self) -> nn.Module:
        return self.svi.model

    @property
    def guide(self) -> nn.Module:
        return self.svi.guide

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device
        self.to(device)
        batch = {name: tensor.to(device) for name, tensor in self._warmup_batch.items()}
        # Creates lazy parameters (autoguides, pyro.param statements) before the optimizer and DDP
        # see the module, checks the model and guide once with Pyro's validation, finds θ and φ.
        datamodule = self.trainer.datamodule
        full_batch = _whole_data_per_batch(datamodule)
        # A step sees a minibatch, or under DDP a shard: the model must scale it up to the full data.
        rows = min(datamodule.batch_size or datamodule.num_rows, datamodule.num_rows // self.trainer.world_size)
        step_batch = _first_rows(datamodule, rows) if rows < datamodule.num_rows else None
        if step_batch is not None:
            step_batch = {name: tensor.to(device) for name, tensor in step_batch.items()}
        self.sides = warm_up(self.svi, self.estimator, batch, self.validate_first_step, step_batch)
        # Pyro's per-step argument and support checks cost about as much as a small model's step.
        pyro.enable_validation(self.validate_every_step)
        seed_ranks_apart(self.trainer.global_rank, self.trainer.world_size)
        groupable = isinstance(datamodule, TensorDataModule)
        # Under DDP a full-batch step reads the rank's shard, the same one every step when the rows
        # split evenly between ranks (``EndlessBatchSampler``); else each step draws its own.
        same_batch = full_batch and (
            self.trainer.world_size == 1 or (groupable and datamodule.num_rows % self.trainer.world_size == 0)
        )
        step_rows = None if same_batch else rows  # a step's own minibatch (or shard), when it has one
        self.steps_per_batch = resolve_steps_per_batch(
            self.steps_per_batch_option,
            self.trainer.world_size,
            step_rows,
            groupable,
            compiled=self.compile_backend is not None,
            plain_precision=self._plain_precision(),
        )
        self.batch_seconds = batch_seconds(self.steps_per_batch_option, self.trainer.world_size, step_rows)
        if not same_batch and self.steps_per_batch > 1:
            # The sampler sizes each batch as training_step will: up to the next observed step.
            self.minibatch_rows = rows
            every, max_steps, limit = self.observed_every, self.trainer.max_steps, self.steps_per_batch
            datamodule.group_minibatches(partial(steps_to_observed, every=every, max_steps=max_steps, limit=limit))
        if self.compile_backend is not None and not self._plain_precision():
            from lightning_svi.compile.compiled_step import CompileError  # see _step_engine

            raise CompileError(
                "compile.enabled=true runs in plain float precision; "
                "use compile.enabled=false with a trainer.precision plugin."
            )

    def on_train_start(self) -> None:
        loggers = [callback for callback in self.trainer.callbacks if isinstance(callback, StepLogger)]
        self.log_before_step = merged(loggers, "before_step")
        self.log_before_update = merged(loggers, "before_update")
        self.log_after_update = merged(loggers, "after_update")
        self.engine = self._step_engine(all(logger.reads_results_before_update() for logger in loggers))

    def _plain_precision(self) -> bool:
        return type(self.trainer.precision_plugin) is Precision

    def _step_engine(self, update_in_graph: bool) -> EagerStep:
        """The eager or compiled engine; ``update_in_graph``: no step logger reads θ, φ or ``.grad``
        between a compiled step's gradients and its update, so a logged step may be one graph call."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        distributed = self.trainer.world_size > 1
        averaging = None
        if not self._plain_precision():
            route = UpdateRoute.through_lightning(optimizer, scheduler, self.manual_backward)
        else:
            # Plain float precision needs nothing of Lightning's backward or optimizer step. Under DDP
            # the gradients then never pass through DDP's hooks: DDP is told not to wait for them (as
            # inside its no_sync()), and one all-reduce of a flat buffer averages them instead, so a
            # Lightning batch may hold several steps.
            route = UpdateRoute.plain(optimizer, scheduler, self.trainer)
            if distributed:
                self.trainer.strategy.model.require_backward_grad_sync = False
                averaging = partial(average_gradients, all_reduce=host_all_reduce.for_this_process(self.device))
        if self.compile_backend is None:
            return EagerStep(self.svi, self.estimator, route, averaging)
        # Imported only when compiling: torch._inductor adds 0.2 s to an eager run's start.
        from lightning_svi.compile.compiled_step import CompiledSVIStep, CompileError

        # Traced here, once the optimizer (and a resumed run's state) exists: the graph may apply its update.
        example = next(iter(self.trainer.datamodule.train_dataloader()))
        example = {name: tensor.to(self.device) for name, tensor in example.items()}
        if self.minibatch_rows is not None:  # a batch of minibatches: the graph takes one
            example = {name: tensor[: self.minibatch_rows] for name, tensor in example.items()}
        # Under DDP the gradients are averaged between the graph and the update: the update stays out of the graph.
        in_graph_optimizer = None if distributed else optimizer.optimizer
        whole_data = _whole_data_per_batch(self.trainer.datamodule)
        try:
            with untouched_rng(self.device):  # a failed trace leaves the eager run's draws as they were
                compiled = CompiledSVIStep(
                    self.svi, self.estimator, example, self.compile_backend, in_graph_optimizer,
                    sides=self.sides, evidence_of_batch=whole_data and not distributed,
                    fixed_batch=whole_data and not distributed,
                )  # fmt: skip
        except CompileError as error:
            self.compile_fallback = str(error)
            rank_zero_warn(f"compile.enabled=true: {error}; this run trains eagerly (summary.json: compile.fallback).")
            return EagerStep(self.svi, self.estimator, route, averaging)
        return CompiledStep(compiled, route, averaging, update_in_graph=update_in_graph)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """The SVI steps up to the next one that a Lightning callback observes (a checkpoint, a
        picture, the last step; see ``observed_steps``), or with a time limit (``batch_seconds``) until
        the batch has run that long, each on ``batch`` (full-batch data) or on its own minibatch of it.
        Logged steps call the step loggers wherever they fall; the batch's last step keeps its loss for
        the divergence guard, which checks once per batch (no host sync per step: a non-finite value
        stays non-finite)."""
        self.batch_steps = steps_this_batch(self.trainer, self.observed_every, self.steps_per_batch)
        ends_by = None if self.batch_seconds is None else time.perf_counter() + self.batch_seconds
        for index, step_batch in enumerate(self._step_batches(batch)):
            step = self.trainer.global_step + 1
            self.last_traces = None  # the last step's traces are not kept alive through this one
            last = index == self.batch_steps - 1 or (ends_by is not None and time.perf_counter() >= ends_by)
            if is_logging_step(self.trainer, step):
                self._logged_step(step_batch, step)
            elif last:
                self.last_loss, self.last_traces, self.last_statistics = self.engine.loss_and_gradients(step_batch)
                self.engine.update()
            else:
                self.engine.step(step_batch)
            self._run_after_step()
            if last:
                self.batch_steps = index + 1  # a batch with a time limit may end before its planned last step
                break
        return self.last_loss

    def _step_batches(self, batch: Batch) -> list[Batch]:
        """What each of the batch's ``batch_steps`` steps reads: the batch itself with full-batch data,
        else its consecutive minibatches (views, in the order the sampler drew them)."""
        if self.minibatch_rows is None:
            return [batch] * self.batch_steps
        rows = self.minibatch_rows
        if len(batch["index"]) != rows * self.batch_steps:
            raise RuntimeError(
                f"a batch of {len(batch['index'])} rows at step {self.trainer.global_step}: expected "
                f"{self.batch_steps} minibatches of {rows} (the sampler and the step count disagree)"
            )
        columns = {name: tensor.split(rows) for name, tensor in batch.items()}
        return [dict(zip(columns, parts, strict=True)) for parts in zip(*columns.values(), strict=True)]

    def _logged_step(self, batch: Batch, step: int) -> None:
        """A step the loggers read: θ before the step, its estimates (averaged over ranks under DDP),
        the gradients before the update and the parameters after it, sent to the host in one copy."""
        metrics = self.log_before_step(self.trainer, self, step)
        self.last_loss, self.last_traces, self.last_statistics = self.engine.loss_and_gradients(batch, logged=True)
        metrics.update(self.log_before_update(self.trainer, self, self.optimizers().optimizer, step))
        self.engine.update()
        metrics.update(self.log_after_update(self.trainer, self, step))
        log_scalars(self.trainer, metrics, step)

    def _run_after_step(self) -> None:
        """``optim.after_step``, with its ``pyro.param(name)`` reads answered by the programs' parameters
        (Pyro's ``sparse_gamma_def`` example clamps ``pyro.param("alpha").data`` after each step)."""
        if self.after_step is None:
            return
        with parameters_in_scope(self.model, self.guide):
            self.after_step()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[IDENTITY_KEY] = checkpoint_identity(self.model, self.guide, checkpoint["state_dict"])
        # Runs before the checkpoint is written: the logs on disk are never behind a checkpoint, so a
        # run killed after this write and resumed from it has no gap in its curves.
        for logger in self.loggers:
            logger.save()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs before Lightning loads the state: a mismatch is reported here, not as a size-mismatch traceback.
        current = checkpoint_identity(self.model, self.guide, self.state_dict())
        check_identity(checkpoint.get(IDENTITY_KEY), current, self.trainer.ckpt_path)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.sides.theta_parameters, self.sides.phi_parameters, self.optim_options)
        scheduler = build_scheduler(optimizer, self.trainer.max_steps, self.scheduler_options)
        if scheduler is None:
            return optimizer
        # Manual optimization: Lightning checkpoints the schedule; the step engine steps it after each update.
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def _whole_data_per_batch(datamodule: pl.LightningDataModule) -> bool:
    """Whether each batch holds every row (no ``data.batch_size``, or one as large as the data)."""
    return datamodule.batch_size is None or datamodule.batch_size >= datamodule.num_rows


def _first_rows(datamodule: pl.LightningDataModule, rows: int) -> Batch:
    """``rows`` rows to check the model's scaling on, drawn without touching the loop's data."""
    table = getattr(datamodule, "table", None)
    if table is not None:
        return table.__getitems__(torch.arange(rows))
    return next(iter(datamodule.train_dataloader()))
