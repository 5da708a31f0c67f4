"""Posterior pictures: q's samples come from the guide (or the prior), and each panel draws the exact
posterior and q's density of the element it names."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.distributions import constraints
from scipy import stats
from torch.distributions import transform_to

from lightning_svi.guides import build_guide
from lightning_svi.models.beta_binomial import BetaBinomial
from lightning_svi.pictures import latent_samples, marginals_figure

NUM_GROUPS = 6


@pytest.fixture
def model_and_data() -> tuple[BetaBinomial, dict[str, torch.Tensor]]:
    pyro.settings.set(module_local_params=True)
    pyro.set_rng_seed(0)
    model = BetaBinomial(num_data=NUM_GROUPS, alpha_init=2.0, beta_init=5.0)
    data = {"index": torch.arange(NUM_GROUPS), **BetaBinomial.synthetic_data(0, num_groups=NUM_GROUPS)}
    return model, data


def exact_guide(model: BetaBinomial, data: dict) -> torch.nn.Module:
    """The full guide with φ set to the exact posterior's parameters."""
    guide = model.full_guide()
    posterior = model.exact_posterior(data)["rate"]
    with torch.no_grad():
        guide.qa_unconstrained.copy_(transform_to(constraints.positive).inv(posterior.concentration1))
        guide.qb_unconstrained.copy_(transform_to(constraints.positive).inv(posterior.concentration0))
    return guide


def lines_by_label(ax) -> dict[str, tuple]:
    return {line.get_label(): (line.get_xdata(), line.get_ydata()) for line in ax.get_lines()}


def test_samples_come_from_the_guide_and_from_the_prior_where_the_guide_is_empty(model_and_data) -> None:
    model, data = model_and_data
    posterior = model.exact_posterior(data)["rate"]
    samples = latent_samples(model, exact_guide(model, data), data, num_samples=4000)
    assert set(samples) == {"rate"}
    assert samples["rate"].shape == (4000, NUM_GROUPS)
    torch.testing.assert_close(samples["rate"].mean(0), posterior.mean, atol=0.01, rtol=0)
    prior_samples = latent_samples(model, build_guide("empty", model), data, num_samples=4000)["rate"]
    torch.testing.assert_close(prior_samples.mean(0), torch.full((NUM_GROUPS,), 2.0 / 7.0), atol=0.02, rtol=0)


def test_each_panel_draws_its_own_elements_exact_posterior_and_q_density(model_and_data) -> None:
    model, data = model_and_data
    figure = marginals_figure(model, exact_guide(model, data), data, elements_per_site=4)
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["rate[0]", "rate[2]", "rate[3]", "rate[5]"]
    successes, trials = data["successes"], data["trials"]
    for ax, group in zip(panels, [0, 2, 3, 5], strict=True):
        lines = lines_by_label(ax)
        assert set(lines) == {"q density", "exact posterior"}
        x, exact = lines["exact posterior"]
        expected = stats.beta.pdf(x, 2.0 + successes[group].item(), 5.0 + (trials[group] - successes[group]).item())
        assert exact == pytest.approx(expected, rel=1e-3)
        # q is the exact posterior here, so its density is the same curve.
        assert lines["q density"][1] == pytest.approx(expected, rel=1e-3)
        assert ax.patches, "the histogram of q's samples"


def test_guides_without_a_density_are_drawn_by_their_samples(model_and_data) -> None:
    model, data = model_and_data
    guide = build_guide("normal", model)
    guide(data)  # creates the autoguide's parameters
    figure = marginals_figure(model, guide, data)
    for ax in (ax for ax in figure.axes if ax.get_visible()):
        assert set(lines_by_label(ax)) == {"exact posterior"}
        assert ax.patches


def test_gmm_picture_colours_points_by_their_component_and_marks_the_locations() -> None:
    from lightning_svi.models.gmm import GaussianMixture

    pyro.settings.set(module_local_params=True)
    data = {"index": torch.arange(300), **GaussianMixture.synthetic_data(seed=0)}
    model = GaussianMixture(num_data=300)
    guide = model.full_guide()
    with torch.no_grad():  # a guide that has found the clusters at -5, 0 and 5
        guide.locs_loc_unconstrained.copy_(torch.tensor([-5.0, 0.0, 5.0]))
        guide.locs_scale_unconstrained.fill_(math.log(0.05))
        guide.scale_scale_unconstrained.fill_(math.log(0.05))
        guide.weights_concentration_unconstrained.fill_(math.log(100.0))
    axes = model.posterior_figure(guide, data).axes[0]
    colours = torch.as_tensor(axes.collections[0].get_array())
    points = data["x"]
    for centre, component in ((-5.0, 0), (0.0, 1), (5.0, 2)):
        near = (points - centre).abs() < 1.0
        assert (colours[near] == component).float().mean() > 0.95
    assert [line.get_xdata()[0] for line in axes.lines] == pytest.approx([-5.0, 0.0, 5.0], abs=0.1)
