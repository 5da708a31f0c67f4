"""Variational autoencoder: an amortised model whose decoder weights are θ and encoder weights φ.

    z_i ~ Normal(0, I_d)                          (latent site ``z``, one per image)
    x_i ~ Bernoulli(sigmoid(decoder_θ(z_i)))      (observed site ``pixels``, 64 binary pixels)
    q_φ(z_i | x_i) = Normal(encoder_φ(x_i))       (the ``full`` guide)

The guide is amortised: its parameters are a network, not one value per data point, so it trains
on minibatches (``data.batch_size``) and scales to data sets and devices of any size. The embedded
data are binary 8×8 images made by a fixed random network from a 2-dimensional latent, so a
2-dimensional VAE can explain them; nothing is downloaded.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from lightning_svi.config import model_specs as specs
from lightning_svi.core.svi_model import Batch, SVIModel


def _network(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.Softplus(), nn.Linear(hidden, outputs))


class VAE(SVIModel):
    """Bernoulli pixels from a ``latent_dim``-dimensional Normal latent through a decoder network (θ)."""

    name = specs.VAE.name
    plate_name = "images"
    table = specs.VAE.table

    def __init__(self, num_data: int, latent_dim: int = 2, hidden_dim: int = 64) -> None:
        super().__init__(num_data)
        self.latent_dim = int(latent_dim)
        self.hidden_dim = int(hidden_dim)
        self.decoder = _network(self.latent_dim, self.hidden_dim, specs.NUM_PIXELS)

    @classmethod
    def synthetic_data(cls, seed: int, num_images: int = 2000, true_latent_dim: int = 2) -> Batch:
        """Binary images from a fixed random two-layer network of a standard-normal latent."""
        generator = torch.Generator().manual_seed(seed)
        latent = torch.randn(num_images, true_latent_dim, generator=generator)
        first = 2.0 * torch.randn(true_latent_dim, 32, generator=generator)
        second = 1.5 * torch.randn(32, specs.NUM_PIXELS, generator=generator)
        logits = torch.tanh(latent @ first) @ second
        return {"pixels": torch.bernoulli(torch.sigmoid(logits), generator=generator)}

    @classmethod
    def data_from_table(cls, table: dict[str, list[float]]) -> Batch:
        """One column per pixel in the CSV; one ``pixels`` row of 64 values per image for the model."""
        columns = [torch.tensor(table[name]) for name in cls.table.columns]
        return {"pixels": torch.stack(columns, dim=-1).to(torch.get_default_dtype())}

    def forward(self, batch: Batch) -> None:
        with self.data_plate(batch):
            prior = dist.Normal(torch.zeros(self.latent_dim), 1.0).to_event(1)
            z = pyro.sample("z", prior)
            pyro.sample("pixels", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=batch["pixels"])

    def full_guide(self) -> PyroModule:
        return VAEEncoder(self)


class VAEEncoder(PyroModule):
    """q_φ(z | x) = Normal(loc_φ(x), scale_φ(x)): one network for every image (amortised)."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self._data_plate = model.data_plate
        self.encoder = _network(specs.NUM_PIXELS, model.hidden_dim, 2 * model.latent_dim)

    def forward(self, batch: Batch) -> None:
        loc, log_scale = self.encoder(batch["pixels"]).chunk(2, dim=-1)
        with self._data_plate(batch):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))
