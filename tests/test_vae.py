"""The VAE: θ is the decoder, φ the amortised encoder; minibatch training explains the images far
better than the best model without a latent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_svi.config.model_specs import NUM_PIXELS
from lightning_svi.models.vae import VAE
from tests.conftest import read_scalars


def test_synthetic_images_are_binary_and_depend_on_a_latent() -> None:
    pixels = VAE.synthetic_data(seed=0)["pixels"]
    assert pixels.shape == (2000, NUM_PIXELS)
    assert set(pixels.unique().tolist()) == {0.0, 1.0}
    # Pixels are correlated through the latent: far from independent.
    correlation = torch.corrcoef(pixels.T).nan_to_num()
    assert (correlation - torch.eye(NUM_PIXELS)).abs().max() > 0.5


def test_csv_columns_become_one_pixel_row_per_image() -> None:
    table = {f"pixel_{position}": [float(position % 2), 1.0] for position in range(NUM_PIXELS)}
    pixels = VAE.data_from_table(table)["pixels"]
    assert pixels.shape == (2, NUM_PIXELS)
    assert pixels[0, :4].tolist() == [0.0, 1.0, 0.0, 1.0]


@pytest.mark.slow
def test_minibatch_training_beats_the_best_model_without_a_latent(train_in_process, tmp_path: Path) -> None:
    summary = train_in_process("experiment=vae", "trainer.max_steps=600")
    assert summary["status"] == "completed" and summary["model"] == "vae"
    assert {name.split(".")[0] for name in summary["theta"]} == {"decoder"}
    assert {name.split(".")[0] for name in summary["phi"]} == {"encoder"}
    pixels = VAE.synthetic_data(seed=0)["pixels"]
    means = pixels.mean(0).clamp(1e-3, 1 - 1e-3)
    independent_pixels = torch.distributions.Bernoulli(means).log_prob(pixels).sum().item()  # about -88,650
    # The ELBO bounds log p(x) from below, so the VAE's evidence beats independent pixels by at least this.
    assert summary["final"]["elbo"] > 0.7 * independent_pixels
    assert len(summary["posterior"]["z"]["mean"]) == 2000
    elbo = [value for _, value in read_scalars(tmp_path / "run")["train/elbo"]]
    assert elbo[-1] > elbo[0] + 20_000
