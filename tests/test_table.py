"""CSV tables are read or rejected with a message that says where and why."""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_svi.config import table as table_module
from lightning_svi.config.table import LARGEST_COUNT, RowCheck, TableSpec, read_table
from lightning_svi.errors import DataError

SPEC = TableSpec(
    columns=("successes", "trials"),
    row_checks=(RowCheck("successes <= trials", lambda row: row["successes"] <= row["trials"]),),
)


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "counts.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_reads_columns_in_any_order_and_ignores_extra_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "group,trials,successes\na,10,3\nb,20,0\n\n")
    assert read_table(path, SPEC) == {"successes": [3.0, 0.0], "trials": [10.0, 20.0]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("successes,trials\n", "no data rows"),
        ("successes,n\n1,2\n", "missing column(s) trials; the header has successes, n"),
        ("successes,trials\n1.5,3\n", "line 2, column successes: '1.5' is not allowed"),
        ("successes,trials\n1,three\n", "line 2, column trials: 'three' is not allowed"),
        ("successes,trials\n-1,3\n", "line 2, column successes: '-1' is not allowed"),
        ("successes,trials\n1,nan\n", "column trials: 'nan' is not allowed"),
        ("successes,trials\n1,inf\n", "column trials: 'inf' is not allowed"),
        ("successes,trials\n1,3\n5,4\n", "line 3: successes=5, trials=4 violates successes <= trials"),
        ("successes,trials\n1\n", "line 2: 1 cell, but the header has 2 cells; every row needs one cell per column"),
        ("successes,trials\n1,2,3\n", "line 2: 3 cells, but the header has 2 cells"),
        ("successes,trials\n1,2,\n", "line 2: 3 cells, but the header has 2 cells"),
        ("successes,trials\n1,\n", "line 2, column trials: an empty cell is not allowed"),
        ("successes,trials,successes\n1,2,3\n", "line 1: the header names column successes twice"),
        ("\nn,n,successes,trials\n1,1,1,2\n", "line 2: the header names column n twice"),
        ('successes,trials\n1,"2\n"\n', "line 2: a quoted cell runs over 2 lines; each row must be on one line"),
        ('"successes\n",trials\n1,2\n', "line 1: a quoted cell runs over 2 lines"),
        ("successes,trials\n1_0,20\n", "line 2, column successes: '1_0' is not allowed"),
        ("successes,trials\n1,٣\n", "line 2, column trials: '٣' is not allowed"),
        (
            "successes,trials\n1,16777217\n",
            "'16777217' is not allowed; expected columns successes, trials "
            "(non-negative integers up to 16777216 = 2**24, the models' float32 holds them exactly)",
        ),
        ('n,successes,trials\n"a,b",1,"' + "9" * 200_000 + '"\n', "line 2: a cell longer than 131072 characters"),
        ('successes,trials\n1,"' + "9" * 200_000 + '"\n', "line 2, column trials: '999999999"),
        (
            "successes,trials\n1," + "9" * 200_000 + "\n",
            "'9999999999999999999999999999999999999999'... (200000 characters)",
        ),
        (b"successes,trials\n\xff\xfe1,2\n", "not a UTF-8 text file"),
        (b"\x00\x01\x02binary", "NUL bytes"),
    ],
)
def test_rejects_bad_files_with_a_precise_message(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(DataError) as error:
        read_table(path, SPEC)
    assert message in str(error.value)
    assert f"data.path={path}" in str(error.value)


def test_missing_file_names_the_path_and_the_expected_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such file\. Expected a CSV file with columns successes, trials"):
        read_table(tmp_path / "absent.csv", SPEC)


def test_line_numbers_count_blank_lines_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "\nsuccesses,trials\n\n1,2\n , \n3,x\n")
    with pytest.raises(DataError, match="line 6, column trials: 'x' is not allowed"):
        read_table(path, SPEC)


def test_quoted_cells_keep_the_csv_modules_rules(tmp_path: Path) -> None:
    path = write(tmp_path, 'group,successes,"trials"\n"a,b",1,2\n"two, words","3",3\n')
    assert read_table(path, SPEC) == {"successes": [1.0, 3.0], "trials": [2.0, 3.0]}
    path = write(tmp_path, 'group,successes,trials\n"a,b",1,2\n"two words",4,3\n')
    with pytest.raises(DataError, match="line 3: successes=4, trials=3 violates"):
        read_table(path, SPEC)


def test_a_bad_line_before_a_multi_line_cell_is_reported_first(tmp_path: Path) -> None:
    path = write(tmp_path, 'group,successes,trials\na,5,4\n"two\nlines",1,2\n')
    with pytest.raises(DataError, match="line 2: successes=5, trials=4 violates"):
        read_table(path, SPEC)


def test_a_whole_number_may_be_written_with_a_decimal_point_or_an_exponent(tmp_path: Path) -> None:
    path = write(tmp_path, "successes,trials\n1.0,2.00\n1e1,1.6777216e7\n")
    assert read_table(path, SPEC) == {"successes": [1.0, 10.0], "trials": [2.0, 2**24]}


def test_a_leading_tilde_is_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path, "successes,trials\n1,2\n")
    assert read_table("~/counts.csv", SPEC) == {"successes": [1.0], "trials": [2.0]}


def test_cells_read_as_python_reads_a_float(tmp_path: Path) -> None:
    # The vectorized parser's cells and those it leaves to float(): signs, spaces, exponents, underscores.
    spec = TableSpec(columns=("x",), integer=False, non_negative=False)
    cells = ["0.1", "-1.5", " +3 ", "\t.5", "5.", "-0", "123456789012345", "1234567890123456789", "1e2", "1E-2"]
    path = write(tmp_path, "x\n" + "\n".join(cells) + "\n")
    table = read_table(path, spec)
    assert table["x"].tolist() == [float(cell) for cell in cells]
    assert table == {"x": [float(cell) for cell in cells]} and table != {"x": [0.0] * len(cells)}
    for literal in ["1_000", "٣", "0x10", "1 000"]:  # Python literals (or none) but not CSV numbers
        with pytest.raises(DataError, match=f"line 2, column x: {literal!r} is not allowed"):
            read_table(write(tmp_path, f"x\n{literal}\n"), spec)


def test_a_file_of_many_blocks_reports_the_first_bad_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_module, "BLOCK_BYTES", 64)
    rows = [f"{row % 7},{row % 7 + row % 3}" for row in range(200)]
    path = write(tmp_path, "successes,trials\n" + "\n".join(rows) + "\n")
    table = read_table(path, SPEC)
    assert table["successes"].tolist() == [row % 7 for row in range(200)]
    rows[150], rows[170] = "2,1", "x,1"
    path = write(tmp_path, "successes,trials\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match="line 152: successes=2, trials=1 violates"):
        read_table(path, SPEC)


SCANNED_FILES = [
    "successes,trials\n1,2\n3,4\n",
    "\ufeffsuccesses,trials\r\n1,2\r\n\r\n3,4\r\n",  # a BOM, \r\n line ends
    "note,successes,trials\n\u00e9t\u00e9,1,2\n\u4e2d\u6587,3,4\n",  # characters of 2 and 3 bytes
    'note,successes,trials\nplain,1,2\n"a,b",3,4\n',  # a quote only after the first scanned chunk
    "successes,trials\n1,2\n3,\u00e94\n",
    "successes,trials\n1,2\n3,4\x00\n",
]


@pytest.mark.parametrize("content", SCANNED_FILES)
def test_the_file_is_scanned_in_chunks_as_if_whole(
    tmp_path: Path, content: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Characters, quotes and NUL bytes across the edges of 7-byte chunks: as one chunk of the whole file.
    path = write(tmp_path, content.encode())
    outcomes = []
    for scan_bytes in (table_module.SCAN_BYTES, 7):
        monkeypatch.setattr(table_module, "SCAN_BYTES", scan_bytes)
        try:
            outcomes.append(read_table(path, SPEC))
        except DataError as error:
            outcomes.append(str(error))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("cut", range(1, 12))
def test_invalid_utf8_is_reported_at_its_byte_whatever_the_chunks(
    tmp_path: Path, cut: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = "successes,trials\n1,2\n\u00e9\u4e2d\n".encode()
    content = content[:-3] + b"\xff" + content[-2:]  # the second byte of a 3-byte character, replaced
    with pytest.raises(UnicodeDecodeError) as decoding:
        content.decode("utf-8")
    expected = f"not a UTF-8 text file ({decoding.value.reason} at byte {decoding.value.start})"
    monkeypatch.setattr(table_module, "SCAN_BYTES", cut)
    with pytest.raises(DataError, match=re.escape(expected)):
        read_table(write(tmp_path, content), SPEC)


def test_a_quoted_file_of_many_blocks_reports_the_first_bad_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(table_module, "BLOCK_BYTES", 64)  # the csv module's rows, 4 to a block
    rows = [f'"{row % 7}",{row % 7 + row % 3}' for row in range(200)]
    path = write(tmp_path, "successes,trials\n" + "\n".join(rows) + "\n")
    assert read_table(path, SPEC)["successes"].tolist() == [row % 7 for row in range(200)]
    rows[150] = '"2",1'
    with pytest.raises(DataError, match="line 152: successes=2, trials=1 violates"):
        read_table(write(tmp_path, "successes,trials\n" + "\n".join(rows) + "\n"), SPEC)


def test_a_large_file_is_checked_in_seconds(tmp_path: Path) -> None:
    # 20 MB: the row-by-row reader this replaced took about 34 s on it.
    counts = np.random.default_rng(0).integers(0, 1000, size=(200_000, 2))
    counts.sort(axis=1)
    block = "".join(f"{successes},{trials}\n" for successes, trials in counts.tolist())
    path = write(tmp_path, "successes,trials\n" + block * 10)
    started = time.perf_counter()
    table = read_table(path, SPEC)
    seconds = time.perf_counter() - started
    expected = np.tile(counts, (10, 1))
    assert np.array_equal(table["successes"], expected[:, 0]) and np.array_equal(table["trials"], expected[:, 1])
    assert seconds < 10, f"{path.stat().st_size / 1e6:.0f} MB checked in {seconds:.1f} s"


ONE_LINE = "each row must be on one line, with one number per cell."


def csv_float(cell: str) -> float:
    """A cell's number as ``float`` reads it, if written in ASCII without ``_`` digit separators; else NaN."""
    if not cell.isascii() or "_" in cell:
        return math.nan
    try:
        return float(cell.strip())
    except ValueError:
        return math.nan


def reference_read_table(path: Path, spec: TableSpec) -> dict[str, list[float]]:
    """The row-by-row ``csv``-module reader ``read_table`` replaced, counting lines in the file (blank
    lines included), for files that are UTF-8 text without NUL bytes, with short cells (a quoted cell
    over several lines is refused)."""
    where = f"data.path={path}"
    reader = csv.reader(path.read_text(encoding="utf-8-sig").splitlines())
    rows, lines_read, header, header_line = [], 0, None, 0
    for row in reader:
        if reader.line_num - lines_read > 1:
            rows.append((lines_read + 1, reader.line_num - lines_read))  # a quoted cell over several lines
            break
        if any(cell.strip() for cell in row):
            rows.append((lines_read + 1, row))
        lines_read = reader.line_num
    if rows and isinstance(rows[0][1], int):
        raise DataError(f"{where}, line {rows[0][0]}: a quoted cell runs over {rows[0][1]} lines; {ONE_LINE}")
    if not rows:
        raise DataError(f"{where}: the file is empty. Expected a header line with {spec.describe()}.")
    header_line, header = rows[0][0], [cell.strip() for cell in rows[0][1]]
    missing = [name for name in spec.columns if name not in header]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)}; the header has {', '.join(header) or 'nothing'}. "
            f"Expected {spec.describe()}."
        )
    twice = sorted({name for name in header if name and header.count(name) > 1})
    if twice:
        raise DataError(
            f"{where}, line {header_line}: the header names column {twice[0]} twice; "
            "each column needs a name of its own."
        )
    if len(rows) == 1:
        raise DataError(f"{where}: the file has a header but no data rows.")
    table: dict[str, list[float]] = {name: [] for name in spec.columns}
    for line_number, row in rows[1:]:
        if isinstance(row, int):
            raise DataError(f"{where}, line {line_number}: a quoted cell runs over {row} lines; {ONE_LINE}")
        if len(row) != len(header):
            raise DataError(
                f"{where}, line {line_number}: {len(row)} cell{'' if len(row) == 1 else 's'}, but the header has "
                f"{len(header)} cell{'' if len(header) == 1 else 's'}; every row needs one cell per column."
            )
        values = {}
        for name in spec.columns:
            cell = row[header.index(name)].strip()
            value = csv_float(cell)
            allowed = math.isfinite(value)
            if allowed and spec.integer:
                allowed = value == int(value) and abs(value) <= LARGEST_COUNT
            if allowed and spec.non_negative:
                allowed = value >= 0
            if not allowed:
                shown = repr(cell) if cell else "an empty cell"
                raise DataError(
                    f"{where}, line {line_number}, column {name}: {shown} is not allowed; expected {spec.describe()}."
                )
            values[name] = value
        for check in spec.row_checks:
            if not check.holds(values):
                shown = ", ".join(f"{name}={values[name]:g}" for name in spec.columns)
                raise DataError(f"{where}, line {line_number}: {shown} violates {check.description}.")
        for name, value in values.items():
            table[name].append(value)
    return table


# Cells the vectorized parser reads, cells it leaves to float(), and cells neither reads; no line
# separators other than \n, \r\n and \r (str.splitlines also splits at \f, \v, \x1c-\x1e and U+2028).
CELLS = st.one_of(
    st.sampled_from(["0", "1", "3", "10", "007", "-1", "1.5", "2.0", "1e2", " 7 ", "+3", "", " ", "x", "nan"]),
    st.sampled_from(["inf", "1_0", "٣", "\xa0", "1e400", "9007199254740993", "12345678901234567", '"5"', '"1,2"']),
    st.text(alphabet='0123456789.+-e ,"x\n\t', max_size=6),
)
HEADERS = st.sampled_from(["successes,trials", "trials,successes,extra", '"successes", trials', "successes", ""])


@settings(max_examples=300, deadline=None)
@given(
    header=HEADERS,
    rows=st.lists(st.lists(CELLS, max_size=4), max_size=6),
    newline=st.sampled_from(["\n", "\r\n", "\n\n"]),
)
def test_reads_and_refuses_exactly_like_the_row_by_row_reader(header: str, rows: list[list[str]], newline: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "counts.csv"
        path.write_text(newline.join([header, *(",".join(row) for row in rows)]), newline="")
        outcomes = []
        for reader in (read_table, reference_read_table):
            try:
                outcomes.append(reader(path, SPEC))
            except DataError as error:
                outcomes.append(str(error))
    assert outcomes[0] == outcomes[1]


QUOTED_CELLS = st.one_of(
    st.sampled_from(['"5"', '""', '"1,2"', '"a""b"', ' "3"', '"3" ', '"3"x', 'x"3"', '"', "7", "", '"\n"', '"1', '2"']),
    st.text(alphabet='0123" ,\n', max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(QUOTED_CELLS, max_size=3), max_size=8),
    header=st.sampled_from(["successes,trials", '"successes","trials"', "x,successes,trials"]),
    block_bytes=st.sampled_from([8, 24, table_module.BLOCK_BYTES]),
)
def test_quoted_cells_read_vectorized_or_by_the_csv_module_as_the_row_by_row_reader(
    rows: list[list[str]], header: str, block_bytes: int
) -> None:
    # Cells quoted whole are read vectorized; from the first block with other quoting on, by the csv module.
    default_block_bytes, table_module.BLOCK_BYTES = table_module.BLOCK_BYTES, block_bytes
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "counts.csv"
            path.write_text("\n".join([header, *(",".join(row) for row in rows)]), newline="")
            outcomes = []
            for reader in (read_table, reference_read_table):
                try:
                    outcomes.append(reader(path, SPEC))
                except DataError as error:
                    outcomes.append(str(error))
    finally:
        table_module.BLOCK_BYTES = default_block_bytes
    assert outcomes[0] == outcomes[1]


def test_every_cell_reads_as_a_csv_number_or_is_refused() -> None:
    # The three parsers (eight bytes at a time, a byte position at a time, float() itself) against float()
    # of the cells written in ASCII without digit separators.
    rng = np.random.default_rng(0)
    alphabet = [*"0123456789" * 4, *"/:. -+e\t\x1c_n", "٣"]
    cells = ["".join(rng.choice(alphabet, size=rng.integers(0, 12))) for _ in range(20_000)]
    cells += [str(rng.integers(0, 10 ** rng.integers(1, 18))) for _ in range(5_000)]
    cells += [f"{rng.uniform(-1e6, 1e6):.{rng.integers(0, 13)}f}" for _ in range(5_000)]
    encoded = [cell.encode() for cell in cells]
    lengths = np.array([len(cell) for cell in encoded])
    starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
    values, parsed = table_module._parse_cells(np.frombuffer(b",".join(encoded), np.uint8), starts, starts + lengths)
    for cell, value, ok in zip(cells, values.tolist(), parsed.tolist(), strict=True):
        expected = csv_float(cell)
        if math.isnan(expected):  # no cell spells nan: NaN is a refusal
            assert not ok, cell
            continue
        assert ok and value == expected, cell
        assert math.copysign(1, value) == math.copysign(1, expected), cell


def test_the_table_check_imports_no_torch() -> None:
    # train.py checks a built-in model's file before torch is imported; lightning_svi.data's exports are lazy.
    code = "import sys, lightning_svi.config.table, lightning_svi.config.model_specs; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
