"""How a batch of data columns becomes a Pyro program's arguments.

Pyro programs take their data as arguments: ``model(data)``, ``model(x, y=None)``,
``model(sequences, lengths, batch_size=None)``. The rule, in order:

1. ``model.data_args`` / ``model.data_kwargs`` in the config, when given: ``data_args`` lists the
   columns passed positionally, ``data_kwargs`` maps argument names to columns (``{y: y}``). Other
   keys of the node bind arguments that are not data (``args`` of an example's argparse options).
2. Otherwise every argument whose name is a data column gets that column by name.
3. A program with one required argument that is not a column, and data with one column, gets that
   column positionally (``model(data)`` with a column called ``flips``).

Anything else is an error that names the arguments, the columns and the settings that map them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lightning_svi.errors import ConfigError

Batch = dict[str, torch.Tensor]
ROW_INDEX = "index"  # the column the data module adds: each row's position in the full data set


@dataclass(frozen=True)
class Inputs:
    """Columns passed positionally (``args``) and by keyword (``kwargs``: argument -> column)."""

    args: tuple[str, ...] = ()
    kwargs: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, batch: Batch) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        return (
            tuple(batch[column] for column in self.args),
            {argument: batch[column] for argument, column in self.kwargs.items()},
        )


def _signature(program: Callable[..., Any]) -> inspect.Signature | None:
    target = program.forward if isinstance(program, torch.nn.Module) else program
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):  # builtins and some C callables have none
        return None


def resolve_inputs(
    program: Callable[..., Any],
    columns: Sequence[str],
    key: str,
    args: Sequence[str] | None = None,
    kwargs: Mapping[str, str] | None = None,
) -> Inputs:
    """The ``Inputs`` of ``program`` for data with ``columns``; ``key`` (``model``, ``guide``) names
    the config node in errors."""
    data_columns = [column for column in columns if column != ROW_INDEX]
    allowed = [*data_columns, ROW_INDEX]
    if args is not None or kwargs is not None:
        inputs = Inputs(tuple(args or ()), dict(kwargs or {}))
        unknown = [column for column in (*inputs.args, *inputs.kwargs.values()) if column not in allowed]
        if unknown:
            raise ConfigError(
                f"{key}.data_args/{key}.data_kwargs name column(s) {', '.join(map(str, unknown))} that the data "
                f"does not have; its columns are {', '.join(allowed)}."
            )
        return inputs
    signature = _signature(program)
    if signature is None:
        return Inputs(kwargs={column: column for column in data_columns})
    parameters = [
        parameter
        for parameter in signature.parameters.values()
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    ]
    takes_any_keyword = any(parameter.kind is parameter.VAR_KEYWORD for parameter in signature.parameters.values())
    by_name = {parameter.name: parameter.name for parameter in parameters if parameter.name in data_columns}
    if takes_any_keyword and not by_name:
        by_name = {column: column for column in data_columns}
    required = [
        parameter
        for parameter in parameters
        if parameter.default is parameter.empty
        and parameter.name not in by_name
        and parameter.kind is not parameter.KEYWORD_ONLY
    ]
    if not required:
        return Inputs(kwargs=by_name)
    if len(required) == 1 and not by_name and len(data_columns) == 1:
        return Inputs(args=(data_columns[0],))
    names = ", ".join(parameter.name for parameter in required)
    raise ConfigError(
        f"{key}: its argument(s) {names} are not data columns (the data has {', '.join(data_columns)}). "
        f"Map columns to arguments with {key}.data_args=[COLUMN,...] (positional) or "
        f"{key}.data_kwargs={{ARGUMENT: COLUMN}}."
    )
