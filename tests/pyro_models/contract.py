"""A few lines that read ``conf/model/*.yaml`` and ``conf/guide/*.yaml`` the way these fixtures propose.

Not the framework: a stand-in that shows the YAML in ``conf/`` is enough to rebuild each tutorial's model and guide,
so that its tests can check one plain ``SVI.step`` of the YAML-built pair against the reference loop's.

Model node:
- ``_target_`` a function (any callable but a class, e.g. a ``@config_enumerate`` one) and no ``_partial_``: the
  function itself is the model (never called at build time);
- otherwise ``instantiate`` (a class with the node's other keys; ``_partial_: true`` binds constant arguments,
  e.g. ``model_1``'s ``args``); the framework key ``method`` (popped first) takes that method of the built object.

Guide node:
- no ``_target_``, only ``method``: that method of the model's built object (the VAE's ``guide``);
- ``_target_`` a function and no ``_partial_``: the function itself;
- ``_partial_: true`` (an autoguide): called with the model, or with ``poutine.block(model, **block)`` when the
  framework key ``block`` is there (popped first);
- anything else: ``instantiate``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from pyro import poutine

CONF = Path(__file__).resolve().parent / "conf"
FRAMEWORK_KEYS = ("method", "block")


def load(group: str, name: str) -> DictConfig:
    """``conf/<group>/<name>.yaml``."""
    return OmegaConf.load(CONF / group / f"{name}.yaml")


def _is_plain_function(node: DictConfig) -> bool:
    """A callable that is not a class: ``@config_enumerate`` makes the GMM's ``model`` a Pyro messenger wrapper
    (a ``functools.partial`` subclass), which ``inspect.isfunction`` does not count as a function."""
    if "_target_" not in node or node.get("_partial_", False):
        return False
    target = get_object(node._target_)
    return callable(target) and not inspect.isclass(target)


def _split(node: DictConfig) -> tuple[DictConfig, dict[str, Any]]:
    node = node.copy()
    extra = {key: OmegaConf.to_container(node[key]) if isinstance(node[key], DictConfig) else node[key]
             for key in FRAMEWORK_KEYS if key in node}  # fmt: skip
    for key in extra:
        node.pop(key)
    return node, extra


def build(model_node: DictConfig, guide_node: DictConfig) -> tuple[Any, Any]:
    """``(model, guide)`` as the proposed contract builds them from the two nodes."""
    model_node, model_extra = _split(model_node)
    if _is_plain_function(model_node):
        built = model = get_object(model_node._target_)
    else:
        built = instantiate(model_node)
        model = getattr(built, model_extra["method"]) if "method" in model_extra else built

    guide_node, guide_extra = _split(guide_node)
    if "_target_" not in guide_node:
        return model, getattr(built, guide_extra["method"])
    if _is_plain_function(guide_node):
        return model, get_object(guide_node._target_)
    guide = instantiate(guide_node)
    if guide_node.get("_partial_", False):
        blocked = poutine.block(model, **guide_extra["block"]) if "block" in guide_extra else model
        guide = guide(blocked)
    return model, guide


def build_named(name: str) -> tuple[Any, Any]:
    """``build(load("model", f"pyro_{name}"), load("guide", f"pyro_{name}"))``."""
    return build(load("model", f"pyro_{name}"), load("guide", f"pyro_{name}"))
