# Source: pyro-ppl/pyro examples/vae/vae.py ("Variational Autoencoder", MNIST), at commit
# ff6ae1c9572591791aae8842bcd702fcf0b46fd6. `Encoder`, `Decoder` and `VAE` (with its `model(x)` and `guide(x)`
# methods and their `pyro.module` calls) are copied verbatim. Left out: visdom, the MNIST loaders and plots, `main`.
# The networks hard-code 784 = 28 x 28 inputs (`nn.Linear(784, ...)`, `x.reshape(-1, 784)`), which no constructor
# argument changes, so `make_data` draws 28 x 28 binary images (flattened to 784) rather than 8 x 8 ones; the
# constructor's `z_dim` and `hidden_dim` make it small (2 and 32 here, 50 and 400 in the example).
"""examples/vae/vae.py: a VAE with an MLP encoder (guide, φ) and decoder (model, θ), Bernoulli pixels."""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from tests.pyro_models.common import run_steps


# ---- copied from the example --------------------------------------------------------------------
# fmt: off
# define the PyTorch module that parameterizes the
# diagonal gaussian distribution q(z|x)
class Encoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        # setup the three linear transformations used
        self.fc1 = nn.Linear(784, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        # setup the non-linearities
        self.softplus = nn.Softplus()

    def forward(self, x):
        # define the forward computation on the image x
        # first shape the mini-batch to have pixels in the rightmost dimension
        x = x.reshape(-1, 784)
        # then compute the hidden units
        hidden = self.softplus(self.fc1(x))
        # then return a mean vector and a (positive) square root covariance
        # each of size batch_size x z_dim
        z_loc = self.fc21(hidden)
        z_scale = torch.exp(self.fc22(hidden))
        return z_loc, z_scale


# define the PyTorch module that parameterizes the
# observation likelihood p(x|z)
class Decoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        # setup the two linear transformations used
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, 784)
        # setup the non-linearities
        self.softplus = nn.Softplus()

    def forward(self, z):
        # define the forward computation on the latent z
        # first compute the hidden units
        hidden = self.softplus(self.fc1(z))
        # return the parameter for the output Bernoulli
        # each is of size batch_size x 784
        loc_img = torch.sigmoid(self.fc21(hidden))
        return loc_img


# define a PyTorch module for the VAE
class VAE(nn.Module):
    # by default our latent space is 50-dimensional
    # and we use 400 hidden units
    def __init__(self, z_dim=50, hidden_dim=400, use_cuda=False):
        super().__init__()
        # create the encoder and decoder networks
        self.encoder = Encoder(z_dim, hidden_dim)
        self.decoder = Decoder(z_dim, hidden_dim)

        if use_cuda:
            # calling cuda() here will put all the parameters of
            # the encoder and decoder networks into gpu memory
            self.cuda()
        self.use_cuda = use_cuda
        self.z_dim = z_dim

    # define the model p(x|z)p(z)
    def model(self, x):
        # register PyTorch module `decoder` with Pyro
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            # setup hyperparameters for prior p(z)
            z_loc = torch.zeros(x.shape[0], self.z_dim, dtype=x.dtype, device=x.device)
            z_scale = torch.ones(x.shape[0], self.z_dim, dtype=x.dtype, device=x.device)
            # sample from prior (value will be sampled by guide when computing the ELBO)
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            # decode the latent code z
            loc_img = self.decoder.forward(z)
            # score against actual images (with relaxed Bernoulli values)
            pyro.sample(
                "obs",
                dist.Bernoulli(loc_img, validate_args=False).to_event(1),
                obs=x.reshape(-1, 784),
            )
            # return the loc so we can visualize it later
            return loc_img

    # define the guide (i.e. variational distribution) q(z|x)
    def guide(self, x):
        # register PyTorch module `encoder` with Pyro
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            # use the encoder to get the parameters used to define q(z|x)
            z_loc, z_scale = self.encoder.forward(x)
            # sample the latent code z
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    # define a helper function for reconstructing images
    def reconstruct_img(self, x):
        # encode image x
        z_loc, z_scale = self.encoder(x)
        # sample in latent space
        z = dist.Normal(z_loc, z_scale).sample()
        # decode the image (note we don't sample in image space)
        loc_img = self.decoder(z)
        return loc_img
# fmt: on
# ---- end of the copied code ---------------------------------------------------------------------

Z_DIM = 2
HIDDEN_DIM = 32
LR = 0.01  # the example's --learning-rate is 1e-3 over 101 epochs of MNIST; 0.01 for a few hundred full-batch steps
NUM_IMAGES = 256
SIDE = 28  # the networks' 784 inputs
NUM_PROTOTYPES = 4
FLIP = 0.05


def make_data(seed: int = 0) -> dict[str, torch.Tensor]:
    """``x``: (256, 784) float 0/1 images, 28 x 28 flattened, noisy copies (5% pixels flipped) of 4 blocky prototypes.

    Each prototype is a random 7 x 7 binary pattern scaled up 4x, so the data have a few clusters a 2-d latent space
    separates. 256 images are one full batch (the example's minibatch size).
    """
    generator = torch.Generator().manual_seed(seed)
    coarse = (torch.rand(NUM_PROTOTYPES, 7, 7, generator=generator) < 0.4).float()
    prototypes = (
        coarse.repeat_interleave(SIDE // 7, dim=-2).repeat_interleave(SIDE // 7, dim=-1).reshape(NUM_PROTOTYPES, -1)
    )
    labels = torch.randint(NUM_PROTOTYPES, (NUM_IMAGES,), generator=generator)
    flips = (torch.rand(NUM_IMAGES, SIDE * SIDE, generator=generator) < FLIP).float()
    x = (prototypes[labels] - flips).abs()
    return {"x": x}


def reference_svi(
    seed: int = 0,
    steps: int = 300,
    lr: float = LR,
    *,
    data_seed: int | None = None,
    z_dim: int = Z_DIM,
    hidden_dim: int = HIDDEN_DIM,
    num_particles: int = 1,
) -> dict[str, Any]:
    """The example's ``main()`` on one full batch: ``SVI(vae.model, vae.guide, Adam, Trace_ELBO())``, ``svi.step(x)``.

    The networks' initial weights come from torch's RNG right after ``pyro.set_rng_seed(seed)``.
    """
    x = make_data(seed if data_seed is None else data_seed)["x"]
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    vae = VAE(z_dim=z_dim, hidden_dim=hidden_dim, use_cuda=False)
    optimizer = Adam({"lr": lr})
    svi = SVI(vae.model, vae.guide, optimizer, loss=Trace_ELBO(num_particles=num_particles))
    result = run_steps(svi, steps, x)
    result.update(
        model="vae",
        seed=seed,
        lr=lr,
        elbo_name="Trace_ELBO",
        # the networks' weights are many (result["params"] has them all): their names and shapes
        param_shapes={name: list(torch.tensor(value).shape) for name, value in result["params"].items()},
        loss_per_image=result["loss"] / len(x),
    )
    return result
