"""Read a CSV table of numbers and check it against a model's spec.

NumPy and no torch, on purpose: bad files are reported before torch is imported. Vectorized, because a
row-by-row reading with the ``csv`` module took 338 s and 10.9 GB for a 200 MB file. The file is mapped,
not read, and let go a block at a time, so that the process holds about the columns (float32 for counts):
a 1 GB file of 87 million rows of counts with a bad last row is refused by ``train.py`` after 24 s of CPU
at a peak of 1.0 GB for the whole process (``pytest -s -m slow tests/reliability/test_big_data.py``
prints both), where the file read whole and float64 columns took 2.4 GB.
Numeric cells are parsed column by column in blocks of lines; only the rare cell the vectorized parsers
cannot read (``1_000``, ``1e5``, non-ASCII digits, a long cell) is passed to Python's ``float`` on its own,
and cells quoted whole (``"3"``) are read there too; a file with other quoting (a quoted comma, ``""``)
is split by the ``csv`` module from its first block that has it, whose quoting rules it keeps.

Lines end at ``\\n``, ``\\r\\n`` or ``\\r``; they are counted in the file, blank lines included, so an
error on line 7 says line 7. A line whose cells are all blank is skipped, as is a header's ``BOM``.

What is refused rather than guessed at: a header that names a column twice, a row with more or fewer
cells than the header, a quoted cell that runs over several lines, an empty cell in a column the model
reads, and any number not written in ASCII digits with an optional sign, decimal point and exponent
(``1_000`` and ``٣`` are Python literals but not CSV numbers). A whole number may be written ``1.0``
or ``1e2``. Counts are at most 2**24: the models compute in float32, which holds every whole number up
to there and not all above it (``2**24 + 1`` becomes ``2**24``).
"""

from __future__ import annotations

import codecs
import csv
import mmap
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightning_svi.errors import DataError

# The models' tensors are float32, which holds every whole number up to 2**24 and not all above it.
LARGEST_COUNT = 2**24
# Longer cells are shown cut to this many characters in a message.
SHOWN_CELL_CHARS = 40
# Lines are checked this many bytes at a time: NumPy's temporaries stay a few times this size.
BLOCK_BYTES = 1 << 20
# The whole file is scanned (UTF-8, NUL bytes, line ends, quotes) this many bytes at a time.
SCAN_BYTES = 1 << 24
_BOM = b"\xef\xbb\xbf"
# Cells longer than this (and any with more than 15 digits) go to Python's ``float``.
FAST_CELL_BYTES = 24
# What ``str.strip`` removes from an ASCII cell (``\\n`` and ``\\r`` end lines before cells are cut).
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 11, 12, 28, 29, 30, 31, 32]] = True
_COMMA, _NEWLINE, _DOT, _PLUS, _MINUS, _ZERO, _QUOTE, _SPACE = (ord(char) for char in ',\n.+-0" ')
# Bytes that make a cell non-blank: all but whitespace and the separators.
_CONTENT = ~_WHITESPACE
_CONTENT[[_COMMA, _NEWLINE]] = False

Columns = Mapping[str, np.ndarray]
Text = bytes | mmap.mmap  # a file's bytes, read or mapped


@dataclass(frozen=True)
class RowCheck:
    """A constraint between the columns of one row, e.g. ``successes <= trials``.

    ``holds`` is applied to whole columns (float64 arrays, keyed by name) and returns one bool per row.
    Written with elementwise operators (``columns["successes"] <= columns["trials"]``) the same
    expression also holds for a single row of floats.
    """

    description: str
    holds: Callable[[Columns], np.ndarray]


@dataclass(frozen=True)
class TableSpec:
    """The columns a model reads from a CSV file, one row per data point or group."""

    columns: tuple[str, ...]
    integer: bool = True
    non_negative: bool = True
    row_checks: tuple[RowCheck, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        kind = (
            f"non-negative integers up to {LARGEST_COUNT} = 2**24, the models' float32 holds them exactly"
            if self.integer and self.non_negative
            else "numbers"
        )
        return f"columns {', '.join(self.columns)} ({kind}), one row per data point"


class Table(dict):
    """The checked columns of a file: one array per column of the spec, in the spec's order (float32 for
    counts, else float64).

    Equal to any mapping of the same column names to equal sequences of numbers (lists included), so
    that a table compares like the dict of lists it stands for.
    """

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self.keys() == other.keys() and all(
            np.array_equal(values, np.asarray(other[name], dtype=np.float64)) for name, values in self.items()
        )

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]


def data_path(path: str | Path) -> Path:
    """``data.path`` as a path, with a leading ``~`` expanded as a shell would (Hydra passes it as typed)."""
    return Path(path).expanduser()


def require_file(path: str | Path, expected: str) -> None:
    """Raise ``DataError`` unless ``path`` is a file; ``expected`` says what it should hold."""
    if not data_path(path).is_file():
        raise DataError(f"data.path={data_path(path)}: no such file. Expected a CSV file with {expected}.")


def read_table(path: str | Path, spec: TableSpec) -> Table:
    """Read ``path`` into one array per column of ``spec``, or raise ``DataError`` saying what is wrong.

    The arrays are float32 for a spec of counts (every allowed count is exact in float32), else float64.
    The file is mapped into memory, not read, and the pages of each block are let go once it is checked:
    the process holds the columns and a block, not the file (unless its lines end in ``\\r``: then it is
    read and rewritten with ``\\n``).
    """
    path = data_path(path)
    where = f"data.path={path}"
    require_file(path, spec.describe())
    text, num_newlines = _open_text(path, where)
    first_line, header, body_start = _find_header(text, len(_BOM) if text[: len(_BOM)] == _BOM else 0, where)
    if header is None:
        raise DataError(f"{where}: the file is empty. Expected a header line with {spec.describe()}.")
    missing = [name for name in spec.columns if name not in header]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)}; the header has {', '.join(header) or 'nothing'}. "
            f"Expected {spec.describe()}."
        )
    named_twice = sorted({name for name in header if name and header.count(name) > 1})
    if named_twice:
        raise DataError(
            f"{where}, line {first_line - 1}: the header names column {named_twice[0]} twice; "
            "each column needs a name of its own."
        )
    positions = [header.index(name) for name in spec.columns]
    # Filled in place, a block at a time: room for every line, of which the header and blank ones stay unused.
    num_lines = max(num_newlines - (first_line - 1) + 1, 1)  # the lines before first_line end in a newline
    dtype = np.float32 if spec.integer else np.float64
    columns = {name: np.empty(num_lines, dtype=dtype) for name in spec.columns}
    num_rows = 0
    for block in _split_plain(text, body_start, first_line, positions, spec.columns, where):
        for name, values in _check_block(block, spec, len(header), where).items():
            columns[name][num_rows : num_rows + len(values)] = values
        num_rows += len(block.line_numbers)
    if num_rows == 0:
        raise DataError(f"{where}: the file has a header but no data rows.")
    return Table({name: column[:num_rows] for name, column in columns.items()})


def _open_text(path: Path, where: str) -> tuple[Text, int]:
    """(the file's bytes, its number of ``\\n``) once they are known to be UTF-8 text without NUL bytes,
    with ``\\n`` line ends. The bytes are mapped, and scanned a block at a time, each let go after; a file
    with ``\\r`` line ends is read and rewritten."""
    try:
        with path.open("rb") as file:
            text = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(file.fileno()).st_size else b""
    except OSError as error:
        raise DataError(f"{where}: cannot be read ({error.strerror}).") from None
    decoder = codecs.getincrementaldecoder("utf-8")()
    num_newlines, has_return = 0, False
    for start in range(0, len(text), SCAN_BYTES):
        chunk = text[start : start + SCAN_BYTES]
        _release(text, start, len(chunk))
        pending = len(decoder.getstate()[0])  # the bytes of a character the last chunk ended inside
        try:
            if pending or not chunk.isascii():
                decoder.decode(chunk, final=start + len(chunk) == len(text))
        except UnicodeDecodeError as error:
            at = start - pending + error.start
            raise DataError(f"{where}: not a UTF-8 text file ({error.reason} at byte {at}).") from None
        if b"\x00" in chunk:
            raise DataError(f"{where}: contains NUL bytes; it is not a CSV text file.")
        has_return = has_return or b"\r" in chunk
        num_newlines += chunk.count(b"\n")
    if has_return:
        text = bytes(text).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return text, text.count(b"\n")
    return text, num_newlines


def _release(text: Text, start: int, length: int) -> None:
    """Let the pages of a mapped file from ``start`` on go (the kernel keeps them cached): once a block is
    checked, the process need not hold it."""
    if isinstance(text, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        aligned = start - start % mmap.PAGESIZE
        text.madvise(mmap.MADV_DONTNEED, aligned, min(length + start - aligned, len(text) - aligned))


def _find_header(text: Text, start: int, where: str) -> tuple[int, list[str] | None, int]:
    """(number of the line after it, stripped cells, offset of that line) of the first row with a
    non-blank cell from offset ``start`` on; ``None`` for the cells where there is none."""
    line_end = [0]
    reader = csv.reader(_lines(text, start, line_end))
    lines_read = 0
    try:
        for cells in reader:
            problem = _several_lines(reader.line_num - lines_read, lines_read + 1, where)
            if problem:
                raise DataError(problem)
            lines_read = reader.line_num
            if any(cell.strip() for cell in cells):
                return reader.line_num + 1, [cell.strip() for cell in cells], line_end[0]
    except csv.Error as error:
        raise DataError(_csv_module_problem(error, reader.line_num, where)) from None
    return reader.line_num + 1, None, len(text)


def _several_lines(num_lines: int, line_number: int, where: str) -> str | None:
    """The message for a row the ``csv`` module read from ``num_lines`` > 1 lines (a quoted cell with a
    line break), None for a row on one line."""
    if num_lines <= 1:
        return None
    return (
        f"{where}, line {line_number}: a quoted cell runs over {num_lines} lines; "
        "each row must be on one line, with one number per cell."
    )


def _csv_module_problem(error: csv.Error, line_number: int, where: str) -> str:
    if "field larger than field limit" in str(error):
        return (
            f"{where}, line {line_number}: a cell longer than {csv.field_size_limit()} characters (the csv "
            "module's limit); each cell holds one number."
        )
    return f"{where}, line {line_number}: {error}."


def _lines(text: Text, start: int, line_end: list[int]) -> Iterator[str]:
    """The lines of ``text`` from ``start`` on, without their ``\\n``; ``line_end[0]`` follows the offset
    after the last one given. The ``csv`` module joins the lines of a quoted cell without a newline."""
    while start < len(text):
        end = text.find(b"\n", start)
        end = len(text) if end < 0 else end
        line_end[0] = end + 1
        yield text[start:end].decode("utf-8")
        start = end + 1


@dataclass
class _Block:
    """Consecutive non-blank data lines: their numbers in the file, how many cells each has, and each
    spec column's cells, parsed where the vectorized parser could (``parsed``), with the cell's text on demand."""

    line_numbers: np.ndarray
    num_cells: np.ndarray
    values: dict[str, np.ndarray]
    parsed: dict[str, np.ndarray]
    cell_text: Callable[[str, int], str]


def _split_plain(
    text: Text, start: int, first_line: int, positions: list[int], names: tuple[str, ...], where: str
) -> Iterator[_Block]:
    """Blocks of a body where a cell is what lies between two commas, once a quoted cell (``"3"``) is
    known to hold neither a comma, a line end nor a quote: such quotes are read as spaces, which is what
    the ``csv`` module makes of them once cells are stripped. From the first block with other quoting
    on, the ``csv`` module splits the rest of the file (its state at the start of a line is fresh)."""
    data = np.frombuffer(text, dtype=np.uint8)
    while start < len(data):
        block_start, stop = start, len(data)
        if start + BLOCK_BYTES < len(data):
            # The block ends after a line's newline: at the last one before the limit, else the first after it.
            stop = (text.rfind(b"\n", start, start + BLOCK_BYTES) + 1) or (text.find(b"\n", start + BLOCK_BYTES) + 1)
            stop = stop or len(data)
        chunk = _without_simple_quotes(data[start:stop])
        if chunk is None:
            yield from _split_quoted(text, start, first_line, positions, names, where)
            return
        ends = np.flatnonzero(chunk == _NEWLINE)
        if len(ends) == 0 or ends[-1] != len(chunk) - 1:
            ends = np.append(ends, len(chunk))
        starts = np.concatenate(([0], ends[:-1] + 1))
        line_numbers = first_line + np.arange(len(ends))
        keep = ~_blank_lines(chunk, starts, text[start:stop].isascii())
        first_line += len(ends)
        start = stop
        is_comma = chunk == _COMMA
        commas = np.flatnonzero(is_comma)
        num_commas = np.add.reduceat(is_comma, starts, dtype=np.int64)  # a line runs to the next one's start
        first_comma = np.cumsum(num_commas) - num_commas
        starts, ends, line_numbers = starts[keep], ends[keep], line_numbers[keep]
        first_comma, num_commas = first_comma[keep], num_commas[keep]
        spans: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, position in zip(names, positions, strict=True):
            # Cell `position` of a line follows its position-th comma; a line with too few is an empty cell.
            present = num_commas >= position
            cell_starts = starts if position == 0 else _take(commas, first_comma + position - 1) + 1
            cell_ends = np.where(num_commas > position, _take(commas, first_comma + position), ends)
            spans[name] = (np.where(present, cell_starts, ends), np.where(present, cell_ends, ends))
        parsed_cells = {name: _parse_cells(chunk, *spans[name]) for name in names}

        def cell_text(name: str, row: int, chunk: np.ndarray = chunk, spans: dict = spans) -> str:
            cell_starts, cell_ends = spans[name]
            return chunk[cell_starts[row] : cell_ends[row]].tobytes().decode("utf-8").strip()

        yield _Block(
            line_numbers,
            num_commas + 1,
            {name: values for name, (values, _) in parsed_cells.items()},
            {name: parsed for name, (_, parsed) in parsed_cells.items()},
            cell_text,
        )
        _release(text, block_start, stop - block_start)


def _without_simple_quotes(chunk: np.ndarray) -> np.ndarray | None:
    """``chunk`` (whole lines) with the quotes of cells quoted whole (``,"3",``, with no comma, line end or
    quote inside) made spaces; None where any quote is not such a cell's."""
    is_quote = chunk == _QUOTE
    if not is_quote.any():
        return chunk
    quotes = np.flatnonzero(is_quote)
    if len(quotes) % 2:
        return None
    opening, closing = quotes[0::2], quotes[1::2]
    separators = np.cumsum((chunk == _COMMA) | (chunk == _NEWLINE))
    before = chunk[np.maximum(opening - 1, 0)]
    after = chunk[np.minimum(closing + 1, len(chunk) - 1)]
    whole_cells = (
        (separators[opening] == separators[closing])  # nothing between a pair's quotes ends a cell or a line
        & ((opening == 0) | (before == _COMMA) | (before == _NEWLINE))
        & ((closing == len(chunk) - 1) | (after == _COMMA) | (after == _NEWLINE))
    )
    if not whole_cells.all():
        return None
    unquoted = chunk.copy()
    unquoted[quotes] = _SPACE
    return unquoted


def _take(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``array[index]``, with indices past either end clipped (the caller masks what they give)."""
    if len(array) == 0:
        return np.zeros(len(index), dtype=np.int64)
    return array[np.clip(index, 0, len(array) - 1)]


def _blank_lines(chunk: np.ndarray, starts: np.ndarray, ascii: bool) -> np.ndarray:
    """Lines (from each start to the next) whose every cell is blank, as ``str.strip`` sees it."""
    blank = np.maximum.reduceat(_CONTENT[chunk], starts) == 0
    if ascii:
        return blank
    # Non-ASCII whitespace (a no-break space, U+2028) is blank to str.strip too; such lines are rare.
    for line in np.flatnonzero(~blank & (np.maximum.reduceat(chunk, starts) >= 0x80)):
        end = starts[line + 1] if line + 1 < len(starts) else len(chunk)
        cells = chunk[starts[line] : end].tobytes().decode("utf-8").split(",")
        blank[line] = not any(cell.strip() for cell in cells)
    return blank


def _parse_cells(chunk: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float value of each cell ``chunk[start:end]`` as ``float(cell.strip())`` reads it (NaN where it
    cannot), and whether it could.

    Short runs of digits (most cells of a table of counts) are read eight bytes at a time, other
    cells of at most 15 digits, a sign, a decimal point and surrounding whitespace a byte position at
    a time; the few left are each passed to ``float``.
    """
    values, parsed = _parse_short_integers(chunk, starts, ends - starts)
    rest = np.flatnonzero(~parsed)
    if len(rest):
        values[rest], parsed[rest] = _parse_decimals(chunk, starts[rest], ends[rest])
    for row in np.flatnonzero(~parsed):
        cell = chunk[starts[row] : ends[row]].tobytes().decode("utf-8")
        values[row], parsed[row] = _python_float(cell)
    return values, parsed


def _eight_ones(byte: int) -> np.uint64:
    return np.uint64(int.from_bytes(bytes([byte]) * 8, "little"))


# '0' in the low bytes a word of a cell of 0 to 8 characters is shifted up from.
_ZERO_FILL = np.array([int.from_bytes(b"0" * (8 - length) + bytes(length), "little") for length in range(9)], np.uint64)


def _parse_short_integers(chunk: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells of 1 to 8 digits and nothing else, read as little-endian 64-bit words (the SWAR parsing of
    simdjson, Lemire 2022): the cell is shifted to the word's high bytes, its low ones filled with '0'."""
    values = np.full(len(starts), np.nan)
    if len(chunk) < 8:
        return values, np.zeros(len(starts), dtype=bool)
    words = np.ndarray((len(chunk) - 7,), dtype="<u8", buffer=chunk, strides=(1,))  # one at each byte
    fits = (lengths >= 1) & (lengths <= 8) & (starts < len(words))
    lengths = np.where(fits, lengths, 8)
    word = words[np.minimum(starts, len(words) - 1)]
    word <<= (8 - lengths).astype(np.uint64) * np.uint64(8)
    word |= _ZERO_FILL[lengths]
    high = _eight_ones(0xF0)
    parsed = fits & ((word & high) | (((word + _eight_ones(0x06)) & high) >> np.uint64(4)) == _eight_ones(0x33))
    word -= _eight_ones(0x30)
    word = word * np.uint64(10) + (word >> np.uint64(8))
    low = np.uint64(0x000000FF000000FF)
    word = (
        (word & low) * np.uint64(100 + (1000000 << 32)) + ((word >> np.uint64(16)) & low) * np.uint64(1 + (10000 << 32))
    ) >> np.uint64(32)
    values[parsed] = word[parsed]
    return values, parsed


def _parse_decimals(chunk: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells of at most 15 digits, an optional sign and decimal point and surrounding whitespace, a
    byte position at a time across all cells: the digits make an exact integer mantissa, and one
    division by an exact power of ten rounds it correctly, as ``float`` does (Clinger's fast path)."""
    lengths = ends - starts
    width = int(min(lengths.max(initial=0), FAST_CELL_BYTES))
    mantissa = np.zeros(len(starts))
    num_digits = np.zeros(len(starts), dtype=np.int64)
    num_decimals = np.zeros(len(starts), dtype=np.int64)
    readable = lengths <= width
    seen_dot, started, finished, negative = (np.zeros(len(starts), dtype=bool) for _ in range(4))
    for offset in range(width):
        inside = offset < lengths
        byte = chunk[np.minimum(starts + offset, len(chunk) - 1)]
        space = _WHITESPACE[byte] & inside
        digit_value = byte - np.uint8(_ZERO)  # wraps around below "0"
        digit = (digit_value < 10) & inside
        dot = (byte == _DOT) & inside
        sign = ((byte == _PLUS) | (byte == _MINUS)) & inside & ~started
        finished |= space & started
        readable &= ~inside | (space | ((digit | dot | sign) & ~finished))
        readable &= ~(dot & seen_dot)
        negative |= sign & (byte == _MINUS)
        mantissa = np.where(digit, mantissa * 10 + digit_value, mantissa)
        num_digits += digit
        num_decimals += digit & seen_dot
        seen_dot |= dot
        started |= inside & ~space
    readable &= (num_digits >= 1) & (num_digits <= 15)
    values = mantissa / 10.0**num_decimals
    np.negative(values, out=values, where=negative)
    return values, readable


def _python_float(cell: str) -> tuple[float, bool]:
    """``float(cell)`` for a number as CSV writes it: ASCII, without Python's ``_`` digit separators."""
    if not cell.isascii() or "_" in cell:
        return np.nan, False
    try:
        return float(cell.strip()), True
    except ValueError:
        return np.nan, False


def _split_quoted(
    text: Text, start: int, first_line: int, positions: list[int], names: tuple[str, ...], where: str
) -> Iterator[_Block]:
    """Blocks of a body with quoted cells, split by the ``csv`` module (a quoted cell may hold a comma;
    one that spans lines is refused)."""
    line_end = [start]
    reader = csv.reader(_lines(text, start, line_end))
    lines_read = 0
    line_numbers: list[int] = []
    num_cells: list[int] = []
    cells: dict[str, list[str]] = {name: [] for name in names}
    problem = None  # raised once the rows before it are checked: an earlier bad line is reported first
    try:
        for row in reader:
            line_number = first_line + lines_read
            problem = _several_lines(reader.line_num - lines_read, line_number, where)
            if problem:
                break
            lines_read = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            line_numbers.append(line_number)
            num_cells.append(len(row))
            for name, position in zip(names, positions, strict=True):
                cells[name].append(row[position].strip() if position < len(row) else "")
            if len(line_numbers) * len(names) >= BLOCK_BYTES // 8:
                yield _text_block(line_numbers, num_cells, cells)
                line_numbers, num_cells, cells = [], [], {name: [] for name in names}
                _release(text, start, line_end[0] - start)
                start = line_end[0]
    except csv.Error as error:
        problem = _csv_module_problem(error, first_line + reader.line_num - 1, where)
    yield _text_block(line_numbers, num_cells, cells)
    if problem:
        raise DataError(problem)


def _text_block(line_numbers: list[int], num_cells: list[int], cells: dict[str, list[str]]) -> _Block:
    values, parsed = {}, {}
    for name, texts in cells.items():
        pairs = [_python_float(cell) for cell in texts]
        values[name] = np.array([value for value, _ in pairs], dtype=np.float64)
        parsed[name] = np.array([ok for _, ok in pairs], dtype=bool)
    return _Block(
        np.array(line_numbers, dtype=np.int64),
        np.array(num_cells, dtype=np.int64),
        values,
        parsed,
        lambda name, row: cells[name][row],
    )


def _check_block(block: _Block, spec: TableSpec, num_columns: int, where: str) -> dict[str, np.ndarray]:
    """The block's columns, or ``DataError`` for its first bad line: a number of cells other than the
    header's ``num_columns``, else the first cell the spec does not allow, in the spec's column order,
    else the first row check it violates."""
    num_rows = len(block.line_numbers)
    bad_count_row = _first(block.num_cells != num_columns)
    with np.errstate(invalid="ignore"):
        allowed = []
        for name in spec.columns:
            values = block.values[name]
            ok = block.parsed[name] & np.isfinite(values)
            if spec.integer:
                ok &= (values == np.floor(values)) & (np.abs(values) <= LARGEST_COUNT)
            if spec.non_negative:
                ok &= values >= 0
            allowed.append(ok)
        bad_cell_row = min(bad_count_row, _first(~np.logical_and.reduce(allowed)))
        first_violation, violated = bad_cell_row, None
        for check in spec.row_checks:
            holds = np.broadcast_to(np.asarray(check.holds(block.values), dtype=bool), (num_rows,))
            row = _first(~holds[:first_violation])
            if row < first_violation:  # an earlier check keeps a tie: later ones look strictly before it
                first_violation, violated = row, check
    if violated is not None:
        shown = ", ".join(f"{name}={block.values[name][first_violation]:g}" for name in spec.columns)
        raise DataError(
            f"{where}, line {block.line_numbers[first_violation]}: {shown} violates {violated.description}."
        )
    if bad_count_row == bad_cell_row < num_rows:
        raise DataError(
            f"{where}, line {block.line_numbers[bad_count_row]}: {_cells(block.num_cells[bad_count_row])}, but the "
            f"header has {_cells(num_columns)}; every row needs one cell per column."
        )
    if bad_cell_row < num_rows:
        name = next(name for name, ok in zip(spec.columns, allowed, strict=True) if not ok[bad_cell_row])
        raise DataError(
            f"{where}, line {block.line_numbers[bad_cell_row]}, column {name}: "
            f"{_shown(block.cell_text(name, bad_cell_row))} is not allowed; expected {spec.describe()}."
        )
    return block.values


def _cells(number: int) -> str:
    return f"{number} cell{'' if number == 1 else 's'}"


def _shown(cell: str) -> str:
    """A cell as a message quotes it: an empty one by name, a long one cut."""
    if not cell:
        return "an empty cell"
    if len(cell) > SHOWN_CELL_CHARS:
        return f"{cell[:SHOWN_CELL_CHARS]!r}... ({len(cell)} characters)"
    return repr(cell)


def _first(mask: np.ndarray) -> int:
    """The index of the first true element of ``mask``, or its length where none is."""
    return int(np.argmax(mask)) if mask.any() else len(mask)
