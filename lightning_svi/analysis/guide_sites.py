"""Which latent site each guide parameter φ shapes, so that φ can be read site by site.

A guide need not declare it: one trace of the guide says it. A parameter shapes a site when the
site's sampled value or its log density depends on it (autograd finds the dependence). This works
for hand-written guides (``qa`` and ``qb`` both shape ``rate``), for per-site autoguides
(``locs.rate``), and for joint autoguides, whose ``loc`` and ``scale`` shape every latent at once.
"""

from __future__ import annotations

import pyro.poutine as poutine
import torch
from pyro.nn import PyroModule

from lightning_svi.core.params import named_parameters
from lightning_svi.core.sites import is_latent
from lightning_svi.core.svi_model import Batch

UNATTACHED = "other"


def sites_shaped_by(guide: PyroModule, batch: Batch) -> dict[str, tuple[str, ...]]:
    """For each parameter of ``guide`` (named as in ``named_parameters``), the latent sites whose
    sample or density depends on it, in trace order. Auxiliary sites (a joint autoguide's packed
    latent) are not latent sites of the model and are left out."""
    leaves = _leaf_parameters(guide)
    shaped: dict[str, list[str]] = {name: [] for name in leaves}
    trainable = {name: leaf for name, leaf in leaves.items() if leaf.requires_grad}
    if not trainable:
        return {name: () for name in leaves}
    with torch.enable_grad():
        trace = poutine.trace(guide).get_trace(batch)
        for site_name, site in trace.nodes.items():
            if not is_latent(site):
                continue
            outputs = [tensor.sum() for tensor in (site["value"], site["fn"].log_prob(site["value"]))]
            outputs = [output for output in outputs if output.requires_grad]
            if not outputs:
                continue
            gradients = torch.autograd.grad(
                sum(outputs), list(trainable.values()), allow_unused=True, retain_graph=True
            )
            for name, gradient in zip(trainable, gradients, strict=True):
                if gradient is not None:
                    shaped[name].append(site_name)
    return {name: tuple(sites) for name, sites in shaped.items()}


def _leaf_parameters(guide: PyroModule) -> dict[str, torch.nn.Parameter]:
    """The ``nn.Parameter`` behind each parameter named as in ``named_parameters`` (for a
    ``PyroParam``, its unconstrained tensor)."""
    return {name: parameter for name, (parameter, _) in named_parameters(guide).items()}


def parameters_by_site(guide: PyroModule, batch: Batch) -> dict[str, list[str]]:
    """Guide parameters grouped by the latent site they shape: ``{"rate": ["qa", "qb"]}``.

    A parameter that shapes several sites (a joint guide) goes under their names joined by ``, ``;
    one that shapes none goes under ``other``.
    """
    groups: dict[str, list[str]] = {}
    for name, sites in sites_shaped_by(guide, batch).items():
        groups.setdefault(", ".join(sites) or UNATTACHED, []).append(name)
    return groups
