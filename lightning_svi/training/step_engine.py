"""One SVI step, eager or compiled: the loss and gradients of θ and φ, then the update.

``SVIModule.training_step`` asks an engine for each step. A step the loggers look at goes through
``loss_and_gradients`` then ``update``, so the loggers can read the step's estimates and gradients
in between; a step nobody looks at goes through ``step``, which a compiled engine may run as one
graph that also applies the update. A compiled engine may apply the update inside the graph on
logged steps too (``update_in_graph``): then ``loss_and_gradients`` has already applied it, and the
loggers read the gradient norms and parameters the graph reported (``StepStatistics``).

How the update is applied is decided once per run (``UpdateRoute``): with plain float precision
the torch optimizer steps itself and the step is counted into Lightning's loop state
(``lightning_state.count_step``); under DDP the engine then averages the gradients itself, with one
all-reduce of a flat buffer between backward and update (``average_gradients``) that also averages
the step's loss and per-site log-probs, so that a Lightning batch may hold several steps and a logged
step costs no collective of its own. With a precision plugin (one that may scale the loss or step the
optimizer itself) every step goes through Lightning's ``manual_backward`` and optimizer wrapper,
which count it (and under DDP synchronise the gradients in DDP's hooks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from pyro.infer import ELBO
from pytorch_lightning.core.optimizer import LightningOptimizer
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from lightning_svi.core.estimators import LogProbs
from lightning_svi.core.step_statistics import StepStatistics
from lightning_svi.core.svi_model import Batch
from lightning_svi.lightning_state import count_step
from lightning_svi.training.distributed import step_estimates, with_estimates

if TYPE_CHECKING:
    from lightning_svi.compile.compiled_step import CompiledSVIStep


@dataclass
class UpdateRoute:
    """How a step's gradients are made and applied, and counted in ``trainer.global_step``.

    ``backward`` turns the loss into gradients; ``optimizer`` applies them (the torch optimizer, or
    Lightning's wrapper, which counts the step); ``count`` counts a step the wrapper did not.
    """

    backward: Callable[[torch.Tensor], None]
    optimizer: torch.optim.Optimizer | LightningOptimizer
    scheduler: LRScheduler | None
    count: Callable[[], None]

    @classmethod
    def plain(cls, optimizer: LightningOptimizer, scheduler: LRScheduler | None, trainer: object) -> UpdateRoute:
        """autograd and the torch optimizer directly: Lightning's closure machinery and hooks cost
        about as much as a small model's backward pass."""
        return cls(torch.Tensor.backward, optimizer.optimizer, scheduler, lambda: count_step(trainer))

    @classmethod
    def through_lightning(
        cls, optimizer: LightningOptimizer, scheduler: LRScheduler | None, manual_backward: Callable
    ) -> UpdateRoute:
        """Lightning's backward (DDP's hooks, a precision plugin's loss scaling) and optimizer wrapper."""
        return cls(manual_backward, optimizer, scheduler, lambda: None)

    def apply(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.advance_schedule()
        self.count()

    def advance_schedule(self) -> None:
        # Manual optimization: Lightning saves and restores the schedule but never steps it.
        if self.scheduler is not None:
            self.scheduler.step()


class EagerStep:
    """Pyro's ELBO and autograd, as ``SVI.step`` runs them; under DDP with the plain route,
    ``average_gradients`` averages the optimizer's gradients over ranks before the update."""

    compile_seconds: float | None = None  # tracing and compiling, for the run's summary
    compile_cache_hit: bool | None = None  # whether inductor's cache held the compiled step
    reports_evidence = False  # whether the step's statistics hold the closed-form evidence

    def __init__(
        self,
        svi: nn.Module,
        estimator: ELBO,
        route: UpdateRoute,
        average_gradients: Callable[[list[torch.Tensor]], None] | None = None,
    ) -> None:
        self.svi, self.estimator, self.route = svi, estimator, route
        self.average_gradients = average_gradients
        self.parameters = [parameter for group in route.optimizer.param_groups for parameter in group["params"]]

    def loss_and_gradients(
        self, batch: Batch, logged: bool = False
    ) -> tuple[torch.Tensor, LogProbs, StepStatistics | None]:
        """The loss, the traces' log-probs, and the statistics the step computed itself (none here:
        the loggers compute theirs from the module). ``logged``: the loggers read the traces, which
        under DDP are then averaged over ranks (``_average_over_ranks``)."""
        loss = self.svi(batch)
        self.route.backward(loss)
        loss, traces = self._average_over_ranks(loss.detach(), self.estimator.last_traces, logged)
        return loss, traces, None

    def _average_over_ranks(self, loss: torch.Tensor, traces: LogProbs, logged: bool) -> tuple[torch.Tensor, LogProbs]:
        """Under DDP (``average_gradients``), every parameter's gradient and the loss averaged over
        ranks in one all-reduce, and on a ``logged`` step the per-site sums of ``traces`` too: each
        rank's estimate covers its shard, their mean the global batch, as on one process. A step not
        logged keeps its rank's traces (summing them per site costs a contraction with enumerated
        sites; only the divergence guard reads them, to name a non-finite site). A parameter that
        this rank's step left without a gradient enters as zeros, so every rank's buffer has one layout."""
        if self.average_gradients is None:
            return loss, traces
        for parameter in self.parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        estimates = step_estimates(loss, traces if logged else None)
        self.average_gradients([*(parameter.grad for parameter in self.parameters), *estimates])
        return with_estimates(traces, estimates) if logged else (estimates[0], traces)

    def update(self) -> None:
        self.route.apply()

    def step(self, batch: Batch) -> torch.Tensor:
        """A step no logger reads: its loss is kept for the progress bar and the divergence guard."""
        with self.estimator.unread():
            loss, _, _ = self.loss_and_gradients(batch)
        self.update()
        return loss


class CompiledStep(EagerStep):
    """The step's loss, gradients and log-probs from one traced graph (``compile.compiled_step``);
    with torch's fused Adam, a step nobody reads is the graph alone, update included, and with
    ``update_in_graph`` so is a logged one."""

    def __init__(
        self,
        compiled: CompiledSVIStep,
        route: UpdateRoute,
        average_gradients: Callable[[list[torch.Tensor]], None] | None = None,
        update_in_graph: bool = False,
    ) -> None:
        self.compiled, self.route, self.estimator = compiled, route, compiled.estimator
        self.average_gradients = average_gradients  # under DDP: each rank's graph, then one all-reduce
        self.parameters = compiled.parameters
        self.update_in_graph = update_in_graph and compiled.optimizer is not None
        if compiled.optimizer is not None:
            # The graph applies the optimizer's update unseen by torch's schedulers, whose wrapper of
            # ``optimizer.step`` sets this flag; without it the first schedule step warns of a wrong order.
            compiled.optimizer._opt_called = True
        self.compile_seconds, self.compile_cache_hit = compiled.compile_seconds, compiled.cache_hit
        self.reports_evidence = compiled.reports_evidence

    def loss_and_gradients(self, batch: Batch, logged: bool = False) -> tuple[torch.Tensor, LogProbs, StepStatistics]:
        loss, traces, statistics = self.compiled(batch, update=self.update_in_graph)
        loss, traces = self._average_over_ranks(loss, traces, logged)
        return loss, traces, statistics

    def update(self) -> None:
        if not self.update_in_graph:
            super().update()
            return
        self.route.advance_schedule()  # the graph applied the update
        self.route.count()

    def step(self, batch: Batch) -> torch.Tensor | None:
        if self.compiled.optimizer is None:
            return super().step(batch)
        self.compiled.advance(batch)  # the graph keeps no loss: the batch's logged or last step has one
        self.route.advance_schedule()
        self.route.count()
        return None
