"""The torch-free specs that ``train.py`` checks before the heavy imports agree with what they describe:
the built-in model classes and Lightning's accelerators (components by ``_target_``: tests/test_targets.py)."""

from __future__ import annotations

import inspect

import pytest
import yaml
from hydra.utils import get_class

from lightning_svi.config.checks import ACCELERATORS
from lightning_svi.config.model_specs import BUILTIN_MODELS
from tests.conftest import CONF_DIR, guide_of_kind


def keywords(function, skip: int) -> set[str]:
    """The keyword parameters of ``function`` after the first ``skip`` ones."""
    return set(list(inspect.signature(function).parameters)[skip:])


@pytest.mark.parametrize("target", list(BUILTIN_MODELS))
def test_each_built_in_model_class_takes_its_spec(target: str) -> None:
    spec, model_class = BUILTIN_MODELS[target], get_class(target)
    assert model_class.table is spec.table and model_class.name == spec.name
    assert set(spec.options) == keywords(model_class.__init__, skip=2)  # self, num_data
    assert set(spec.synthetic) == keywords(model_class.synthetic_data, skip=1)  # seed (cls is bound)
    assert any(True for _ in model_class(num_data=3).parameters()) == spec.has_parameters


def test_every_shipped_model_config_names_a_built_in_model() -> None:
    targets = {
        yaml.safe_load(path.read_text())["_target_"]
        for path in (CONF_DIR / "model").glob("*.yaml")
        if path.stem != "custom"
    }
    assert targets == set(BUILTIN_MODELS)


def test_accelerator_names_are_lightnings() -> None:
    from pytorch_lightning.accelerators import AcceleratorRegistry

    assert set(ACCELERATORS) == {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}


@pytest.mark.parametrize("kind", ["normal", "diag_normal", "lowrank"])
def test_an_integer_init_scale_builds_a_guide(kind: str) -> None:
    from lightning_svi.models.beta_binomial import BetaBinomial

    assert guide_of_kind(kind, BetaBinomial(num_data=3), init_scale=1) is not None
