"""Write TensorBoard's custom-scalars layout: the first page a person reads, built from the
names this run actually logs."""

from __future__ import annotations

import re
from collections.abc import Collection

import pytorch_lightning as pl
import torch

from lightning_svi.analysis.guide_sites import UNATTACHED, parameters_by_site
from lightning_svi.analysis.type2_mle import type2_maximum_likelihood
from lightning_svi.core.rng import untouched_rng
from lightning_svi.core.svi_model import Batch
from lightning_svi.logging.evidence import log_evidence
from lightning_svi.logging.step_logger import (
    MAX_ELEMENT_SCALARS,
    Metrics,
    StepLogger,
    tensor_scalars,
    tensorboard_writers,
)

# {category: {chart title: ["Multiline", [tag regexes]] or ["Margin", [value, lower, upper]]}}, as
# torch's SummaryWriter.add_custom_scalars takes it; categories and charts keep their order.
#
# TensorBoard colours a custom-scalars line by its run (the run selector on the left is the legend) and
# tells the lines of one run apart by marker only. So a chart holds one quantity: its lines are the runs,
# each in its own colour. A quantity known with a band (the ELBO below the evidence, θ beside its type-II
# MLE, a large tensor's median between its min and max) is a Margin chart: one line per run and a band.
Layout = dict[str, dict[str, list]]
SYMBOLS = {"theta": "θ", "phi": "φ"}
REFERENCE = "reference"  # reference/theta/<name>: the type-II MLE; reference/max_log_evidence: log p at it


def exactly(*tags: str) -> list[str]:
    """Regexes that match exactly these tags (custom-scalars charts select tags by regex)."""
    return [f"^{re.escape(tag)}$" for tag in tags]


def quantity_chart(tag: str, value: torch.Tensor, max_elements: int, reference: str | None = None) -> list:
    """The chart of one logged quantity: a scalar with its reference as a band from it to the reference;
    a tensor summarised by ``min``/``median``/``max`` as its median in a band; else its elements' lines."""
    tags = list(tensor_scalars(tag, value, max_elements))
    if tags == [f"{tag}/min", f"{tag}/median", f"{tag}/max"]:
        return ["Margin", [f"{tag}/median", f"{tag}/min", f"{tag}/max"]]
    if reference is not None and tags == [tag]:
        return ["Margin", [tag, tag, reference]]
    return ["Multiline", exactly(*tags)]


def scalar_layout(
    theta: dict[str, torch.Tensor],
    phi_by_site: dict[str, dict[str, torch.Tensor]],
    has_evidence: bool,
    gradient_sides: list[str],
    max_elements: int = MAX_ELEMENT_SCALARS,
    references: Collection[str] = (),
) -> Layout:
    """The layout for a run whose θ and φ (grouped by latent site) are these, in reading order:
    the ELBO, log p and log q; the evidence and the gap (when known); one chart per θ (with its type-II
    MLE where ``references`` names ``reference/theta/<name>``); φ per latent site and parameter; the
    gradient norm of each side."""
    layout: Layout = {
        "ELBO": {
            "ELBO = log p − log q": ["Multiline", exactly("train/elbo")],
            "log p (model trace)": ["Multiline", exactly("trace/log_p")],
            "log q (guide trace)": ["Multiline", exactly("trace/log_q")],
        }
    }
    if has_evidence:
        layout["Evidence"] = {
            # A margin chart draws a value with a band from lower to upper: the band is the gap.
            "ELBO below log p_θ(x)": ["Margin", ["train/elbo", "train/elbo", "evidence/log_evidence"]],
            "gap = log p_θ(x) − ELBO = KL(q ‖ posterior)": ["Multiline", exactly("evidence/gap")],
        }
        maximum = f"{REFERENCE}/max_log_evidence"
        if maximum in references:
            layout["Evidence"]["log p_θ(x) below its maximum (type-II MLE)"] = [
                "Margin",
                ["evidence/log_evidence", "evidence/log_evidence", maximum],
            ]
    if theta:
        charts = layout["θ: model parameters"] = {}
        for name, value in theta.items():
            reference = f"{REFERENCE}/theta/{name}"
            if reference in references:
                charts[f"{name} (band: to the type-II MLE)"] = quantity_chart(
                    f"theta/{name}", value, max_elements, reference
                )
            else:
                charts[name] = quantity_chart(f"theta/{name}", value, max_elements)
    if phi_by_site:
        layout["φ: guide parameters by latent site"] = {
            (f"{site}: {name}" if site == UNATTACHED else f"q({site}): {name}"): quantity_chart(
                f"phi/{name}", value, max_elements
            )
            for site, values in phi_by_site.items()
            for name, value in values.items()
        }
    if gradient_sides:
        layout["Gradient norms"] = {
            f"‖∇{SYMBOLS[side]}‖": ["Multiline", exactly(f"grad_norm/{side}")] for side in gradient_sides
        }
    return layout


def type2_references(pl_module: pl.LightningModule, data: Batch) -> dict[str, float]:
    """``reference/theta/<name>`` (the type-II MLE of θ) and ``reference/max_log_evidence`` for a model
    with a closed-form evidence and some θ; nothing for any other."""
    theta = pl_module.sides.theta_values()
    if not theta or getattr(pl_module.model, "log_evidence", None) is None:
        return {}
    try:
        mle, evidence = type2_maximum_likelihood(pl_module.model, data)
    except ValueError:  # no closed form after all
        return {}
    references = {f"{REFERENCE}/theta/{name}": value for name, value in mle.items() if name in theta}
    return {**references, f"{REFERENCE}/max_log_evidence": evidence} if references else {}


class ScalarLayoutWriter(StepLogger):
    """Writes the run's custom-scalars layout (``scalar_layout``) once, when training starts: θ and φ
    exist by then (the module creates them in ``setup``), so their names and shapes are known. Where
    the type-II MLE is known, it is logged as reference lines (``reference/*``) on every logging step:
    a Margin chart draws its band only where its value, lower and upper tags share their steps."""

    def __init__(self, full_data: Batch, max_elements: int = MAX_ELEMENT_SCALARS) -> None:
        self.full_data = full_data
        self.max_elements = max_elements
        self.references: dict[str, float] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Every rank computes the same references (deterministic L-BFGS), so every rank logs the same tags.
        data = {name: tensor.to(pl_module.device) for name, tensor in self.full_data.items()}
        self.references = type2_references(pl_module, data)
        writers = tensorboard_writers(trainer)
        if writers:
            layout = self.layout(pl_module)
            for writer in writers:
                writer.add_custom_scalars(layout)

    def after_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> Metrics | None:
        return dict(self.references) or None

    def layout(self, pl_module: pl.LightningModule) -> Layout:
        data = {name: tensor.to(pl_module.device) for name, tensor in self.full_data.items()}
        with untouched_rng(pl_module.device):
            groups = parameters_by_site(pl_module.guide, data)
        sides = pl_module.sides
        phi = sides.phi_values()
        return scalar_layout(
            theta=sides.theta_values(),
            phi_by_site={site: {name: phi[name] for name in names if name in phi} for site, names in groups.items()},
            has_evidence=log_evidence(pl_module, self.full_data) is not None,
            gradient_sides=[side for side, named in (("theta", sides.theta), ("phi", sides.phi)) if named],
            max_elements=self.max_elements,
            references=self.references,
        )
