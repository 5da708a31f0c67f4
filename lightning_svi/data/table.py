"""Read a CSV table of non-negative integer counts and check it against a model's spec.

Pure Python on purpose: bad files are reported before torch is imported.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lightning_svi.errors import DataError

# Above this, a count read as a float is no longer exact (and a float32 tensor of it may overflow).
LARGEST_COUNT = 2**53 - 1


@dataclass(frozen=True)
class RowCheck:
    """A constraint between the columns of one row, e.g. ``successes <= trials``."""

    description: str
    holds: Callable[[dict[str, float]], bool]


@dataclass(frozen=True)
class TableSpec:
    """The columns a model reads from a CSV file, one row per data point or group."""

    columns: tuple[str, ...]
    integer: bool = True
    non_negative: bool = True
    row_checks: tuple[RowCheck, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        kind = f"non-negative integers up to {LARGEST_COUNT}" if self.integer and self.non_negative else "numbers"
        return f"columns {', '.join(self.columns)} ({kind}), one row per data point"


def _parse_number(text: str, spec: TableSpec) -> float | None:
    """Return the cell's value, or None when it is not allowed by the spec."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    if spec.integer and (value != int(value) or abs(value) > LARGEST_COUNT):
        return None
    if spec.non_negative and value < 0:
        return None
    return value


def require_file(path: Path, expected: str) -> None:
    """Raise ``DataError`` unless ``path`` is a file; ``expected`` says what it should hold."""
    if not path.is_file():
        raise DataError(f"data.path={path}: no such file. Expected a CSV file with {expected}.")


def read_table(path: str | Path, spec: TableSpec) -> dict[str, list[float]]:
    """Read ``path`` into one list per column of ``spec``, or raise ``DataError`` saying what is wrong."""
    path = Path(path)
    where = f"data.path={path}"
    require_file(path, spec.describe())
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{where}: not a UTF-8 text file ({error.reason} at byte {error.start}).") from None
    except OSError as error:
        raise DataError(f"{where}: cannot be read ({error.strerror}).") from None
    if "\x00" in text:
        raise DataError(f"{where}: contains NUL bytes; it is not a CSV text file.")
    rows = list(csv.reader(text.splitlines()))
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{where}: the file is empty. Expected a header line with {spec.describe()}.")
    header = [cell.strip() for cell in rows[0]]
    missing = [name for name in spec.columns if name not in header]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)}; the header has {', '.join(header) or 'nothing'}. "
            f"Expected {spec.describe()}."
        )
    if len(rows) == 1:
        raise DataError(f"{where}: the file has a header but no data rows.")
    position = {name: header.index(name) for name in spec.columns}
    table: dict[str, list[float]] = {name: [] for name in spec.columns}
    for line_number, row in enumerate(rows[1:], start=2):
        values: dict[str, float] = {}
        for name, column in position.items():
            cell = row[column].strip() if column < len(row) else ""
            value = _parse_number(cell, spec)
            if value is None:
                raise DataError(
                    f"{where}, line {line_number}, column {name}: {cell!r} is not allowed; expected {spec.describe()}."
                )
            values[name] = value
        for check in spec.row_checks:
            if not check.holds(values):
                shown = ", ".join(f"{name}={values[name]:g}" for name in spec.columns)
                raise DataError(f"{where}, line {line_number}: {shown} violates {check.description}.")
        for name, value in values.items():
            table[name].append(value)
    return table
