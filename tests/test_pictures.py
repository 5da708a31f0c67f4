"""Posterior pictures: q's samples come from the guide (or the prior), and each panel draws the exact
posterior and q's density of the element it names."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from scipy import stats

from lightning_svi.analysis.pictures import marginals_figure
from lightning_svi.analysis.posterior import latent_samples
from lightning_svi.models.beta_binomial import BetaBinomial
from tests.conftest import exact_beta_binomial_guide as exact_guide
from tests.conftest import guide_of_kind

NUM_GROUPS = 6


@pytest.fixture
def model_and_data() -> tuple[BetaBinomial, dict[str, torch.Tensor]]:
    pyro.settings.set(module_local_params=True)
    pyro.set_rng_seed(0)
    model = BetaBinomial(num_data=NUM_GROUPS, alpha_init=2.0, beta_init=5.0)
    data = {"index": torch.arange(NUM_GROUPS), **BetaBinomial.synthetic_data(0, num_groups=NUM_GROUPS)}
    return model, data


def lines_by_label(ax) -> dict[str, tuple]:
    return {line.get_label(): (line.get_xdata(), line.get_ydata()) for line in ax.get_lines()}


def test_samples_come_from_the_guide_and_from_the_prior_where_the_guide_is_empty(model_and_data) -> None:
    model, data = model_and_data
    posterior = model.exact_posterior(data)["rate"]
    samples = latent_samples(model, exact_guide(model, data), data, num_samples=4000)
    assert set(samples) == {"rate"}
    assert samples["rate"].shape == (4000, NUM_GROUPS)
    torch.testing.assert_close(samples["rate"].mean(0), posterior.mean, atol=0.01, rtol=0)
    prior_samples = latent_samples(model, guide_of_kind("empty", model), data, num_samples=4000)["rate"]
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


@pytest.mark.parametrize(("elements", "panels", "grid"), [(4, 4, (2, 2)), (1, 1, (1, 1)), (3, 3, (2, 2))])
def test_pictures_are_a_grid_at_most_800_pixels_wide_with_the_legend_inside(
    model_and_data, elements: int, panels: int, grid: tuple[int, int]
) -> None:
    model, data = model_and_data
    figure = marginals_figure(model, exact_guide(model, data), data, elements_per_site=elements)
    width, height = figure.get_size_inches() * figure.dpi
    assert width <= 800 and height <= 800
    assert len(figure.axes) == grid[0] * grid[1]
    assert sum(ax.get_visible() for ax in figure.axes) == panels
    assert not figure.legends  # no figure-wide legend above the panels, where a narrow figure clipped it
    legend = figure.axes[0].get_legend()
    assert {text.get_text() for text in legend.get_texts()} == {"q samples", "q density", "exact posterior"}
    figure.canvas.draw()  # the legend lies within the figure
    box = legend.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= width and box.y0 >= 0 and box.y1 <= height


def test_guides_without_a_density_are_drawn_by_their_samples(model_and_data) -> None:
    model, data = model_and_data
    guide = guide_of_kind("normal", model)
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


def test_gmm_picture_draws_a_bounded_subsample_of_points_spread_over_the_data() -> None:
    from lightning_svi.models.gmm import PICTURE_POINTS, GaussianMixture

    pyro.settings.set(module_local_params=True)
    rows = 3 * PICTURE_POINTS
    data = {"index": torch.arange(rows), **GaussianMixture.synthetic_data(seed=0, num_points=rows)}
    model = GaussianMixture(num_data=rows)
    axes = model.posterior_figure(model.full_guide(), data).axes[0]
    drawn = torch.as_tensor(axes.collections[0].get_offsets()[:, 0], dtype=data["x"].dtype)
    assert len(drawn) == PICTURE_POINTS
    assert torch.equal(drawn[[0, -1]], data["x"][[0, -1]])  # from the first row to the last


def test_pictures_draw_on_a_bounded_row_subsample_with_the_full_datas_exact_posterior() -> None:
    """1,000 flips: the draws run on at most 200 rows, but the exact posterior of the coin's
    fairness (a global latent) is given all 1,000."""
    from lightning_svi.analysis.pictures import PICTURE_ROWS
    from lightning_svi.models.coin import Coin

    pyro.settings.set(module_local_params=True)
    model = Coin(num_data=1000)
    data = {"index": torch.arange(1000), **Coin.synthetic_data(seed=0, heads=600, tails=400)}
    rows_seen = []
    forward = model.forward

    def recording(batch: dict) -> None:
        rows_seen.append(len(batch["index"]))
        forward(batch)

    model.forward = recording
    figure = marginals_figure(model, model.full_guide(), data)
    assert rows_seen and max(rows_seen) <= PICTURE_ROWS
    (ax,) = [ax for ax in figure.axes if ax.get_visible()]
    assert ax.get_title() == "fairness"
    x, exact = lines_by_label(ax)["exact posterior"]
    assert exact == pytest.approx(stats.beta.pdf(x, 10 + 600, 10 + 400), rel=1e-3)
    assert "drawn on 200 of 1000 rows" in [text.get_text() for text in figure.texts]


def test_per_row_sites_of_a_subsample_get_their_own_rows_exact_posterior() -> None:
    pyro.settings.set(module_local_params=True)
    model = BetaBinomial(num_data=500, alpha_init=2.0, beta_init=5.0)
    data = {"index": torch.arange(500), **BetaBinomial.synthetic_data(0, num_groups=500)}
    figure = marginals_figure(model, exact_guide(model, data), data, num_samples=500)
    rows = torch.linspace(0, 499, 200).round().long()  # the rows drawn
    for ax in (ax for ax in figure.axes if ax.get_visible()):
        element = int(ax.get_title().removeprefix("rate[").removesuffix("]"))
        group = rows[element]
        x, exact = lines_by_label(ax)["exact posterior"]
        successes, trials = data["successes"][group].item(), data["trials"][group].item()
        assert exact == pytest.approx(stats.beta.pdf(x, 2.0 + successes, 5.0 + trials - successes), rel=1e-3)


def test_a_picture_that_fails_to_draw_or_render_turns_pictures_off_and_training_goes_on(tmp_path) -> None:
    from types import SimpleNamespace

    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_svi.logging.pictures import PosteriorPictureLogger

    class Unrenderable:
        def posterior_figure(self, guide: object, data: dict) -> object:
            return object()  # not a matplotlib figure

    class Failing:
        def posterior_figure(self, guide: object, data: dict) -> None:
            raise RuntimeError("cannot draw\nsecond line")

    cases = ((Unrenderable(), "turned off: AttributeError"), (Failing(), "turned off: RuntimeError: cannot draw$"))
    for model, message in cases:
        callback = PosteriorPictureLogger({"x": torch.zeros(3)}, every_n_steps=10)
        logger = TensorBoardLogger(save_dir=tmp_path)
        trainer = SimpleNamespace(global_step=10, is_global_zero=True, loggers=[logger], logger=logger)
        pl_module = SimpleNamespace(device=torch.device("cpu"), model=model, guide=None)
        with pytest.warns(UserWarning, match=message):
            callback.draw(trainer, pl_module)
        assert callback.every_n_steps is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_summary_and_picture_on_a_cuda_device() -> None:
    from lightning_svi.analysis.posterior import posterior_summary

    pyro.settings.set(module_local_params=True)
    device = torch.device("cuda")
    model = BetaBinomial(num_data=300, alpha_init=2.0, beta_init=5.0).to(device)
    data = {"index": torch.arange(300), **BetaBinomial.synthetic_data(0, num_groups=300)}
    data = {name: value.to(device) for name, value in data.items()}
    guide = exact_guide(model, data).to(device)
    summary = posterior_summary(model, guide, data, num_samples=200)
    assert summary["rate"]["mean"].shape == (300,) and summary["successes"]["ppc"]["rows"] == 300
    figure = marginals_figure(model, guide, data, num_samples=200)
    assert any(lines_by_label(ax) for ax in figure.axes if ax.get_visible())


def test_pictures_of_costly_rows_draw_on_fewer_of_them(monkeypatch) -> None:
    pyro.settings.set(module_local_params=True)
    model = BetaBinomial(num_data=500, alpha_init=2.0, beta_init=5.0)
    data = {"index": torch.arange(500), **BetaBinomial.synthetic_data(0, num_groups=500)}
    # A draw holds 3 numbers a row (q's rate, the model's rate, successes): 500 draws of 50 rows fit.
    monkeypatch.setattr("lightning_svi.analysis.pictures.PICTURE_DRAWN_ELEMENTS", 500 * 3 * 50)
    figure = marginals_figure(model, exact_guide(model, data), data, num_samples=500)
    assert "drawn on 50 of 500 rows" in [text.get_text() for text in figure.texts]
    assert all("exact posterior" in lines_by_label(ax) for ax in figure.axes if ax.get_visible())
