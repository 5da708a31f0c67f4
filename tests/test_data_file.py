"""A data file is read once: before torch is imported for a built-in model, by the data module for a user's."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import get_class

from lightning_svi.config.checks import read_data_file
from lightning_svi.data.datamodule import load_data
from tests.conftest import compose_config


def test_the_data_file_read_before_training_is_the_one_training_uses(tmp_path: Path) -> None:
    csv = tmp_path / "counts.csv"
    csv.write_text("successes,trials\n3,10\n0,4\n")
    config = compose_config(f"data.path={csv}")
    table = read_data_file(config)
    assert table == {"successes": [3.0, 0.0], "trials": [10.0, 4.0]}
    csv.unlink()  # training builds its tensors from the table it is given, without reading the file again
    data = load_data(get_class(config.model._target_), str(csv), seed=0, table=table)
    assert data["successes"].tolist() == [3.0, 0.0] and data["trials"].tolist() == [10.0, 4.0]


def test_a_users_model_file_is_left_to_its_class(tmp_path: Path) -> None:
    csv = tmp_path / "counts.csv"
    csv.write_text("anything\n1\n")
    config = compose_config("model=custom", "model._target_=tests.branching_model.BranchingModel", f"data.path={csv}")
    assert read_data_file(config) is None
