"""A data file's columns as tensors: ``read_columns(path)`` for CSV, Parquet, NumPy ``.npz`` and torch ``.pt``.

Each column (a CSV or Parquet column, an ``.npz`` array, a ``.pt`` dict entry) becomes one tensor named
by it, and every tensor has one entry per row along its first dimension: CSV and Parquet columns are
1-D, arrays and tensors keep their shape (images ``(N, 28, 28)``, sequences ``(N, T, D)``). Numbers
become torch's default float dtype unless ``dtype`` names another, for all columns or per column;
integer and boolean arrays of ``.npz`` and ``.pt`` files keep the type they were saved with.

CSV and Parquet are read by pyarrow (multithreaded), and a column is converted a block at a time into
its tensor, without a float64 copy of the whole column (float32 columns are parsed as float32): a 1 GB CSV
file of two float columns (52 million rows) loads in 28 s on a loaded 2-core machine and 0.64 GB above
the process's size (``pytest -s -m slow tests/test_data_readers.py`` prints both; 1.4 GB when parsed
as float64).
Every problem is a ``DataError`` that names the file, the column and what is allowed; in a CSV file,
the line (counted in the file, blank lines included), elsewhere the row.

A CSV file's rules are those of the table check (``config/table.py``): a header that names each column
once, one cell per column on every row (empty lines are skipped), one number per cell, written in ASCII
(``1_000`` and ``٣`` are refused). NaN and infinite numbers in CSV and Parquet columns are refused too
(a model's log-density of them is not finite, and training would stop as diverged); integer dtypes need
whole numbers written without a decimal point.
"""

from __future__ import annotations

import contextlib
import csv
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lightning_svi.config.table import data_path
from lightning_svi.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pyarrow as pa

Columns = dict[str, torch.Tensor]
DtypeOption = str | torch.dtype | Mapping[str, str | torch.dtype] | None

FORMATS = "CSV (.csv, .tsv), Parquet (.parquet, .pq), NumPy (.npz) or torch (.pt, .pth)"
# pyarrow parses blocks of this size in parallel (its default, 1 MiB, makes a thousand chunks of a GB).
CSV_BLOCK_BYTES = 1 << 24
_NEWLINE, _RETURN = ord("\n"), ord("\r")
# dtype names a user may write, as torch spells them (``torch.<name>``).
DTYPE_NAMES = (
    "float", "float32", "double", "float64", "half", "float16", "bfloat16",
    "long", "int64", "int", "int32", "short", "int16", "int8", "uint8", "bool",
)  # fmt: skip


def read_columns(path: str | Path, columns: Sequence[str] | None = None, dtype: DtypeOption = None) -> Columns:
    """The columns of the data file at ``path``, one tensor each, with equal first dimensions.

    ``columns``: the names to keep, in this order (default: all, in the file's order). ``dtype``: a
    torch dtype (or its name, e.g. ``"long"``) for every column, or a mapping from column names to
    dtypes for some of them; the others get ``torch.get_default_dtype()``. Integer and bool dtypes
    require whole numbers (bool: 0 or 1) in the file.
    """
    path = data_path(path)
    where = f"data.path={path}"
    reader = _reader(path, where)
    if not path.is_file():
        raise DataError(f"{where}: no such file. Expected a data file: {FORMATS}.")
    wanted = None if columns is None else [str(name) for name in columns]
    if wanted is not None and len(set(wanted)) != len(wanted):
        raise ConfigError(f"data.columns={wanted}: names a column twice.")
    data = reader(path, wanted, lambda names, arrays=False: _dtypes(dtype, names, arrays), where)
    if not data:
        raise DataError(f"{where}: the file holds no columns. Expected {FORMATS} with one or more numeric columns.")
    lengths = {name: len(tensor) for name, tensor in data.items()}
    if len(set(lengths.values())) != 1:
        shown = ", ".join(f"{name} {length}" for name, length in lengths.items())
        raise DataError(
            f"{where}: the columns differ in length (first dimension): {shown}; each needs one entry per row."
        )
    if next(iter(lengths.values())) == 0:
        raise DataError(f"{where}: the file has no data rows.")
    return data


def _reader(path: Path, where: str) -> Callable[..., Columns]:
    suffix = path.suffix.lower()
    readers = {
        ".csv": _read_csv,
        ".tsv": _read_csv,
        ".parquet": _read_parquet,
        ".pq": _read_parquet,
        ".npz": _read_npz,
        ".pt": _read_torch,
        ".pth": _read_torch,
    }
    if suffix not in readers:
        raise DataError(f"{where}: unsupported file type {suffix or '(no suffix)'!r}; expected {FORMATS}.")
    return readers[suffix]


def _dtypes(option: DtypeOption, names: Sequence[str], arrays: bool = False) -> dict[str, torch.dtype]:
    """The dtype of each of ``names`` from the ``dtype`` option (``ConfigError`` where it is not one).
    For ``arrays`` (``.npz``, ``.pt``) only the names the option sets: the others keep an integer
    type as saved (``_array_dtype``); table columns without one get torch's default float."""
    default = torch.get_default_dtype()
    if option is None:
        return {} if arrays else dict.fromkeys(names, default)
    if not isinstance(option, Mapping):
        return dict.fromkeys(names, _dtype(option, "data.dtype"))
    unknown = [str(name) for name in option if name not in names]
    if unknown:
        raise ConfigError(
            f"data.dtype.{unknown[0]}: no such column among those read ({', '.join(names)}); "
            "data.dtype maps column names to dtypes, e.g. data.dtype={lengths:long}."
        )
    chosen = {name: _dtype(option[name], f"data.dtype.{name}") for name in names if name in option}
    return chosen if arrays else {name: chosen.get(name, default) for name in names}


def _dtype(value: str | torch.dtype, key: str) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, str(value), None) if str(value) in DTYPE_NAMES else None
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"{key}={value!r}: unknown dtype; allowed values are {', '.join(DTYPE_NAMES)}.")
    return dtype


def _select(names: Sequence[str], wanted: Sequence[str] | None, where: str, kind: str = "column") -> list[str]:
    """``wanted`` (default: ``names``), once each is known to be among ``names``."""
    if wanted is None:
        return list(names)
    for name in wanted:
        if name not in names:
            raise DataError(f"{where}: no {kind} {name!r}; the file has {', '.join(map(repr, names)) or 'none'}.")
    return list(wanted)


def _row(index: int) -> str:
    """Where the row ``index`` (from 0) of an array or a Parquet file is, for a message."""
    return f"row {index + 1}"


def _converted(
    name: str, values: torch.Tensor, dtype: torch.dtype, where: str, locate: Callable[[int], str] = _row
) -> torch.Tensor:
    """``values`` as ``dtype``, or ``DataError`` where that would change a value: a fraction, NaN or an
    out-of-range number into an integer dtype, anything but 0 and 1 into bool. ``locate`` says where
    the row of ``values[index]`` is in the file, for the message."""
    if values.dtype.is_complex:
        raise DataError(f"{where}, column {name}: dtype {values.dtype} is not a real number type; expected numbers.")
    if dtype.is_floating_point or values.dtype == dtype or values.dtype == torch.bool:
        return values.to(dtype)
    if dtype == torch.bool:
        bad, expected = (values != 0) & (values != 1), "0 or 1 for dtype bool"
    else:
        info = torch.iinfo(dtype)
        bad = (values < info.min) | (values > info.max)
        if values.dtype.is_floating_point:
            bad |= ~torch.isfinite(values) | (values != values.round())
        expected = f"whole numbers from {info.min} to {info.max} for dtype {str(dtype).removeprefix('torch.')}"
    if bad.any():
        flat = int(bad.flatten().nonzero()[0])
        row = flat // max(1, values[0].numel()) if values.dim() > 0 else 0
        value = values.flatten()[flat].item()
        raise DataError(f"{where}, {locate(row)}, column {name}: {value!r} is not allowed; expected {expected}.")
    return values.to(dtype)


def _is_integer(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def _per_column(
    arrays: Mapping[str, Callable[[], torch.Tensor]], dtypes: dict[str, torch.dtype], where: str
) -> Columns:
    columns = {}
    for name, load in arrays.items():
        values = load()
        if values.dim() == 0:
            raise DataError(
                f"{where}, column {name}: a scalar (shape ()); "
                "every array needs one entry per row along its first dimension."
            )
        columns[name] = _converted(name, values, _array_dtype(values, name, dtypes), where)
    return columns


def _array_dtype(values: torch.Tensor, name: str, dtypes: dict[str, torch.dtype]) -> torch.dtype:
    """An array's dtype where ``data.dtype`` does not name one: integers and booleans stay as saved
    (``examples/hmm.py`` runs ``range(lengths.max())``), floats become torch's default float."""
    if name in dtypes:
        return dtypes[name]
    return values.dtype if not values.is_floating_point() else torch.get_default_dtype()


def _read_npz(path: Path, wanted: Sequence[str] | None, dtypes_of: Callable, where: str) -> Columns:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{where}: not a NumPy .npz file ({_first_line(error)}).") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{where}: holds a single array, not an .npz archive of named arrays (np.savez(path, x=..., y=...))."
        )
    with archive:
        names = _select(archive.files, wanted, where, "array")
        dtypes = dtypes_of(names, arrays=True)

        def load(name: str) -> torch.Tensor:
            try:
                array = archive[name]
            except ValueError as error:  # object arrays need pickle, which is off
                raise DataError(f"{where}, column {name}: not a numeric array ({_first_line(error)}).") from None
            if array.dtype.kind not in "biuf":
                raise DataError(f"{where}, column {name}: dtype {array.dtype} is not numeric; expected numbers.")
            return torch.from_numpy(array)

        return _per_column({name: (lambda name=name: load(name)) for name in names}, dtypes, where)


def _read_torch(path: Path, wanted: Sequence[str] | None, dtypes_of: Callable, where: str) -> Columns:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike for files it cannot load
        # Its own reason is the error it caught; the one it raises is advice on weights_only=False.
        reason = _first_line(error.__context__ or error).split(". ")[0].rstrip(".")
        raise DataError(
            f"{where}: not loadable by torch.load(weights_only=True) ({reason}); "
            "expected a dict of tensors saved with torch.save({'x': x, 'y': y}, path)."
        ) from None
    if not isinstance(content, Mapping):
        raise DataError(
            f"{where}: holds a {type(content).__name__}; expected a dict of tensors named by column, "
            "saved with torch.save({'x': x, 'y': y}, path)."
        )
    names = _select([str(name) for name in content], wanted, where)
    for name in names:
        if not isinstance(content[name], torch.Tensor):
            raise DataError(f"{where}, column {name}: holds {type(content[name]).__name__}, not a tensor.")
    return _per_column(
        {name: (lambda name=name: content[name]) for name in names}, dtypes_of(names, arrays=True), where
    )


def _read_csv(path: Path, wanted: Sequence[str] | None, dtypes_of: Callable, where: str) -> Columns:
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file, delimiter=delimiter)
            header = next((row for row in reader if row), None)  # empty lines are skipped, as pyarrow skips them
    except UnicodeDecodeError as error:
        raise DataError(f"{where}: not a UTF-8 text file ({error.reason} at byte {error.start}).") from None
    except csv.Error as error:
        raise DataError(f"{where}, line {reader.line_num}: {error}.") from None
    if not header:
        raise DataError(
            f"{where}: the file is empty. Expected a header line naming the columns, then one row per line."
        )
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise DataError(
            f"{where}, line {reader.line_num}: the header names column {twice[0]!r} twice; "
            "each column needs a name of its own."
        )
    names = _select(header, wanted, where)
    dtypes = dtypes_of(names)
    # Integers are read as int64 (exact), float32 as float32 (correctly rounded, half the memory of a float64
    # column), all else as float64, then converted block by block.
    arrow_types = {name: _arrow_type(dtypes[name]) for name in names}
    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter),
            # Only an empty cell is missing: "nan" or "NA" is read as written (and refused as not finite).
            convert_options=pa_csv.ConvertOptions(column_types=arrow_types, include_columns=names, null_values=[""]),
        )
    except pa.ArrowInvalid as error:
        raise DataError(_csv_problem(path, where, delimiter, names, arrow_types, error)) from None
    return _arrow_columns(table, names, dtypes, where, lambda index: f"line {_csv_line(path, index + 2)}")


def _arrow_type(dtype: torch.dtype) -> pa.DataType:
    import pyarrow as pa

    if _is_integer(dtype):
        return pa.int64()
    return pa.float32() if dtype == torch.float32 else pa.float64()


def _csv_line(path: Path, row: int) -> int:
    """The line number in the file at ``path`` of its ``row``-th line that is not empty (1: the header),
    as pyarrow counts rows; read a block at a time, only to say where a problem is."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    rows_before, lines_before, line_start = 0, 0, 0
    for block_start in range(0, len(data), CSV_BLOCK_BYTES):
        ends = block_start + np.flatnonzero(data[block_start : block_start + CSV_BLOCK_BYTES] == _NEWLINE)
        starts = np.concatenate(([line_start], ends[:-1] + 1))
        lengths = ends - starts
        empty = (lengths == 0) | ((lengths == 1) & (data[np.maximum(ends - 1, 0)] == _RETURN))
        rows = np.flatnonzero(~empty)
        if rows_before + len(rows) >= row:
            return lines_before + int(rows[row - rows_before - 1]) + 1
        rows_before, lines_before = rows_before + len(rows), lines_before + len(ends)
        line_start = int(ends[-1]) + 1 if len(ends) else line_start
    return lines_before + 1  # the last line, without a newline


def _csv_problem(path: Path, where: str, delimiter: str, names: list[str], arrow_types: dict, error: Exception) -> str:
    """The message for a CSV file pyarrow could not read: for a cell that is not a number, its row
    and column, found by reading the columns again as text (only once reading has failed)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    try:
        text = pa_csv.read_csv(
            path,
            parse_options=pa_csv.ParseOptions(delimiter=delimiter),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), include_columns=names
            ),
        )
    except pa.ArrowInvalid as parse_error:
        return _csv_parse_problem(path, where, delimiter, parse_error)
    for name in names:
        row = 0
        for chunk in text.column(name).chunks:
            try:
                pc.cast(chunk, arrow_types[name])
            except pa.ArrowInvalid:
                for offset, cell in enumerate(chunk.to_pylist()):
                    try:
                        pc.cast(pa.array([cell]), arrow_types[name])
                    except pa.ArrowInvalid:
                        kind = "whole numbers" if pa.types.is_integer(arrow_types[name]) else "numbers"
                        line = _csv_line(path, row + offset + 2)
                        return f"{where}, line {line}, column {name}: {cell!r} is not allowed; expected {kind}."
            row += len(chunk)
    return f"{where}: {_first_line(error)}."


def _csv_parse_problem(path: Path, where: str, delimiter: str, error: Exception) -> str:
    """The message for a CSV file pyarrow could not split into rows: for a row with more or fewer cells
    than the header, its line, found by reading the file again on one thread (which numbers the rows)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    invalid = []

    def first_invalid(row: pa_csv.InvalidRow) -> str:
        invalid.append(row)
        return "error"

    with contextlib.suppress(pa.ArrowInvalid):
        pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, invalid_row_handler=first_invalid),
            convert_options=pa_csv.ConvertOptions(include_columns=[]),
        )
    if not invalid or invalid[0].number is None:
        return f"{where}: {_first_line(error)}."
    row = invalid[0]
    cells = f"{row.actual_columns} cell{'' if row.actual_columns == 1 else 's'}"
    return (
        f"{where}, line {_csv_line(path, row.number)}: {cells}, but the header has {row.expected_columns}; "
        "every row needs one cell per column."
    )


def _read_parquet(path: Path, wanted: Sequence[str] | None, dtypes_of: Callable, where: str) -> Columns:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        names = _select(schema.names, wanted, where)
        for name in names:
            kind = schema.field(name).type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
                raise DataError(f"{where}, column {name}: type {kind} is not numeric; expected numbers.")
        table = pq.read_table(path, columns=names)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{where}: not a readable Parquet file ({_first_line(error)}).") from None
    return _arrow_columns(table, names, dtypes_of(names), where, _row)


def _arrow_columns(
    table: pa.Table, names: list[str], dtypes: dict[str, torch.dtype], where: str, locate: Callable[[int], str]
) -> Columns:
    """Each column of ``table`` as a tensor, filled a block at a time so that no float64 copy of a whole
    column is made; an empty cell (null) or a NaN or infinite number is a ``DataError``. ``locate`` says
    where the row of an index (from 0) is in the file."""
    import pyarrow.compute as pc

    columns = {}
    for name in names:
        column = table.column(name)
        tensor = torch.empty(len(column), dtype=dtypes[name])
        # Floats are cast by NumPy straight into the tensor's memory: one pass, no temporary.
        target = tensor.numpy() if dtypes[name] in (torch.float16, torch.float32, torch.float64) else None
        row = 0
        for chunk in column.chunks:
            if chunk.null_count:
                empty = row + int(np.argmax(pc.is_null(chunk).to_numpy(zero_copy_only=False)))
                raise DataError(f"{where}, {locate(empty)}, column {name}: empty cell; every cell must hold a number.")
            values = chunk.to_numpy(zero_copy_only=False)
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                bad = int(np.argmax(~np.isfinite(values)))
                raise DataError(
                    f"{where}, {locate(row + bad)}, column {name}: {float(values[bad])} is not allowed; expected "
                    "finite numbers (one too large for its float type reads as inf)."
                )
            if target is not None:
                np.copyto(target[row : row + len(chunk)], values, casting="unsafe")
            else:
                with warnings.catch_warnings():
                    # Arrow's buffers are read-only; the tensor over them is only read, to convert it.
                    warnings.filterwarnings("ignore", "The given NumPy array is not writable")
                    values = torch.from_numpy(values)
                tensor[row : row + len(chunk)] = _converted(
                    name, values, dtypes[name], where, lambda index, row=row: locate(row + index)
                )
            row += len(chunk)
        columns[name] = tensor
    return columns


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
