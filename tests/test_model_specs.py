"""The torch-free specs that ``train.py`` checks before the heavy imports agree with the built-in model classes."""

from __future__ import annotations

import inspect

import pytest
import yaml
from hydra.utils import get_class

from lightning_svi.models.specs import BUILTIN_MODELS
from tests.conftest import CONF_DIR


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
