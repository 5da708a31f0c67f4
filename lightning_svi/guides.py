"""Guides q_φ(z), chosen by ``guide.kind`` from a table of factories.

The same kinds serve every model: ``full`` is the model's own family, the others are generic.
"""

from __future__ import annotations

from collections.abc import Callable

from pyro import poutine
from pyro.infer import autoguide
from pyro.nn import PyroModule

from lightning_svi.checks import nothing_to_train
from lightning_svi.models.base import SVIModel


class EmptyGuide(PyroModule):
    """A guide with no sample sites: every latent is drawn from the prior when the model runs.

    People often take this for maximum likelihood; it is not. The ELBO becomes
    E_prior[log p_θ(x | z)], and θ maximises that expectation, not the marginal likelihood.
    """

    def forward(self, *args: object, **kwargs: object) -> None:
        return None


def is_enumerated(message: dict) -> bool:
    """True for a sample site that ``TraceEnum_ELBO`` sums out: no guide may sample it."""
    return message["type"] == "sample" and message["infer"].get("enumerate") == "parallel"


def _autoguide(cls: type, follows_minibatch: bool) -> Callable[..., PyroModule]:
    def build(model: SVIModel, **options: object) -> PyroModule:
        if follows_minibatch:
            # Local latents follow the model's minibatch indices instead of drawing their own.
            options["create_plates"] = model.data_plate
        if "init_scale" in options:  # Pyro refuses an int, as in guide.init_scale=1
            options["init_scale"] = float(options["init_scale"])
        return cls(poutine.block(model, hide_fn=is_enumerated), **options)

    return build


GUIDES: dict[str, Callable[..., PyroModule]] = {
    "full": lambda model, **options: model.full_guide(**options),
    "empty": lambda model, **options: EmptyGuide(),
    "delta": _autoguide(autoguide.AutoDelta, follows_minibatch=True),
    "normal": _autoguide(autoguide.AutoNormal, follows_minibatch=True),
    # AutoContinuous guides flatten all latents into one vector: full batch only.
    "diag_normal": _autoguide(autoguide.AutoDiagonalNormal, follows_minibatch=False),
    "lowrank": _autoguide(autoguide.AutoLowRankMultivariateNormal, follows_minibatch=False),
}


def build_guide(kind: str, model: SVIModel, **options: object) -> PyroModule:
    """The guide of kind ``kind`` (a key of ``GUIDES``) for ``model``."""
    if kind == "empty" and not any(True for _ in model.parameters()):
        raise nothing_to_train(model.name)
    return GUIDES[kind](model, **options)
