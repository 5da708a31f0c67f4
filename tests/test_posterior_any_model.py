"""Posterior summaries of any Pyro model and guide taking a ``batch`` dict, in the shapes of Pyro's
tutorials that the vectorized samplers failed on: a regression with 2-D ``x`` (``x @ w`` with a
1-D ``w``), a mixture and an HMM whose discrete sites are summed out, a VAE with ``pyro.module``
networks. Memory stays bounded on a 4,096-image VAE, and ``summary.json`` survives a kill during the
posterior work."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, autoguide, config_enumerate
from pyro.nn import PyroModule
from torch import nn

from lightning_svi.analysis.posterior import enumerated_marginals, posterior_summary
from lightning_svi.core.sites import is_enumerated
from lightning_svi.logging.summary import to_json_tree
from lightning_svi.models.beta_binomial import BetaBinomial
from tests.conftest import exact_beta_binomial_guide as exact_guide

REPO = Path(__file__).resolve().parents[1]


def mixture_and_guide(points: torch.Tensor) -> tuple[Mixture, autoguide.AutoDelta, dict[str, torch.Tensor]]:
    """The mixture over ``points`` and its AutoDelta over the globals, created on the data."""
    data = rows(len(points), x=points)
    model = Mixture(len(points))
    guide = autoguide.AutoDelta(poutine.block(model, hide_fn=is_enumerated))
    guide(data)
    return model, guide, data


def rows(num_rows: int, **columns: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"index": torch.arange(num_rows), **columns}


class Regression(PyroModule):
    """y ~ Normal(x @ w + b, sigma) with x of shape (N, 3): ``x @ w`` does not vectorize over draws."""

    def __init__(self, num_rows: int) -> None:
        super().__init__()
        self.num_rows = num_rows

    def forward(self, batch: dict[str, torch.Tensor]) -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        b = pyro.sample("b", dist.Normal(0.0, 10.0))
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        mean = batch["x"] @ w + b
        with pyro.plate("data", self.num_rows, subsample=batch["index"]):
            pyro.sample("y", dist.Normal(mean, sigma), obs=batch["y"])


class Mixture(PyroModule):
    """A Gaussian mixture as in Pyro's GMM tutorial: ``config_enumerate``, ``locs[assignment]``."""

    def __init__(self, num_rows: int, num_components: int = 2) -> None:
        super().__init__()
        self.num_rows, self.num_components = num_rows, num_components

    @config_enumerate
    def forward(self, batch: dict[str, torch.Tensor]) -> None:
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(self.num_components)))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
        with pyro.plate("components", self.num_components):
            locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
        with pyro.plate("data", self.num_rows, subsample=batch["index"]):
            assignment = pyro.sample("assignment", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=batch["x"])


class HiddenMarkov(PyroModule):
    """Sequences (N, T) of a hidden Markov chain, enumerated inside ``pyro.plate("sequences")``."""

    def __init__(self, num_rows: int, num_states: int = 2) -> None:
        super().__init__()
        self.num_rows, self.num_states = num_rows, num_states

    def forward(self, batch: dict[str, torch.Tensor]) -> None:
        sequences = batch["sequences"]
        transition = 0.9 * torch.eye(self.num_states) + 0.1
        probs_x = pyro.sample("probs_x", dist.Dirichlet(transition).to_event(1))
        locs = pyro.sample("locs", dist.Normal(torch.zeros(self.num_states), 5.0).to_event(1))
        with pyro.plate("sequences", self.num_rows, subsample=batch["index"], dim=-1):
            x = 0
            for t in pyro.markov(range(sequences.shape[1])):
                x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]), infer={"enumerate": "parallel"})
                pyro.sample(f"y_{t}", dist.Normal(locs[x], 1.0), obs=sequences[:, t])


class TutorialVAE(nn.Module):
    """The VAE tutorial's shape: ``pyro.module`` networks, ``model`` and ``guide`` methods."""

    def __init__(self, num_rows: int, z_dim: int = 2, hidden: int = 32, pixels: int = 64) -> None:
        super().__init__()
        self.num_rows, self.z_dim = num_rows, z_dim
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, pixels), nn.Sigmoid())
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.Softplus(), nn.Linear(hidden, 2 * z_dim))

    def model(self, batch: dict[str, torch.Tensor]) -> None:
        pyro.module("decoder", self.decoder)
        x = batch["pixels"]
        with pyro.plate("data", self.num_rows, subsample=batch["index"]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, torch.ones_like(z_loc)).to_event(1))
            pyro.sample("obs", dist.Bernoulli(self.decoder(z), validate_args=False).to_event(1), obs=x)

    def guide(self, batch: dict[str, torch.Tensor]) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", self.num_rows, subsample=batch["index"]):
            loc, log_scale = self.encoder(batch["pixels"]).chunk(2, dim=-1)
            pyro.sample("latent", dist.Normal(loc, log_scale.exp()).to_event(1))


@pytest.fixture(autouse=True)
def seeded() -> None:
    pyro.settings.set(module_local_params=True)
    pyro.set_rng_seed(0)


def assert_summarised(entry: dict, shape: tuple[int, ...]) -> None:
    """mean, sd, q05, q95 of the site's shape, finite, in order."""
    values = {key: torch.as_tensor(entry[key], dtype=torch.double) for key in ("mean", "sd", "q05", "q95")}
    for key, value in values.items():
        assert value.shape == shape, key
        assert torch.isfinite(value).all(), key
    assert (values["sd"] >= 0).all()
    assert (values["q05"] <= values["mean"] + 1e-9).all() and (values["mean"] <= values["q95"] + 1e-9).all()


def assert_checked(entry: dict, num_rows: int) -> None:
    assert set(entry["check"]) == {"mean", "sd"}
    assert all(0 <= statistic["p_value"] <= 1 for statistic in entry["check"].values())
    ppc = entry["ppc"]
    assert 0 <= ppc["coverage_90"] <= 1 and ppc["rows"] == num_rows
    assert math.isfinite(ppc["observed_mean"]) and math.isfinite(ppc["predictive_mean"])


def test_a_regression_that_does_not_vectorize_is_drawn_sequentially() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(100, 3, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 1.0 + 0.3 * torch.randn(100, generator=generator)
    data = rows(100, x=x, y=y)
    model = Regression(100)
    guide = autoguide.AutoNormal(model)
    guide(data)
    with pytest.raises(RuntimeError):  # the failure the vectorized samplers ended the summary with
        Predictive(model, guide=guide, num_samples=3, parallel=True)(data)
    summary = to_json_tree(posterior_summary(model, guide, data))
    assert list(summary) == ["w", "b", "sigma", "y"]
    assert_summarised(summary["w"], (3,))
    assert_summarised(summary["b"], ())
    assert_summarised(summary["sigma"], ())
    assert_checked(summary["y"], 100)
    assert summary["y"]["check"]["mean"]["observed"] == pytest.approx(y.mean().item(), rel=1e-6)


def test_an_enumerated_mixture_has_assignment_probabilities() -> None:
    model, guide, data = mixture_and_guide(torch.cat([torch.linspace(-4.0, -2.0, 30), torch.linspace(2.0, 4.0, 30)]))
    with torch.no_grad():  # a guide that has found the two clusters
        guide.locs_unconstrained.copy_(torch.tensor([-3.0, 3.0]))
        guide.scale_unconstrained.fill_(0.0)
    summary = to_json_tree(posterior_summary(model, guide, data))
    assert {"weights", "scale", "locs", "assignment", "obs"} == set(summary)
    for site, shape in (("weights", (2,)), ("scale", ()), ("locs", (2,))):
        assert_summarised(summary[site], shape)
    probs = torch.tensor(summary["assignment"]["probs"])
    assert probs.shape == (60, 2)
    torch.testing.assert_close(probs.sum(-1), torch.ones(60, dtype=probs.dtype))
    assert (probs.argmax(-1) == (data["x"] > 0).long()).all()
    assert_checked(summary["obs"], 60)


def test_an_hmm_enumerated_inside_a_plate_of_sequences() -> None:
    generator = torch.Generator().manual_seed(1)
    sequences = torch.randn(12, 5, generator=generator) + 3.0 * (torch.arange(5) % 2)
    data = rows(12, sequences=sequences)
    model = HiddenMarkov(12)
    guide = autoguide.AutoNormal(poutine.block(model, hide_fn=is_enumerated))
    guide(data)
    summary = to_json_tree(posterior_summary(model, guide, data, num_samples=100))
    assert_summarised(summary["probs_x"], (2, 2))
    assert_summarised(summary["locs"], (2,))
    for t in range(5):
        probs = torch.tensor(summary[f"x_{t}"]["probs"])
        assert probs.shape == (12, 2)
        torch.testing.assert_close(probs.sum(-1), torch.ones(12, dtype=probs.dtype))
        assert_checked(summary[f"y_{t}"], 12)


def test_a_tutorial_vae_with_pyro_module_networks() -> None:
    pixels = torch.bernoulli(torch.full((64, 64), 0.3), generator=torch.Generator().manual_seed(0))
    data = rows(64, pixels=pixels)
    vae = TutorialVAE(64)
    summary = to_json_tree(posterior_summary(vae.model, vae.guide, data, num_samples=200))
    assert set(summary) == {"latent", "obs"}
    assert_summarised(summary["latent"], (64, 2))
    assert_checked(summary["obs"], 64)


class FlipLoop(PyroModule):
    """The SVI Part I coin: one scalar observed site per flip, in a Python loop."""

    def forward(self, batch: dict[str, torch.Tensor]) -> None:
        fairness = pyro.sample("fairness", dist.Beta(10.0, 10.0))
        for i in range(len(batch["flip"])):
            pyro.sample(f"obs_{i}", dist.Bernoulli(fairness), obs=batch["flip"][i])


def test_scalar_observed_sites_get_their_checks() -> None:
    from lightning_svi.core.guides import EmptyGuide

    data = rows(4, flip=torch.tensor([1.0, 1.0, 0.0, 1.0]))
    summary = to_json_tree(posterior_summary(FlipLoop(), EmptyGuide(), data, num_samples=400))
    assert_summarised(summary["fairness"], ())
    for i, flip in enumerate([1.0, 1.0, 0.0, 1.0]):
        check = summary[f"obs_{i}"]["check"]
        assert check["mean"]["observed"] == flip and check["sd"]["observed"] == 0.0
        assert check["mean"]["replicated_mean"] == pytest.approx(0.5, abs=0.1)  # the prior's Beta(10, 10)
        assert summary[f"obs_{i}"]["ppc"]["coverage_90"] == 1.0


def test_large_sites_summarise_a_bounded_number_of_elements_and_say_so() -> None:
    pixels = torch.bernoulli(torch.full((300, 64), 0.3), generator=torch.Generator().manual_seed(0))
    vae = TutorialVAE(300)
    summary = posterior_summary(vae.model, vae.guide, rows(300, pixels=pixels), num_samples=100, site_elements=50)
    latent = to_json_tree(summary["latent"])
    assert all(len(latent[key]) == 50 for key in ("mean", "sd", "q05", "q95"))
    assert latent["note"] == "first 50 of 600 elements (shape [300, 2]), flattened in row-major order"
    assert summary["obs"]["ppc"]["note"] == "coverage of the first 50 of 19200 observed elements"


def test_the_gmm_picture_helper_keeps_its_signature() -> None:
    model, guide, data = mixture_and_guide(torch.cat([torch.linspace(-4.0, -2.0, 10), torch.linspace(2.0, 4.0, 10)]))
    probs = enumerated_marginals(model, guide, data, num_samples=10, plates=1)["assignment"]
    assert probs.shape == (20, 2)


def test_beta_binomial_summary_matches_the_exact_posterior_within_monte_carlo_error() -> None:
    model = BetaBinomial(num_data=20, alpha_init=2.0, beta_init=5.0)
    data = rows(20, **BetaBinomial.synthetic_data(0, num_groups=20))
    summary = to_json_tree(posterior_summary(model, exact_guide(model, data), data))
    rate = summary["rate"]
    assert set(rate) == {"mean", "sd", "q05", "q95", "exact"}
    exact = model.exact_posterior(data)["rate"]
    assert rate["exact"]["mean"] == pytest.approx(exact.mean.tolist(), rel=1e-5)
    standard_error = exact.stddev / math.sqrt(1000)
    assert ((torch.tensor(rate["mean"]) - exact.mean).abs() < 5 * standard_error).all()
    assert rate["sd"] == pytest.approx(exact.stddev.tolist(), rel=0.15)


class Awkward(PyroModule):
    """Latents a summary cannot describe: an integer-valued one and one without a finite mean."""

    def forward(self, batch: dict[str, torch.Tensor]) -> None:
        count = pyro.sample("count", dist.Poisson(3.0))
        spread = pyro.sample("spread", dist.HalfCauchy(1.0))
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(batch["index"])):
            pyro.sample("x", dist.Normal(loc + count, spread), obs=batch["x"])

    def exact_posterior(self, data: dict) -> dict:
        raise RuntimeError("no closed form after all\nsecond line")


def test_sites_without_a_summary_are_skipped_and_errors_stay_in_their_part(monkeypatch) -> None:
    from lightning_svi.core.guides import EmptyGuide

    data = rows(10, x=torch.linspace(0.0, 1.0, 10))
    summary = posterior_summary(Awkward(), EmptyGuide(), data, num_samples=100)
    assert "integer-valued" in summary["count"]["skipped"]
    assert "no finite mean" in summary["spread"]["skipped"]
    assert summary["loc"]["exact"] == {"error": "RuntimeError: no closed form after all"}
    assert_summarised(to_json_tree(summary["loc"]), ())

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("the predictive check broke")

    monkeypatch.setattr("lightning_svi.analysis.posterior.predictive_checks", broken)
    summary = posterior_summary(Awkward(), EmptyGuide(), data, num_samples=100)
    assert summary["x"] == {"error": "ValueError: the predictive check broke"}
    assert "mean" in summary["loc"]


MEMORY_SCRIPT = """
import resource, sys
import torch, pyro
torch.set_num_threads(1)
pyro.settings.set(module_local_params=True)
from lightning_svi.models.vae import VAE
from lightning_svi.analysis.pictures import marginals_figure
from lightning_svi.analysis.posterior import posterior_summary
data = {"index": torch.arange(4096), **VAE.synthetic_data(0, num_images=4096)}
model = VAE(num_data=4096)
guide = model.full_guide()
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = peak_mb()
summary = posterior_summary(model, guide, data)
assert len(summary["z"]["mean"]) == 4096, summary["z"].keys()
after_summary = peak_mb()
marginals_figure(model, guide, data)
print(start, after_summary, peak_mb())
"""


@pytest.mark.slow  # bounded draws stay fast in test_draws_too_many_for_all_rows_run_on_the_first_rows
def test_a_4096_image_vae_summary_and_picture_stay_under_a_gigabyte() -> None:
    # Before: the picture drew 1,000 joint samples over all 4,096 images at once (+2 GB here, 24 GB
    # for the tutorial's VAE). ru_maxrss is the process's peak, so each step's growth is an upper bound.
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    start, after_summary, after_picture = map(float, result.stdout.split())
    assert after_summary - start < 1024
    assert after_picture - start < 1024


KILLED_SCRIPT = """
import os, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
import lightning_svi.logging.summary as summary_module
from tests.conftest import compose_config
from lightning_svi.training.run import train

def killed(*args, **kwargs):
    {stop}

summary_module.posterior_summary = killed
train(compose_config("trainer.max_steps=12", "checkpoint.every_n_steps=5"), Path({run_dir!r}))
"""


@pytest.mark.parametrize(
    ("stop", "returncode"),
    [
        ("os._exit(17)", 17),  # as an OOM kill would: no exception, no hook, no flush
        pytest.param("raise KeyboardInterrupt", 1, marks=pytest.mark.slow),  # Ctrl-C: on_exception hooks, exit 1
    ],
    ids=["killed", "interrupted"],
)
def test_a_kill_during_the_posterior_work_leaves_the_complete_summary(
    tmp_path: Path, stop: str, returncode: int
) -> None:
    run_dir = tmp_path / "run"
    script = KILLED_SCRIPT.format(repo=str(REPO), run_dir=str(run_dir), stop=stop)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == returncode, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 12
    first_summary = {"model", "guide", "elbo", "seed", "steps", "world_size", "status", "final", "theta", "phi"}
    assert first_summary | {"timing"} <= set(summary)
    assert "posterior" not in summary
    assert math.isfinite(summary["final"]["elbo"]) and summary["theta"]
    # The posterior work comes after the final checkpoint (step 12 is between two periodic ones).
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 12


def test_exact_summaries_of_large_sites_are_bounded() -> None:
    """20,000 exact draws of 10,000 kept elements would pass torch.quantile's 2**24 limit; a site of
    30,000 elements keeps its first 10,000."""
    from lightning_svi.analysis.posterior import describe_exact

    posterior = dist.Beta(torch.full((100, 100), 2.0), torch.full((100, 100), 3.0))
    exact = describe_exact(posterior, torch.Size([100, 100]))
    assert exact["mean"].shape == (100, 100) and torch.isfinite(exact["q95"]).all()
    wide = dist.Normal(torch.zeros(300, 100), 1.0)
    exact = describe_exact(wide, torch.Size([300, 100]))
    assert all(value.shape == (10_000,) for value in exact.values())
    assert exact["q05"].mean().item() == pytest.approx(-1.645, abs=0.05)


def test_draws_too_many_for_all_rows_run_on_the_first_rows_and_say_so() -> None:
    pixels = torch.bernoulli(torch.full((300, 64), 0.3), generator=torch.Generator().manual_seed(0))
    vae = TutorialVAE(300)
    # One draw over all rows holds 300 × (2 + 2 + 64) numbers: 100 draws of 60 rows fit 408,000.
    summary = posterior_summary(vae.model, vae.guide, rows(300, pixels=pixels), num_samples=100, drawn_elements=408_000)
    latent = to_json_tree(summary["latent"])
    assert torch.tensor(latent["mean"]).shape == (120,)
    assert latent["note"].startswith("drawn on the first 60 of 300 rows (a minibatch, to bound the work): ")
    assert summary["obs"]["ppc"]["rows"] == 60
