"""Model and guide from their config nodes, whatever the user wrote them as.

``model._target_`` may name:

* a class: it is constructed with the node's other keys (a built-in ``SVIModel`` also gets
  ``num_data``); a ``PyroModule`` or ``nn.Module`` is the program, or ``model.method`` names the
  method that is (``method: model`` for a tutorial VAE object that holds both networks);
* a function: it is the program itself, never called at build time; other keys are bound as
  keyword arguments.

``guide`` may be ``kind: full`` (the model's own guide), ``kind: empty``, an autoguide class
(``_target_: pyro.infer.autoguide.AutoNormal``: called with the model, its enumerated sites hidden),
any other class or function as for the model, or ``method: guide``, a method of the model's object.
``kind`` also names the guide in ``summary.json`` and TensorBoard.

An autoguide's ``block`` (``{expose: [weights, locs]}``) wraps the model it sees in
``poutine.block(model, **block)``, as the GMM tutorial's guide does.

Framework keys (``data_args``, ``data_kwargs``, ``method``, ``kind``, ``block``) are read here and
never passed on.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pyro import poutine
from pyro.infer.autoguide import AutoContinuous, AutoGuide
from torch import nn

from lightning_svi.config.checks import nothing_to_train
from lightning_svi.config.targets import check_target, constructing, instantiated
from lightning_svi.core.guides import EmptyGuide
from lightning_svi.core.programs.inputs import resolve_inputs
from lightning_svi.core.programs.program import PyroProgram
from lightning_svi.core.sites import is_enumerated
from lightning_svi.core.svi_model import SVIModel
from lightning_svi.errors import ConfigError

FRAMEWORK_KEYS = ("data_args", "data_kwargs", "method", "kind", "block")


@dataclass
class BuiltModel:
    """The model the framework trains (``module``), and the object it came from (for ``method`` guides)."""

    module: nn.Module
    source: Any
    name: str


def _options(node: DictConfig) -> DictConfig:
    """``node`` without the framework's keys: what ``instantiate`` receives."""
    return OmegaConf.create({key: value for key, value in node.items() if key not in FRAMEWORK_KEYS})


def _load(node: DictConfig, key: str, supplied: tuple[str, ...] = ()) -> Any:
    """What ``node._target_`` names, its keys checked against its signature (one line if they do not fit)."""
    return check_target(node, key, framework_keys=FRAMEWORK_KEYS, supplied=supplied, complete=False)


def _short_name(target: str, method: str | None) -> str:
    """``coin.model`` for a function ``my_package.coin.model``; ``VAE.guide`` for a class and its method."""
    parts = target.split(".")
    if method:
        return f"{parts[-1]}.{method}"
    return ".".join(parts[-2:]) if parts[-1][:1].islower() else parts[-1]


def _construct(node: DictConfig, target: Any, key: str, **extra: Any) -> Any:
    """A class constructed from ``node``; a function bound to the node's other keys (not called).

    The binding is ``functools.partial``, not Hydra's ``_partial_`` object, which costs ~0.6 ms a call."""
    options = _options(node)
    if not inspect.isclass(target):
        bound = {
            name: instantiate(value) if OmegaConf.is_config(value) else value
            for name, value in options.items()
            if name not in ("_target_", "_partial_")
        }
        return functools.partial(target, **bound) if bound else target
    return instantiated(options, key, FRAMEWORK_KEYS, **extra)


def _program(source: Any, method: str | None, key: str) -> Callable[..., Any]:
    if method is None:
        return source
    program = getattr(source, method, None)
    if not callable(program):
        raise ConfigError(f"{key}.method={method}: {type(source).__name__} has no method {method!r}.")
    return program


def _wrap(
    program: Callable[..., Any],
    node: DictConfig,
    key: str,
    name: str,
    columns: Sequence[str],
    num_rows: int,
    plate: str | None,
) -> PyroProgram:
    args = node.get("data_args")
    kwargs = node.get("data_kwargs")
    inputs = resolve_inputs(
        program,
        columns,
        key,
        args=None if args is None else list(args),
        kwargs=None if kwargs is None else dict(kwargs),
    )
    return PyroProgram(program, inputs, side=key, name=name, num_rows=num_rows, data_plate=plate)


def build_model(node: DictConfig, columns: Sequence[str], num_rows: int, plate: str | None = None) -> BuiltModel:
    """The model of ``node`` for data with ``columns`` and ``num_rows`` rows."""
    if node.get("_target_") is None:
        raise ConfigError(
            "model._target_ is not set: name your model function or class, e.g. model._target_=my_file.model"
        )
    target = _load(node, "model", supplied=("num_data",))
    if inspect.isclass(target) and issubclass(target, SVIModel):
        model = _construct(node, target, "model", num_data=num_rows)
        return BuiltModel(model, model, model.name)
    source = _construct(node, target, "model")
    method = node.get("method")
    program = _program(source, method, "model")
    name = _short_name(node._target_, method)
    return BuiltModel(_wrap(program, node, "model", name, columns, num_rows, plate), source, name)


def _autoguide(guide_class: type, node: DictConfig, model: nn.Module) -> nn.Module:
    options = {}
    if isinstance(model, SVIModel) and not issubclass(guide_class, AutoContinuous):
        # Local latents follow the model's minibatch rows instead of drawing their own.
        options["create_plates"] = model.data_plate
    if "init_scale" in node:  # Pyro refuses an int, as in guide.init_scale=1
        options["init_scale"] = float(node.init_scale)
    partial = instantiate(_options(node), _partial_=True)
    seen = poutine.block(model, hide_fn=is_enumerated)
    if node.get("block") is not None:
        seen = poutine.block(seen, **OmegaConf.to_container(node.block))
    with constructing(node, "guide", FRAMEWORK_KEYS):
        return partial(seen, **options)


def build_guide(
    node: DictConfig, model: BuiltModel, columns: Sequence[str], num_rows: int, plate: str | None = None
) -> nn.Module:
    """The guide of ``node`` for ``model``."""
    kind = node.get("kind")
    if node.get("_target_") is None and node.get("method") is None:
        if kind == "empty":
            if isinstance(model.module, SVIModel) and not any(True for _ in model.module.parameters()):
                raise nothing_to_train(model.name)
            return EmptyGuide()
        if kind == "full":
            full_guide = getattr(model.source, "full_guide", None)
            if full_guide is None:
                raise ConfigError(
                    f"guide=full: model {model.name} has no full guide of its own; give a guide function, "
                    "guide.method=NAME (a method of the model's object), or an autoguide (guide=normal)."
                )
            guide = full_guide()
            return (
                guide if isinstance(guide, nn.Module) else _wrap(guide, node, "guide", "full", columns, num_rows, plate)
            )
        raise ConfigError(
            f"guide.kind={kind!r}: a guide needs a _target_ (a function, a class or an autoguide), "
            "guide.method=NAME, or kind full or empty."
        )
    if node.get("_target_") is None:
        program = _program(model.source, node.method, "guide")
        return _wrap(program, node, "guide", node.method, columns, num_rows, plate)
    target = _load(node, "guide", supplied=("model", "create_plates"))
    if inspect.isclass(target) and issubclass(target, AutoGuide):
        return _autoguide(target, node, model.module)
    source = _construct(node, target, "guide")
    program = _program(source, node.get("method"), "guide")
    if isinstance(program, nn.Module) and isinstance(model.module, SVIModel):
        return program  # a module written for the framework's batches, like the built-in full guides
    return _wrap(program, node, "guide", _short_name(node._target_, node.get("method")), columns, num_rows, plate)


def guide_name(node: DictConfig) -> str:
    """How ``summary.json`` and TensorBoard name the guide: its ``kind``, else its target or method."""
    if node.get("kind"):
        return str(node.kind)
    if node.get("_target_"):
        return _short_name(node._target_, node.get("method"))
    return str(node.get("method"))


def pair_programs(model: nn.Module, guide: nn.Module) -> None:
    """Let each wrapped program read the parameters the other created (as Pyro's global store does),
    and register an object that holds both programs (a tutorial VAE) once."""
    if isinstance(model, PyroProgram) and isinstance(guide, PyroProgram):
        model.pair_with(guide)
        guide.pair_with(model)
        owner = getattr(guide, "owner", None)
        if owner is not None and owner is getattr(model, "owner", None):
            del guide.owner  # one object holds both programs' networks: registered once, with the model


def check_programs(cfg: DictConfig) -> None:
    """The model's and guide's ``_target_`` import and take the node's keys, and a model that brings no
    data of its own is given some: checked before training starts."""
    model_class = _load(cfg.model, "model", supplied=("num_data",))
    brings_data = inspect.isclass(model_class) and issubclass(model_class, SVIModel)
    if not brings_data and cfg.data.get("_target_") is None and cfg.data.get("path") is None:
        raise ConfigError(
            f"model._target_={cfg.model._target_} brings no data set: give one with data=file data.path=FILE "
            "(CSV, Parquet, .npz or .pt; its columns become the model's arguments) or data._target_=YOUR.DataModule."
        )
    guide = cfg.guide
    if guide.get("_target_") is not None:
        _load(guide, "guide", supplied=("model", "create_plates"))
    method = guide.get("method")
    by_method = guide.get("_target_") is None and method is not None and inspect.isclass(model_class)
    if by_method and not callable(getattr(model_class, method, None)):
        raise ConfigError(f"guide.method={method}: {model_class.__name__} has no method {method!r}.")
