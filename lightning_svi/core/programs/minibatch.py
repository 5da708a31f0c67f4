"""Minibatches of a program that plates its data by the size of what it is given.

Pyro tutorials write ``with pyro.plate("data", len(x)):``. Given a minibatch of b of the N rows, that
plate has size b and the ELBO is the minibatch's, not an estimate of the full data's (the VAE: −4,400
against −35,023). ``MinibatchScale`` multiplies the log-density of every site inside such a plate
by N / b, which is what ``pyro.plate("data", N, subsample=rows)`` does for a model written for
subsampling; a plate that subsamples itself (full size N) is left alone.
"""

from __future__ import annotations

from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample


def data_plates(site: dict, rows: int, plate: str | None) -> list[str]:
    """The plates of ``site`` over the ``rows`` rows of a minibatch (``plate``: only the one so named)."""
    return [
        frame.name
        for frame in site["cond_indep_stack"]
        if (frame.full_size or frame.size) == rows and (plate is None or frame.name == plate)
    ]


class MinibatchScale(Messenger):
    """Scales sample sites inside the data plate of a minibatch of ``rows`` rows by ``total / rows``."""

    def __init__(self, rows: int, total: int, plate: str | None = None) -> None:
        super().__init__()
        self.rows = rows
        self.scale = total / rows
        self.plate = plate

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not site_is_subsample(msg) and data_plates(msg, self.rows, self.plate):
            msg["scale"] = msg["scale"] * self.scale
