"""Property-based: command lines, data files and their line numbers, in process (the end-to-end cases
through ``train.py`` are in ``test_malformed_input_end_to_end.py``).

Every input is either accepted, and then usable, or refused with the project's ``UserInputError`` in
one line that names the key or file; never another exception.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lightning_svi.config.command_line import check_command_line, require_creatable_folder
from lightning_svi.config.model_specs import BETA_BERNOULLI, BETA_BINOMIAL
from lightning_svi.config.table import LARGEST_COUNT, read_table
from lightning_svi.data.readers import read_columns
from lightning_svi.errors import ConfigError, DataError, UserInputError

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_one_line(error: Exception, starts_with: str) -> None:
    message = str(error)
    assert message.startswith(starts_with), message
    assert "\n" not in message and 20 < len(message) < 600, message


# --- the command line ------------------------------------------------------------------------------------------

keys = st.sampled_from(["data.path", "seed", "optim.lr", "hydra.run.dir", "+model.x", "~data.synthetic", "a.b"])
values = st.text(alphabet="abc01/~.=,[]{}:'\"$ -_\\", max_size=12)


@PROPERTY
@given(key=keys, value=values)
@example(key="data.path", value="~/counts.csv")
@example(key="optim.lr", value="[1,")
@example(key="hydra.run.dir", value="${now:")
def test_an_override_is_passed_to_hydra_exactly_when_its_grammar_takes_it(key: str, value: str) -> None:
    text = f"{key}={value}"
    try:
        OverridesParser.create().parse_overrides([text])
        parsable = True
    except OverrideParseException:
        parsable = False
    try:
        check_command_line([text])
    except ConfigError as error:
        assert_one_line(error, text)
        refused_for_the_folder = key == "hydra.run.dir" and parsable
        assert not parsable or refused_for_the_folder, str(error)
        if "~" in value and not parsable:
            assert "quote the value for Hydra" in str(error)
        return
    assert parsable, text


def test_an_unquoted_tilde_is_explained() -> None:
    with pytest.raises(ConfigError) as error:
        check_command_line(["-m", "data.path=~/counts.csv", "seed=0,1"])
    assert str(error.value) == (
        "data.path=~/counts.csv: Hydra's override grammar does not allow an unquoted ~; write "
        "data.path=$HOME/counts.csv (the shell expands $HOME) or quote the value for Hydra: "
        "\"data.path='~/counts.csv'\" (lightning-svi expands a leading ~ in data.path)."
    )


# A tree of folders and files, and run folders in it: refused exactly when an existing path above
# (or at) the run folder is a file.
TREE = {"folder": None, "folder/file": b"x", "file": b"x", "folder/inner": None}
run_folders = st.lists(
    st.sampled_from(["folder", "file", "inner", "new", "${now:%H}", "x${a}"]), min_size=1, max_size=4
)


@PROPERTY
@given(parts=run_folders)
def test_a_run_folder_is_refused_exactly_when_a_file_stands_in_its_way(parts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as root:
        for name, content in TREE.items():
            if content is None:
                (Path(root) / name).mkdir()
            else:
                (Path(root) / name).write_bytes(content)
        value = "/".join([root, *parts])
        literal = value.split("${")[0]
        known = Path(literal) if "${" not in value or literal.endswith("/") else Path(literal).parent
        blocked = next((path for path in (known, *known.parents) if path.exists()), None)
        try:
            require_creatable_folder("hydra.run.dir", value)
        except ConfigError as error:
            assert_one_line(error, f"hydra.run.dir={value}: {blocked} is a file")
            assert blocked is not None and blocked.is_file()
            return
        assert blocked is None or blocked.is_dir()


# --- data files: line numbers ----------------------------------------------------------------------------------


@st.composite
def counts_with_one_bad_cell(draw: st.DrawFn, blanks: tuple[str, ...] = ("",)) -> tuple[list[str], int, str]:
    """Lines of a successes,trials file (some of ``blanks`` among them) with one bad cell: (lines, its line
    number, cell)."""
    num_rows = draw(st.integers(1, 30))
    bad_row = draw(st.integers(0, num_rows - 1))
    bad_cell = draw(st.sampled_from(["x", "1_0", "-1", "2.5", "٣", "1e400", "nan"]))
    blank = st.sampled_from(blanks)
    lines = [*draw(st.lists(blank, max_size=3)), "successes,trials"]
    bad_line = 0
    for row in range(num_rows):
        lines += draw(st.lists(blank, max_size=2))
        trials = draw(st.integers(0, 1000))
        successes = bad_cell if row == bad_row else str(draw(st.integers(0, trials)))
        lines.append(f"{successes},{trials}")
        if row == bad_row:
            bad_line = len(lines)
    return lines, bad_line, bad_cell


@PROPERTY
@given(case=counts_with_one_bad_cell(blanks=("", " ", " , ", "\t")), newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_the_table_check_names_the_bad_cells_line_in_the_file(case: tuple[list[str], int, str], newline: str) -> None:
    lines, bad_line, bad_cell = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "counts.csv"
        path.write_bytes(newline.join(lines).encode())
        with pytest.raises(DataError) as error:
            read_table(path, BETA_BINOMIAL.table)
    assert_one_line(error.value, f"data.path={path}, line {bad_line}, column successes: {bad_cell!r} is not allowed")


@PROPERTY
@given(case=counts_with_one_bad_cell(), newline=st.sampled_from(["\n", "\r\n"]))
def test_the_data_file_reader_names_the_bad_cells_line_in_the_file(
    case: tuple[list[str], int, str], newline: str
) -> None:
    lines, bad_line, bad_cell = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "counts.csv"
        path.write_bytes(newline.join(lines).encode())  # empty lines: pyarrow skips those, and only those
        if bad_cell in ("-1", "2.5"):  # numbers, only not counts: data=file reads any finite number
            num_rows = sum(1 for line in lines if "," in line) - 1
            assert read_columns(path)["successes"].tolist().count(float(bad_cell)) == 1
            assert len(read_columns(path)["successes"]) == num_rows
            return
        with pytest.raises(DataError) as error:
            read_columns(path)
    assert_one_line(error.value, f"data.path={path}, line {bad_line}, column successes: ")


# --- data files: anything ----------------------------------------------------------------------------------------

cells = st.one_of(
    st.sampled_from(["0", "1", "1.0", "1e0", " 1 ", "", "nan", "inf", "1_0", "٣", "0x1", "16777217", '"1"', '"1\n"']),
    st.integers(-5, 2**25).map(str),
    st.text(alphabet="01.e-+ x", max_size=5),
)


@st.composite
def outcome_files(draw: st.DrawFn) -> bytes:
    header = draw(st.sampled_from(["outcome", "outcome,note", "note,outcome", "outcome,outcome", "outcome,"]))
    width = header.count(",") + 1
    rows = draw(st.lists(st.lists(cells, min_size=1, max_size=3).filter(lambda row: len(row) <= width + 1), max_size=5))
    newline = draw(st.sampled_from(["\n", "\r\n", "\n\n"]))
    return newline.join([header, *(",".join(row) for row in rows)]).encode()


@PROPERTY
@given(content=outcome_files())
@example(content=b"outcome,note\n1,a\n,b\n")  # an empty outcome
@example(content=b"outcome\n1.0\n0\n")  # accepted: a whole number with a decimal point
def test_a_bernoulli_file_is_read_exactly_or_refused_in_one_line(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "flips.csv"
        path.write_bytes(content)
        try:
            table = read_table(path, BETA_BERNOULLI.table)
        except DataError as error:
            assert_one_line(error, f"data.path={path}")
            return
    # Accepted: one 0 or 1 per non-blank row, and a header that names outcome once.
    header = content.split(b"\n")[0].decode().strip().split(",")
    assert header.count("outcome") == 1
    assert set(np.unique(table["outcome"]).tolist()) <= {0.0, 1.0}


@PROPERTY
@given(content=outcome_files() | st.binary(max_size=100))
def test_a_data_file_is_read_into_finite_tensors_or_refused_in_one_line(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "flips.csv"
        path.write_bytes(content)
        try:
            columns = read_columns(path)
        except UserInputError as error:
            assert_one_line(error, f"data.path={path}")
            return
    assert len({len(tensor) for tensor in columns.values()}) == 1
    assert all(torch.isfinite(tensor).all() for tensor in columns.values())


def test_counts_up_to_float32s_exact_range_reach_the_model_exactly(tmp_path: Path) -> None:
    # Above 2**24 float32 rounds (2**24 + 1 becomes 2**24): such counts are refused, not trained on.
    from lightning_svi.models.beta_binomial import BetaBinomial

    path = tmp_path / "counts.csv"
    path.write_text(f"successes,trials\n{LARGEST_COUNT - 1},{LARGEST_COUNT}\n0,1\n")
    data = BetaBinomial.data_from_table(read_table(path, BetaBinomial.table))
    assert data["trials"].tolist() == [LARGEST_COUNT, 1] and data["successes"].tolist() == [LARGEST_COUNT - 1, 0]
    assert float(np.float32(LARGEST_COUNT + 1)) != LARGEST_COUNT + 1
    path.write_text(f"successes,trials\n0,{LARGEST_COUNT + 1}\n")
    with pytest.raises(DataError, match=r"line 2, column trials: '16777217' is not allowed"):
        read_table(path, BetaBinomial.table)
