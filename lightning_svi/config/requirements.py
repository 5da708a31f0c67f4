"""What one config value may be: each ``require_*`` raises ``ConfigError`` naming the key, the value
and what is allowed.

Torch-free, so that ``train.py`` checks a run with them before the heavy imports. A ``Requirement``
is any of them with its options bound (``partial(require_int, minimum=1)``), called as ``(key, value)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from lightning_svi.errors import ConfigError

Requirement = Callable[[str, Any], None]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _or_null(optional: bool) -> str:
    return " or null" if optional else ""


def require_positive(key: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not is_number(value) or value <= 0:
        raise ConfigError(f"{key}={value!r}: must be a number > 0{_or_null(optional)}.")


def require_non_negative(key: str, value: Any) -> None:
    if not is_number(value) or value < 0:
        raise ConfigError(f"{key}={value!r}: must be a number >= 0.")


def require_probability(key: str, value: Any) -> None:
    if not is_number(value) or not 0 <= value <= 1:
        raise ConfigError(f"{key}={value!r}: must be a number in [0, 1].")


def require_numbers(key: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not value or not all(is_number(item) for item in value):
        raise ConfigError(f"{key}={value!r}: must be a non-empty list of numbers, e.g. [-5,0,5].")


def require_int(key: str, value: Any, minimum: int, *, maximum: int | None = None, optional: bool = False) -> None:
    if optional and value is None:
        return
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(f"{key}={value!r}: must be an integer {allowed}{_or_null(optional)}.")


def require_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: must be true or false.")


def require_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: unknown; allowed values are {', '.join(allowed)}.")


def require_options(prefix: str, given: Mapping[str, Any], allowed: Mapping[str, Requirement], owner: str) -> None:
    """Each of the ``given`` options (keys under ``prefix``) must be one of ``owner``'s and meet its requirement."""
    for name, value in given.items():
        key = f"{prefix}.{name}"
        if name not in allowed:
            known = f"its options are {', '.join(allowed)}" if allowed else "it takes none"
            raise ConfigError(f"{key}={value!r}: not an option of {owner}; {known}.")
        allowed[name](key, value)
