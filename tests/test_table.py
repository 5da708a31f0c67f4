"""CSV tables are read or rejected with a message that says where and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_svi.data.table import RowCheck, TableSpec, read_table
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
        ("successes,trials\n1\n", "line 2, column trials: '' is not allowed"),
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
