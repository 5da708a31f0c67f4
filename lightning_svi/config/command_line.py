"""What ``train.py`` checks on its command line before Hydra reads it.

Two mistakes fail inside Hydra itself, before any of lightning-svi's code runs, with Hydra's multi-line
message and exit status 1: an override its grammar rejects (``data.path=~/counts.csv``: ``~`` is not
allowed unquoted) and a run folder it cannot create (``hydra.run.dir`` under an existing file). They
are found here first and refused in one line, exit status 2, like every other bad input. Only the
command line is read: the checks import neither torch nor the config.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from lightning_svi.errors import ConfigError

EXIT_BAD_INPUT = 2
RUN_FOLDER_KEYS = ("hydra.run.dir", "hydra.sweep.dir")
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def refuse_bad_command_line(argv: Sequence[str]) -> None:
    """Print ``check_command_line``'s refusal as ``train.py``'s other errors are printed, and exit 2."""
    try:
        check_command_line(argv)
    except ConfigError as error:
        print(f"lightning-svi: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def check_command_line(argv: Sequence[str]) -> None:
    """Raise ``ConfigError`` for the first override Hydra could not parse, or a run folder it could not create."""
    try:
        arguments, _ = get_args_parser().parse_known_args(list(argv))
    except SystemExit:  # a malformed Hydra flag: Hydra's own parser says what is wrong with it
        return
    parser = OverridesParser.create()
    for text in arguments.overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except OverrideParseException as error:
            raise ConfigError(_unparsable(text, error)) from None
        value = override.value()
        if override.key_or_group in RUN_FOLDER_KEYS and isinstance(value, str):
            require_creatable_folder(override.key_or_group, value)


def _unparsable(text: str, error: OverrideParseException) -> str:
    key, _, value = text.partition("=")
    if "~" in value:
        home = f"write {key}=$HOME/{value[2:]} (the shell expands $HOME) or " if value.startswith("~/") else ""
        return (
            f"{text}: Hydra's override grammar does not allow an unquoted ~; {home}quote the value for Hydra: "
            f"\"{key}='{value}'\" (lightning-svi expands a leading ~ in data.path)."
        )
    reason = (str(error).strip().splitlines() or ["cannot be parsed"])[0]
    return (
        f"{text}: not an override Hydra can parse ({reason}); overrides are key=value, and a value with "
        f"special characters is quoted for Hydra: \"key='value'\" (see {GRAMMAR})."
    )


def require_creatable_folder(key: str, value: str) -> None:
    """``value`` (a run folder, maybe with ``${...}`` interpolations) is an existing folder this process may
    write into, or can be created: the nearest existing path above it is a writable folder, not a file."""
    literal, interpolated, _ = value.partition("${")
    if not literal:
        return
    folder = Path(literal)
    if interpolated and not literal.endswith(("/", os.sep)):
        folder = folder.parent  # the last name is only known once Hydra resolves it
    for path in (folder, *folder.parents):
        if not os.path.lexists(path):
            continue
        if not path.is_dir():
            raise ConfigError(
                f"{key}={value}: {path} is a file, so no folder can be created under it; "
                "give a path whose existing part is a folder."
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{key}={value}: cannot write into the folder {path}; give a folder you can write to.")
        return
