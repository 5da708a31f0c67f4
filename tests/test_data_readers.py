"""Data files of any of the four formats become dicts of tensors, or a ``DataError`` that names the file,
the column and what is allowed; ``FileDataModule`` serves them as dict batches with their rows' ``index``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hydra.utils import instantiate

from lightning_svi.data import FileDataModule, TensorDataModule, read_columns
from lightning_svi.errors import ConfigError, DataError
from tests.conftest import REPO, compose_config

NUM_ROWS = 10
IMAGES = torch.arange(NUM_ROWS * 3 * 2, dtype=torch.float64).reshape(NUM_ROWS, 3, 2) / 7
LENGTHS = torch.arange(NUM_ROWS) % 4


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def points_csv(tmp_path: Path) -> Path:
    rows = "\n".join(f"{row / 4},{row % 3},{-row}" for row in range(NUM_ROWS))
    return write_csv(tmp_path / "points.csv", f"x,lengths,y\n{rows}\n")


def test_csv_columns_become_default_float_tensors_in_the_files_order(points_csv: Path) -> None:
    data = read_columns(points_csv)
    assert list(data) == ["x", "lengths", "y"]
    assert all(tensor.dtype == torch.get_default_dtype() and tensor.shape == (NUM_ROWS,) for tensor in data.values())
    assert data["x"].tolist() == [row / 4 for row in range(NUM_ROWS)]
    assert data["y"].tolist() == [-row for row in range(NUM_ROWS)]


def test_columns_choose_and_order_and_dtype_converts_per_column(points_csv: Path) -> None:
    data = read_columns(points_csv, columns=["y", "lengths"], dtype={"lengths": "long"})
    assert list(data) == ["y", "lengths"]
    assert data["lengths"].dtype == torch.long and data["lengths"].tolist() == [row % 3 for row in range(NUM_ROWS)]
    assert data["y"].dtype == torch.get_default_dtype()
    assert all(tensor.dtype == torch.float64 for tensor in read_columns(points_csv, dtype="float64").values())


def test_tsv_is_read_with_tabs(tmp_path: Path) -> None:
    data = read_columns(write_csv(tmp_path / "points.tsv", "x\ty\n1\t2\n3\t4\n"))
    assert data["x"].tolist() == [1.0, 3.0] and data["y"].tolist() == [2.0, 4.0]


def test_parquet_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "points.parquet"
    pq.write_table(pa.table({"x": IMAGES[:, 0, 0].numpy(), "lengths": LENGTHS.numpy()}), path)
    data = read_columns(path, dtype={"lengths": torch.long})
    assert torch.equal(data["x"], IMAGES[:, 0, 0].float()) and torch.equal(data["lengths"], LENGTHS)


def test_a_parquet_row_that_is_not_finite_is_refused_by_its_row(tmp_path: Path) -> None:
    path = tmp_path / "points.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, float("nan")]}), path)
    with pytest.raises(DataError, match=r"points\.parquet, row 3, column x: nan is not allowed; expected finite"):
        read_columns(path)


def test_a_leading_tilde_is_the_home_folder(points_csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(points_csv.parent))
    assert torch.equal(read_columns(f"~/{points_csv.name}")["x"], read_columns(points_csv)["x"])


def test_npz_round_trip_keeps_each_arrays_shape(tmp_path: Path) -> None:
    path = tmp_path / "images.npz"
    np.savez(path, images=IMAGES.numpy(), lengths=LENGTHS.numpy())
    data = read_columns(path, dtype={"lengths": "long"})
    assert data["images"].shape == (NUM_ROWS, 3, 2) and data["images"].dtype == torch.get_default_dtype()
    assert torch.equal(data["images"], IMAGES.float()) and torch.equal(data["lengths"], LENGTHS)


def test_torch_round_trip_keeps_each_tensors_shape(tmp_path: Path) -> None:
    path = tmp_path / "images.pt"
    torch.save({"images": IMAGES, "lengths": LENGTHS}, path)
    data = read_columns(path, columns=["lengths", "images"], dtype={"images": "float64", "lengths": "long"})
    assert list(data) == ["lengths", "images"]
    assert torch.equal(data["images"], IMAGES) and torch.equal(data["lengths"], LENGTHS)


def test_bool_columns_need_zeros_and_ones(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "flips.csv", "flip\n0\n1\n1\n")
    assert read_columns(path, dtype="bool")["flip"].tolist() == [False, True, True]
    with pytest.raises(DataError, match=r"line 3, column flip: 2\.0 is not allowed; expected 0 or 1 for dtype bool"):
        read_columns(write_csv(tmp_path / "flips.csv", "flip\n0\n2\n"), dtype="bool")


BAD_CSV = [
    ("", "the file is empty"),
    ("x,y\n", "the file has no data rows"),
    ("x,y\n1,2\n3,abc\n", "line 3, column y: 'abc' is not allowed; expected numbers"),
    ("x,y\n1,2\n3,\n", "line 3, column y: empty cell"),
    ("x,y\n1,2\n3\n", "line 3: 1 cell, but the header has 2; every row needs one cell per column"),
    # Blank lines count: the line is the file's.
    ("\nx,y\n\n1,2\r\n\r\n\n3,abc\n", "line 7, column y: 'abc' is not allowed"),
    ("x,y\n\n\n1,2\n\n3,4,5\n", "line 6: 3 cells, but the header has 2"),
    ("x,y,x\n1,2,3\n", "line 1: the header names column 'x' twice"),
    ("x,y\n1_0,2\n", "line 2, column x: '1_0' is not allowed; expected numbers"),
    ("x,y\n1,٣\n", "line 2, column y: '٣' is not allowed; expected numbers"),
    ("x,y\n1,nan\n", "line 2, column y: nan is not allowed; expected finite numbers"),
    ("x,y\n1,-inf\n", "line 2, column y: -inf is not allowed; expected finite numbers"),
    ("x,y\n1," + "9" * 200_000 + "\n", "line 2, column y: inf is not allowed; expected finite numbers"),
]


@pytest.mark.parametrize(("content", "message"), BAD_CSV, ids=[message[:60] for _, message in BAD_CSV])
def test_bad_csv_names_file_column_and_what_is_allowed(tmp_path: Path, content: str, message: str) -> None:
    path = write_csv(tmp_path / "points.csv", content)
    with pytest.raises(DataError) as error:
        read_columns(path)
    assert message in str(error.value) and f"data.path={path}" in str(error.value)


def test_a_fraction_in_an_integer_column_names_its_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "points.csv", "x,lengths\n1,2\n3,4.5\n")
    with pytest.raises(DataError, match=r"line 3, column lengths: '4\.5' is not allowed; expected whole numbers"):
        read_columns(path, dtype={"lengths": "long"})
    np.savez(tmp_path / "points.npz", lengths=np.array([1.0, 2.0, 4.5]))
    with pytest.raises(DataError, match=r"row 3, column lengths: 4\.5 is not allowed; expected whole numbers"):
        read_columns(tmp_path / "points.npz", dtype={"lengths": "long"})


def test_unknown_column_lists_the_files_columns(points_csv: Path) -> None:
    with pytest.raises(DataError, match=rf"data\.path={points_csv}: no column 'z'; the file has 'x', 'lengths', 'y'"):
        read_columns(points_csv, columns=["x", "z"])


def test_missing_file_and_unsupported_suffix_list_the_formats(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"absent\.csv: no such file\. Expected a data file: CSV"):
        read_columns(tmp_path / "absent.csv")
    (tmp_path / "points.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"points\.xlsx: unsupported file type '\.xlsx'; expected CSV .* Parquet"):
        read_columns(tmp_path / "points.xlsx")


def test_arrays_of_unequal_length_are_refused_with_each_length(tmp_path: Path) -> None:
    np.savez(tmp_path / "points.npz", x=np.zeros((5, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"points\.npz: the columns differ in length \(first dimension\): x 5, y 4"):
        read_columns(tmp_path / "points.npz")


def test_arrays_that_are_not_numbers_or_rows_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "names.npz", names=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"names\.npz, column names: dtype <U1 is not numeric"):
        read_columns(tmp_path / "names.npz")
    np.savez(tmp_path / "scalar.npz", x=np.float64(3.0))
    with pytest.raises(DataError, match=r"scalar\.npz, column x: a scalar"):
        read_columns(tmp_path / "scalar.npz")
    pq.write_table(pa.table({"name": ["a", "b"]}), tmp_path / "names.parquet")
    with pytest.raises(DataError, match=r"names\.parquet, column name: type string is not numeric"):
        read_columns(tmp_path / "names.parquet")


def test_files_of_the_wrong_kind_are_refused(tmp_path: Path) -> None:
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(DataError, match=r"list\.pt: holds a list; expected a dict of tensors"):
        read_columns(tmp_path / "list.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(DataError, match=r"text\.pt: not loadable by torch\.load"):
        read_columns(tmp_path / "text.pt")
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"text\.parquet: not a readable Parquet file"):
        read_columns(tmp_path / "text.parquet")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(DataError, match=r"text\.npz: not a NumPy \.npz file"):
        read_columns(tmp_path / "text.npz")


def test_bad_dtype_options_are_config_errors(points_csv: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.dtype='quaternion': unknown dtype; allowed values are float"):
        read_columns(points_csv, dtype="quaternion")
    with pytest.raises(ConfigError, match=r"data\.dtype\.z: no such column among those read \(x, lengths, y\)"):
        read_columns(points_csv, dtype={"z": "long"})


def test_file_data_module_gives_full_batches_and_minibatches_with_their_index(tmp_path: Path) -> None:
    path = tmp_path / "images.npz"
    np.savez(path, images=IMAGES.numpy(), lengths=LENGTHS.numpy())
    full = FileDataModule(path, dtype={"lengths": "long"})
    assert isinstance(full, TensorDataModule) and full.num_rows == NUM_ROWS
    batch = full.full_batch()
    assert torch.equal(batch["index"], torch.arange(NUM_ROWS)) and batch["images"].shape == (NUM_ROWS, 3, 2)
    assert torch.equal(next(iter(full.train_dataloader()))["lengths"], LENGTHS)
    minibatches = FileDataModule(path, batch_size=4, seed=1).train_dataloader()
    batch = next(iter(minibatches))
    assert set(batch) == {"index", "images", "lengths"}
    assert batch["images"].shape == (4, 3, 2) and batch["lengths"].shape == (4,)
    assert torch.equal(batch["images"], IMAGES[batch["index"]].float())


def test_data_file_config_builds_the_module(points_csv: Path) -> None:
    overrides = [
        f"data.path={points_csv}",
        "data.columns=[x,lengths]",
        "data.dtype={lengths:long}",
        "data.batch_size=5",
    ]
    config = compose_config("data=file", *overrides)
    datamodule = instantiate(config.data)
    assert isinstance(datamodule, FileDataModule) and datamodule.seed == config.seed
    assert datamodule.num_rows == NUM_ROWS and datamodule.batch_size == 5
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == {"index", "x", "lengths"} and batch["lengths"].dtype == torch.long


LOAD_AND_MEASURE = """
import json, resource, sys, time
import pyarrow.compute, pyarrow.csv, torch
from lightning_svi.data import read_columns
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
data = read_columns(sys.argv[1])
seconds = time.perf_counter() - started
growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"seconds": seconds, "growth": growth, "rows": len(data["x"]), "dtype": str(data["x"].dtype)}))
"""


@pytest.mark.slow
def test_a_gigabyte_csv_loads_in_seconds_in_about_its_own_size(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(500_000, 2))
    block = ("\n".join(f"{x:.6f},{y:.6f}" for x, y in rows.tolist()) + "\n").encode()
    path = tmp_path / "large.csv"
    repeats = 10**9 // len(block)
    with path.open("wb") as file:
        file.write(b"x,y\n")
        for _ in range(repeats):
            file.write(block)
    size = path.stat().st_size
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_MEASURE, str(path)], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.splitlines()[-1])
    assert measured["rows"] == repeats * len(rows) and measured["dtype"] == "torch.float32"
    print(
        f"{size / 1e9:.2f} GB loaded: {measured['seconds']:.1f} s, {measured['growth'] / 1e9:.2f} GB above the process"
    )
    assert measured["seconds"] < 60, measured
    assert measured["growth"] < 2.5 * size, {**measured, "size": size}


def test_integer_arrays_keep_their_type_and_floats_become_the_default_float(tmp_path: Path) -> None:
    path = tmp_path / "hmm.npz"
    np.savez(path, sequences=np.zeros((3, 4, 2)), lengths=np.array([4, 2, 3]), mask=np.ones(3, dtype=bool))
    columns = read_columns(path)
    assert columns["lengths"].dtype == torch.int64  # examples/hmm.py runs range(lengths.max())
    assert columns["mask"].dtype == torch.bool
    assert columns["sequences"].dtype == torch.get_default_dtype()
    assert read_columns(path, dtype={"lengths": "float64"})["lengths"].dtype == torch.float64
    torch.save({"x": torch.arange(3), "y": torch.ones(3, dtype=torch.float64)}, tmp_path / "xy.pt")
    saved = read_columns(tmp_path / "xy.pt")
    assert (saved["x"].dtype, saved["y"].dtype) == (torch.int64, torch.get_default_dtype())
