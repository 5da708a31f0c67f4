"""What kind of sample site a trace node (or a messenger's message) is: one definition of each kind,
shared by the estimators, the guides, the guide-parameter map and the posterior summaries.

Pyro records more than the model's variables as ``"sample"`` nodes: a plate's subsample of rows
(observed), a ``pyro.deterministic`` value (observed, ``infer["_deterministic"]``) and an
autoguide's auxiliary draw (latent, ``infer["is_auxiliary"]``, e.g. the packed vector a joint
autoguide draws all latents from). Neither data nor latents of the model, they are left out here.
"""

from __future__ import annotations

from pyro.poutine.util import site_is_subsample


def is_observed(site: dict) -> bool:
    """A site that observes data: not a plate's subsample, not a ``pyro.deterministic`` value."""
    return (
        site["type"] == "sample"
        and site["is_observed"]
        and not site_is_subsample(site)
        and not site["infer"].get("_deterministic", False)
    )


def is_latent(site: dict) -> bool:
    """A latent variable: not observed, not a plate's subsample, not an autoguide's auxiliary draw."""
    return (
        site["type"] == "sample"
        and not site["is_observed"]
        and not site_is_subsample(site)
        and not site["infer"].get("is_auxiliary", False)
    )


def is_enumerated(site: dict) -> bool:
    """A site marked ``infer={"enumerate": "parallel"}``: ``TraceEnum_ELBO`` sums it out, so no guide may
    sample it. Read from any trace, run under enumeration or not (guides hide it with ``poutine.block``)."""
    return site["type"] == "sample" and site["infer"].get("enumerate") == "parallel"


def holds_enumerated_values(site: dict) -> bool:
    """A site of a trace run under parallel enumeration (``TraceEnum_ELBO``'s) that holds all its values at
    once, along a dimension of its own: its ``log_prob`` is not a log density. An ``is_enumerated`` site
    under an estimator that does not enumerate (``Trace_ELBO``) holds one drawn value instead."""
    return site["type"] == "sample" and site["infer"].get("_enumerate_dim") is not None
