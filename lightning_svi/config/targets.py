"""Config nodes with a ``_target_``: find what they name, check their keys against its signature, and
build it with errors that name the key.

Every component (estimator, optimizer, scheduler, after-step hook, callbacks, loggers) is such a node;
its options are the arguments of its own class or function, so they are declared there and nowhere
else. Torch-free: importing a target imports what it needs (``torch.optim.Adam`` imports torch).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lightning_svi.errors import ConfigError, UserInputError, one_line

# Hydra's own keys: _target_, _partial_, _convert_, _recursive_, _args_.
HYDRA_KEY = re.compile(r"_\w+_")
# How a component's error message may name an option other than by its key.
_OPTION_WORDS = {"lr": ("learning rate",), "eps": ("epsilon",)}


def plain(node: Any) -> Any:
    """A config node as plain Python values (interpolations resolved); other values as they are."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def options(node: Any, framework_keys: Collection[str] = ()) -> dict[str, Any]:
    """The arguments a node passes to its target: its keys without Hydra's ``_x_`` keys and ``framework_keys``
    (which lightning-svi reads itself, e.g. the optimizer's ``theta_lr``)."""
    values = plain(node)
    return {key: value for key, value in values.items() if key not in framework_keys and not HYDRA_KEY.fullmatch(key)}


def target_path(node: Any, key: str, *, optional: bool = False, example: str = "my_module.MyClass") -> str:
    """The node's ``_target_``, or a ``ConfigError`` saying how to set one (``optional``: null is allowed)."""
    if not isinstance(node, Mapping) and not OmegaConf.is_dict(node):
        kind = "null or a mapping" if optional else "a mapping"
        raise ConfigError(f"{key}={plain(node)!r}: must be {kind} with a _target_, e.g. {{_target_: {example}}}.")
    if OmegaConf.is_config(node) and OmegaConf.is_missing(node, "_target_"):
        raise ConfigError(f"{key}._target_ is not set: give the dotted path of a class or function.")
    target = node.get("_target_")
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{key}._target_={target!r}: must be the dotted path of a class or function.")
    return target


def target_name(node: Any) -> str:
    """The last part of a node's ``_target_``: ``TraceEnum_ELBO`` for ``pyro.infer.TraceEnum_ELBO``."""
    return str(node["_target_"]).rsplit(".", 1)[-1]


def require_importable_package(target: str, key: str, label: str | None = None) -> None:
    """Torch-free: the top-level package of ``target`` exists (finding it runs none of its code)."""
    label = label or f"{key}._target_"
    package = target.split(".")[0]
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(f"{label}={target}: cannot be imported (No module named {package!r}).")


def locate(target: str, key: str, label: str | None = None) -> Any:
    """The object a dotted path names: the longest importable module prefix, then attributes.
    Errors name ``label`` (``KEY._target_`` unless given) with the path."""
    label = label or f"{key}._target_"
    require_importable_package(target, key, label)
    parts = target.split(".")
    module, error, end = None, None, len(parts)
    for end in range(len(parts), 0, -1):
        path = ".".join(parts[:end])
        try:
            module = importlib.import_module(path)
            break
        except ModuleNotFoundError as missing:
            # Only a missing module on the path itself means "try a shorter prefix"; one missing
            # inside the package's own imports is the user's to see.
            if missing.name is None or not (path == missing.name or path.startswith(missing.name + ".")):
                raise ConfigError(f"{label}={target}: cannot be imported ({missing}).") from missing
            error = missing
        except Exception as failure:
            raise ConfigError(f"{label}={target}: cannot be imported ({one_line(failure)}).") from failure
    if module is None:
        raise ConfigError(f"{label}={target}: cannot be imported ({error}).")
    found = module
    for depth, attribute in enumerate(parts[end:], start=end):
        if not hasattr(found, attribute):
            where = ".".join(parts[:depth])
            raise ConfigError(f"{label}={target}: cannot be imported ({where} has no attribute {attribute!r}).")
        found = getattr(found, attribute)
    return found


def parameters(function: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """The named parameters ``function`` takes; None if it takes any keyword (``**kwargs``) or has no signature."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in signature.parameters.values()):
        return None
    return {
        name: parameter
        for name, parameter in signature.parameters.items()
        if parameter.kind is not inspect.Parameter.VAR_POSITIONAL
    }


def check_target(
    node: Any,
    key: str,
    *,
    framework_keys: Collection[str] = (),
    supplied: Collection[str] = (),
    resolve: Callable[[Any], Any] | None = None,
    complete: bool | None = None,
) -> Any:
    """Check a ``_target_`` node and return what it names (after ``resolve``, e.g. a Pyro optimizer
    wrapper to its torch class): it imports, is callable, every key is an argument of its signature,
    and every required argument is given, by the config or by lightning-svi at run time (``supplied``),
    unless the node is ``_partial_`` and ``complete`` is not True (its caller then gives the rest)."""
    target = target_path(node, key)
    found = locate(target, key)
    if resolve is not None:
        found = resolve(found)
    if not callable(found):
        raise ConfigError(f"{key}._target_={target}: is not a class or function.")
    given = options(node, framework_keys)
    accepted = parameters(found)
    if accepted is None:
        return found
    takes = [name for name in accepted if name not in supplied]
    for name, value in given.items():
        if name not in accepted or name in supplied:
            known = f"it takes {', '.join(takes)}" if takes else "it takes none"
            raise ConfigError(f"{key}.{name}={value!r}: {target} takes no argument {name!r}; {known}.")
    missing = [
        name
        for name, parameter in accepted.items()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY
        and name not in given
        and name not in supplied
    ]
    if complete is None:
        complete = not node.get("_partial_", False)
    if missing and complete:
        raise ConfigError(f"{key}: {target} needs {', '.join(missing)}; set {key}.{missing[0]}.")
    return found


@contextmanager
def constructing(node: Any, key: str, framework_keys: Collection[str] = ()) -> Iterator[None]:
    """Turn the component's own refusal of a value (``ValueError: Invalid learning rate: -1``) into a
    ``ConfigError`` that names the key it is about, when the message says which."""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise construction_error(node, key, error, framework_keys) from error


def instantiated(node: Any, key: str, framework_keys: Collection[str] = (), **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)`` that fails in one line: the component's own ``UserInputError``
    (a data module refusing its file) as it is, anything else as ``construction_error``. Hydra wraps
    what the target raises in an ``InstantiationException`` that names neither the key nor the value."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as wrapped:
        error = wrapped.__cause__ or wrapped
        if isinstance(error, UserInputError):
            raise error from None
        raise construction_error(node, key, error, framework_keys) from None


def construction_error(node: Any, key: str, error: Exception, framework_keys: Collection[str] = ()) -> ConfigError:
    given = options(node, framework_keys)
    target = node.get("_target_") if isinstance(node, Mapping) or OmegaConf.is_dict(node) else None
    reason = one_line(error)
    named = [name for name in given if _names(reason, name)]
    if len(named) == 1:
        name = named[0]
        return ConfigError(f"{key}.{name}={given[name]!r}: refused by {target} ({reason}).")
    values = ", ".join(f"{name}={value!r}" for name, value in given.items())
    return ConfigError(f"{key} ({target} with {values or 'no options'}): refused ({reason}).")


def _names(message: str, option: str) -> bool:
    """Whether ``message`` speaks of ``option``: by its key, its singular or a known wording."""
    lower = message.lower()
    words = {option, option.rstrip("s"), option.replace("_", " "), *_OPTION_WORDS.get(option, ())}
    return any(re.search(rf"\b{re.escape(word.lower())}\b", lower) for word in words if len(word) > 1)
