"""Write TensorBoard's custom-scalars layout: the first page a person reads, built from the
names this run actually logs."""

from __future__ import annotations

import re

import pytorch_lightning as pl
import torch

from lightning_svi.analysis.guide_sites import UNATTACHED, parameters_by_site
from lightning_svi.core.rng import untouched_rng
from lightning_svi.core.svi_model import Batch
from lightning_svi.logging.evidence import log_evidence
from lightning_svi.logging.step_logger import MAX_ELEMENT_SCALARS, tensor_scalars, tensorboard_writers

# {category: {chart title: ["Multiline", [tag regexes]] or ["Margin", [value, lower, upper]]}}, as
# torch's SummaryWriter.add_custom_scalars takes it; categories and charts keep their order.
Layout = dict[str, dict[str, list]]
SYMBOLS = {"theta": "θ", "phi": "φ"}


def exactly(*tags: str) -> list[str]:
    """Regexes that match exactly these tags (custom-scalars charts select tags by regex)."""
    return [f"^{re.escape(tag)}$" for tag in tags]


def scalar_layout(
    theta: dict[str, torch.Tensor],
    phi_by_site: dict[str, dict[str, torch.Tensor]],
    has_evidence: bool,
    gradient_sides: list[str],
    max_elements: int = MAX_ELEMENT_SCALARS,
) -> Layout:
    """The layout for a run whose θ and φ (grouped by latent site) are these, in reading order:
    the ELBO with log p and log q; the evidence and the gap (when known); one chart per θ; φ per
    latent site; the gradient norms of θ and φ together."""

    def chart(side: str, values: dict[str, torch.Tensor]) -> list:
        tags = [tag for name, value in values.items() for tag in tensor_scalars(f"{side}/{name}", value, max_elements)]
        return ["Multiline", exactly(*tags)]

    elbo_terms = exactly("train/elbo", "trace/log_p", "trace/log_q")
    layout: Layout = {"ELBO": {"ELBO = log p − log q": ["Multiline", elbo_terms]}}
    if has_evidence:
        layout["Evidence"] = {
            # A margin chart draws a value with a band from lower to upper: the band is the gap.
            "ELBO below log p_θ(x)": ["Margin", ["train/elbo", "train/elbo", "evidence/log_evidence"]],
            "gap = log p_θ(x) − ELBO = KL(q ‖ posterior)": ["Multiline", exactly("evidence/gap")],
        }
    if theta:
        layout["θ: model parameters"] = {name: chart("theta", {name: value}) for name, value in theta.items()}
    if phi_by_site:
        layout["φ: guide parameters by latent site"] = {
            site if site == UNATTACHED else f"q({site}): {', '.join(values)}": chart("phi", values)
            for site, values in phi_by_site.items()
        }
    if gradient_sides:
        title = " and ".join(f"‖∇{SYMBOLS[side]}‖" for side in gradient_sides)
        layout["Gradient norms"] = {title: ["Multiline", exactly(*(f"grad_norm/{side}" for side in gradient_sides))]}
    return layout


class ScalarLayoutWriter(pl.Callback):
    """Writes the run's custom-scalars layout (``scalar_layout``) once, when training starts: θ and φ
    exist by then (the module creates them in ``setup``), so their names and shapes are known."""

    def __init__(self, full_data: Batch, max_elements: int = MAX_ELEMENT_SCALARS) -> None:
        self.full_data = full_data
        self.max_elements = max_elements

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writers = tensorboard_writers(trainer)
        if writers:
            layout = self.layout(pl_module)
            for writer in writers:
                writer.add_custom_scalars(layout)

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
        )
