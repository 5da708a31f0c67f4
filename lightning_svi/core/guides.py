"""What the framework adds to Pyro's guides: the empty guide. Which sites no guide may sample says
``sites.is_enumerated``.

Every other guide is a ``_target_`` (an autoguide, or the user's own): see ``programs.build``.
"""

from __future__ import annotations

from pyro.nn import PyroModule


class EmptyGuide(PyroModule):
    """A guide with no sample sites: every latent is drawn from the prior when the model runs.

    People often take this for maximum likelihood; it is not. The ELBO becomes
    E_prior[log p_θ(x | z)], and θ maximises that expectation, not the marginal likelihood.
    """

    def forward(self, *args: object, **kwargs: object) -> None:
        return None
