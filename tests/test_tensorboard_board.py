"""The board a person reads: the custom-scalars layout, the posterior pictures and the HParams, checked
in the event files and through the real ``tensorboard`` server's HTTP data API."""

from __future__ import annotations

import json
import re
import struct
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_svi.analysis.type2_mle import type2_maximum_likelihood
from lightning_svi.data.datamodule import load_data
from lightning_svi.logging.layout import scalar_layout
from lightning_svi.logging.pictures import PICTURE_TAG
from lightning_svi.models.beta_binomial import BetaBinomial
from scripts.tensorboard_server import get_json, tensorboard_server
from tests.conftest import compose_config, read_events, read_scalars

SHORT = ["trainer.max_steps=30", "trainer.log_every_n_steps=5"]
CATEGORIES = ["ELBO", "Evidence", "θ: model parameters", "φ: guide parameters by latent site", "Gradient norms"]


def read_image_steps(run_dir: Path, tag: str) -> list[int]:
    accumulator = read_events(run_dir)
    if tag not in accumulator.Tags()["images"]:
        return []
    return [image.step for image in accumulator.Images(tag)]


def test_layout_has_one_quantity_per_chart_so_its_lines_are_the_runs() -> None:
    layout = scalar_layout(
        theta={"alpha": torch.tensor(1.0), "weights": torch.zeros(3)},
        phi_by_site={"rate": {"qa": torch.ones(50), "qb": torch.ones(50)}, "other": {"bias": torch.tensor(0.0)}},
        has_evidence=False,
        gradient_sides=["theta", "phi"],
    )
    assert list(layout) == ["ELBO", "θ: model parameters", "φ: guide parameters by latent site", "Gradient norms"]
    assert layout["ELBO"] == {
        "ELBO = log p − log q": ["Multiline", ["^train/elbo$"]],
        "log p (model trace)": ["Multiline", ["^trace/log_p$"]],
        "log q (guide trace)": ["Multiline", ["^trace/log_q$"]],
    }
    theta = layout["θ: model parameters"]
    assert theta == {
        "alpha": ["Multiline", ["^theta/alpha$"]],
        "weights": ["Multiline", ["^theta/weights/0$", "^theta/weights/1$", "^theta/weights/2$"]],
    }
    phi = layout["φ: guide parameters by latent site"]
    assert phi == {  # a large tensor: its median, in a band from its min to its max
        "q(rate): qa": ["Margin", ["phi/qa/median", "phi/qa/min", "phi/qa/max"]],
        "q(rate): qb": ["Margin", ["phi/qb/median", "phi/qb/min", "phi/qb/max"]],
        "other: bias": ["Multiline", ["^phi/bias$"]],
    }
    assert layout["Gradient norms"] == {
        "‖∇θ‖": ["Multiline", ["^grad_norm/theta$"]],
        "‖∇φ‖": ["Multiline", ["^grad_norm/phi$"]],
    }
    with_evidence = scalar_layout(theta={}, phi_by_site={}, has_evidence=True, gradient_sides=[])
    assert list(with_evidence) == ["ELBO", "Evidence"]
    assert ["Margin", ["train/elbo", "train/elbo", "evidence/log_evidence"]] in with_evidence["Evidence"].values()


def test_the_type2_mle_is_a_band_on_theta_and_on_the_evidence_where_known() -> None:
    references = {"reference/theta/alpha", "reference/max_log_evidence"}
    layout = scalar_layout(
        theta={"alpha": torch.tensor(1.0), "beta": torch.tensor(2.0)},
        phi_by_site={},
        has_evidence=True,
        gradient_sides=[],
        references=references,
    )
    assert layout["θ: model parameters"] == {
        "alpha (band: to the type-II MLE)": ["Margin", ["theta/alpha", "theta/alpha", "reference/theta/alpha"]],
        "beta": ["Multiline", ["^theta/beta$"]],
    }
    assert layout["Evidence"]["log p_θ(x) below its maximum (type-II MLE)"] == [
        "Margin",
        ["evidence/log_evidence", "evidence/log_evidence", "reference/max_log_evidence"],
    ]


@pytest.mark.parametrize("value", ["0", "-5", "often"])
@pytest.mark.parametrize("key", ["image_every_n_steps", "sampled_every_n_steps"])
def test_a_bad_picture_or_posterior_draw_interval_is_refused_before_training(key: str, value: str) -> None:
    from lightning_svi.config.checks import check_config
    from lightning_svi.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"tensorboard\.{key}=.*integer >= 1 or null"):
        check_config(compose_config(f"tensorboard.{key}={value}"))


def test_pictures_come_at_their_interval_and_at_the_end_without_changing_training(train_in_process, tmp_path) -> None:
    drawn = train_in_process(*SHORT, "tensorboard.image_every_n_steps=20", run_dir=tmp_path / "drawn")
    plain = train_in_process(*SHORT, "tensorboard.image_every_n_steps=null", run_dir=tmp_path / "plain")
    assert read_image_steps(tmp_path / "drawn", PICTURE_TAG) == [20, 30]
    assert read_image_steps(tmp_path / "plain", PICTURE_TAG) == []
    # Sampling for pictures (and for the layout) leaves the seeded random stream alone.
    assert drawn["theta"] == plain["theta"]
    assert drawn["final"] == plain["final"]


def post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def test_real_tensorboard_serves_tags_series_picture_layout_and_hparams(train_in_process, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    first = train_in_process(*SHORT, "tensorboard.image_every_n_steps=10", run_dir=sweep / "first")
    second = train_in_process(*SHORT, "seed=1", "optim.lr=0.05", run_dir=sweep / "second")
    run = "first/tensorboard"
    with tensorboard_server(sweep) as url:
        assert set(get_json(f"{url}/data/runs")) == {run, "second/tensorboard"}

        tags = set(get_json(f"{url}/data/plugin/scalars/tags")[run])
        assert {
            "train/elbo", "train/loss", "trace/log_p", "trace/log_q", "theta/alpha", "theta/beta",
            "phi/qa/min", "phi/qa/median", "phi/qa/max", "phi/qb/median", "evidence/log_evidence", "evidence/gap",
            "grad_norm/theta", "grad_norm/phi", "hparams/elbo", "hparams/gap", "hparams/steps_per_second",
        } <= tags  # fmt: skip

        def series(tag: str) -> dict[int, float]:
            query = urllib.parse.urlencode({"run": run, "tag": tag})
            return {step: value for _, step, value in get_json(f"{url}/data/plugin/scalars/scalars?{query}")}

        elbo, loss = series("train/elbo"), series("train/loss")
        assert list(elbo) == [1, 5, 10, 15, 20, 25, 30]
        assert elbo == pytest.approx({step: -value for step, value in loss.items()})
        assert elbo == pytest.approx(dict(read_scalars(sweep / "first")["train/elbo"]))
        assert series("hparams/elbo") == pytest.approx({30: first["final"]["elbo"]})

        query = urllib.parse.urlencode({"run": run, "tag": PICTURE_TAG, "sample": 0})
        images = get_json(f"{url}/data/plugin/images/images?{query}")
        assert [image["step"] for image in images] == [10, 20, 30]
        with urllib.request.urlopen(f"{url}/data/plugin/images/individualImage?{images[-1]['query']}") as response:
            width, height = png_size(response.read())
        assert width > 600 and height > 200

        layout = get_json(f"{url}/data/plugin/custom_scalars/layout")
        assert [category["title"] for category in layout["category"]] == CATEGORIES
        charts = {chart["title"]: chart for category in layout["category"] for chart in category["chart"]}
        assert {"alpha (band: to the type-II MLE)", "beta (band: to the type-II MLE)", "q(rate): qa"} <= set(charts)
        for title, chart in charts.items():
            if "margin" in chart:
                assert set(chart["margin"]["series"][0].values()) <= tags, title
                continue
            for regex in chart["multiline"]["tag"]:
                # The same query the custom-scalars page makes: each regex selects at least one logged tag.
                query = urllib.parse.urlencode({"run": run, "tag": regex})
                matched = get_json(f"{url}/data/plugin/custom_scalars/scalars?{query}")["tag_to_events"]
                assert matched and all(re.fullmatch(regex, tag) for tag in matched), title
        assert charts["q(rate): qa"]["margin"]["series"][0] == {
            "value": "phi/qa/median", "lower": "phi/qa/min", "upper": "phi/qa/max",
        }  # fmt: skip
        # The type-II MLE (L-BFGS on the closed-form evidence) as a flat reference line, on the steps of the
        # quantity it is the band's edge for (a Margin chart draws nothing where its tags' steps differ).
        data = load_data(BetaBinomial, None, seed=0)
        mle, max_log_evidence = type2_maximum_likelihood(BetaBinomial(len(data["trials"])), data)
        steps = list(series("theta/alpha"))
        assert steps == list(elbo) == list(series("evidence/log_evidence"))
        assert series("reference/theta/alpha") == pytest.approx(dict.fromkeys(steps, mle["alpha"]), rel=1e-5)
        assert series("reference/max_log_evidence") == pytest.approx(dict.fromkeys(steps, max_log_evidence))
        for chart in charts.values():
            if "margin" in chart:  # every Margin chart's three tags share their steps
                edges = chart["margin"]["series"][0]
                assert list(series(edges["lower"])) == list(series(edges["upper"])) == list(series(edges["value"]))

        request = {
            "experimentName": "",
            "allowedStatuses": ["STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING", "STATUS_UNKNOWN"],
            "colParams": [{"hparam": "seed", "includeInResult": True}, {"hparam": "lr_theta", "includeInResult": True}],
            "startIndex": 0,
            "sliceSize": 10,
        }
        groups = post_json(f"{url}/data/plugin/hparams/session_groups", request)["sessionGroups"]
        by_run = {group["name"]: group for group in groups}
        assert set(by_run) == {run, "second/tensorboard"}
        for name, summary, seed, lr in ((run, first, 0, 0.1), ("second/tensorboard", second, 1, 0.05)):
            assert by_run[name]["hparams"] == pytest.approx({"seed": seed, "lr_theta": lr})
            metrics = {metric["name"]["tag"]: metric["value"] for metric in by_run[name]["metricValues"]}
            assert metrics["hparams/elbo"] == pytest.approx(summary["final"]["elbo"], rel=1e-6)
            assert metrics["hparams/gap"] == pytest.approx(summary["final"]["gap"], rel=1e-5)
            assert metrics["hparams/steps_per_second"] == pytest.approx(summary["timing"]["steps_per_second"], rel=1e-6)
