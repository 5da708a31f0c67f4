"""The first loss evaluation, before the optimizer exists: parameters are created, problems named.

Autoguides and ``pyro.param`` statements create their parameters on first use; Lightning and DDP
must see them before the optimizer is built. One loss evaluation with Pyro's validation on creates
them; a failure there is the user's model or guide meeting its data, so it is reported as one
line that says where and what to change, not as a traceback from inside Pyro.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO

from lightning_svi.core.estimators import explain_vectorization_error
from lightning_svi.core.programs.inputs import ROW_INDEX, Batch
from lightning_svi.core.programs.program import PyroProgram
from lightning_svi.core.programs.sides import ParameterSides, split_sides
from lightning_svi.core.sites import is_observed
from lightning_svi.errors import ConfigError, UserInputError, one_line


def first_loss(svi: torch.nn.Module, estimator: ELBO, batch: Batch, validate: bool) -> None:
    """Evaluate the loss once (creating lazy parameters); ``ConfigError`` naming the cause if it fails."""
    try:
        with pyro.validation_enabled(validate):
            svi(batch)
    except UserInputError:
        raise
    except Exception as error:
        vectorization = explain_vectorization_error(error, estimator, retry=lambda: svi(batch))
        if vectorization is not None:
            raise ConfigError(vectorization) from error
        message = str(error)
        refused = validate and "Expected" in message and ("support" in message or "constraint" in message)
        hint = " Pyro's checks of the data failed; validate_first_step=false turns them off." if refused else ""
        raise ConfigError(f"the first SVI step failed: {one_line(error)}.{hint}") from error


def freeze_programs(*modules: torch.nn.Module) -> None:
    """From now on a wrapped program may not create parameters: the optimizer holds the existing ones."""
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, PyroProgram):
                sub.freeze()


def check_minibatch_scaling(model: torch.nn.Module, batch: Batch, num_rows: int) -> None:
    """Refuse a minibatch whose observed sites would not be scaled up to the full data set."""
    rows = len(batch[ROW_INDEX]) if ROW_INDEX in batch else num_rows
    if rows >= num_rows:
        return
    devices = list({tensor.device for tensor in batch.values() if tensor.device.type == "cuda"})
    with poutine.block(), torch.no_grad(), torch.random.fork_rng(devices=devices):
        trace = poutine.trace(model).get_trace(batch)
    unscaled = [name for name, site in trace.nodes.items() if is_observed(site) and site["scale"] == 1.0]
    if unscaled:
        raise ConfigError(
            f"batches of {rows} of the {num_rows} rows (data.batch_size, or a DDP rank's shard): observed site(s) "
            f"{', '.join(unscaled[:3])} are in no plate over the data rows, so the ELBO would be the batch's, "
            "not an estimate of the full data's. Put "
            "the data in a plate (pyro.plate('data', len(x)) is scaled automatically; set data.plate=NAME when "
            "several plates have the batch's size), or train on full batches (data.batch_size=null)."
        )


def warm_up(
    svi: torch.nn.Module, estimator: ELBO, batch: Batch, validate: bool, minibatch: Batch | None = None
) -> ParameterSides:
    """Create every parameter, check the model and guide, and return θ and φ (by use)."""
    try:
        first_loss(svi, estimator, batch, validate)
    except ConfigError:
        if not any(True for _ in svi.parameters()):
            raise _nothing_to_train() from None
        raise
    freeze_programs(svi.model, svi.guide)
    if minibatch is not None:
        check_minibatch_scaling(svi.model, minibatch, len(batch[ROW_INDEX]) if ROW_INDEX in batch else 0)
    sides = split_sides(svi.model, svi.guide, batch)
    if not sides.theta and not sides.phi:
        raise _nothing_to_train()
    return sides


def _nothing_to_train() -> ConfigError:
    return ConfigError(
        "nothing to train: neither the model nor the guide has parameters (guide=empty on a model without "
        "pyro.param / PyroParam / networks?); use a guide with parameters, e.g. guide=normal."
    )
