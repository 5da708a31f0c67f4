"""Malformed input through ``train.py`` as a user types it: exit status 2, one ``lightning-svi: error:``
line naming the key or file, what was wrong and what is allowed, no traceback, torch never imported,
little CPU time, and no run folder left behind.

Each case runs once (``refusal``) and is checked by two tests: what the process said and did, and the
folders it left. Cases refused on the command line never reach Hydra, which creates the run folder;
the others are refused by ``lightning_svi.cli``, which removes the folder Hydra made for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability.refusals import Refusal, run_train_py_measured

# Time to the error for input checked before torch: python, Hydra and NumPy start in about 1 s of CPU.
MAX_CPU_SECONDS = 3.0


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]  # {tmp}: the test's folder, which is also $HOME
    said: tuple[str, ...]  # in the error line: the key or file, what was wrong, what is allowed
    files: dict[str, bytes] = field(default_factory=dict)  # written into {tmp} first
    on_command_line: bool = False  # refused before Hydra runs (and creates the run folder)


COUNTS = "counts.csv"
WHERE = "data.path={tmp}/counts.csv"
ALLOWED_COUNTS = "expected columns successes, trials (non-negative integers up to 16777216 = 2**24"

CASES = [
    # Issue 19's tracebacks.
    Case(
        "csv_field_over_131072_characters",
        (f"data.path={{tmp}}/{COUNTS}",),
        (WHERE, "line 3: a cell longer than 131072 characters", "each cell holds one number"),
        {COUNTS: b'note,successes,trials\n"a,b",1,2\n"x","' + b"9" * 140_000 + b'",3\n'},
    ),
    Case(
        "long_cell_quoted_whole",
        (f"data.path={{tmp}}/{COUNTS}",),
        (WHERE, "line 3, column successes: '9999", "... (140000 characters) is not allowed", ALLOWED_COUNTS),
        {COUNTS: b'successes,trials\n1,2\n"' + b"9" * 140_000 + b'",3\n'},
    ),
    Case(
        "tilde_unquoted_in_data_path",
        ("data.path=~/counts.csv",),
        ("data.path=~/counts.csv", "does not allow an unquoted ~", "data.path=$HOME/counts.csv", "'~/counts.csv'"),
        on_command_line=True,
    ),
    Case(
        "tilde_quoted_for_hydra_is_expanded",
        ("data.path='~/counts.csv'",),
        (WHERE, "line 2, column trials: '1_0' is not allowed", ALLOWED_COUNTS),
        {COUNTS: b"successes,trials\n1,1_0\n"},
    ),
    Case(
        "run_folder_under_a_file",
        ("hydra.run.dir={tmp}/a_file/run",),
        ("hydra.run.dir={tmp}/a_file/run", "{tmp}/a_file is a file", "give a path whose existing part is a folder"),
        {"a_file": b"not a folder"},
        on_command_line=True,
    ),
    Case(
        "sweep_folder_under_a_file",
        ("-m", "hydra.sweep.dir={tmp}/a_file/sweep", "seed=0,1"),
        ("hydra.sweep.dir={tmp}/a_file/sweep", "{tmp}/a_file is a file"),
        {"a_file": b"not a folder"},
        on_command_line=True,
    ),
    Case("seed_beyond_numpy", ("seed=99999999999999999999",), ("seed=99999999999999999999", "from 0 to 4294967295")),
    Case("data_seed_negative", ("data.seed=-1",), ("data.seed=-1", "from 0 to 4294967295")),
    Case(
        "synthetic_min_trials_above_max",
        ("data.synthetic={min_trials:10,max_trials:5}",),
        ("data.synthetic.min_trials=10 data.synthetic.max_trials=5", "min_trials must be <= max_trials"),
    ),
    Case(
        "synthetic_max_trials_below_default_min",
        ("data.synthetic={max_trials:5}",),
        ("data.synthetic.max_trials=5", "min_trials must be <= max_trials (defaults 20 and 100)"),
    ),
    Case(
        "coin_without_flips",
        ("model=coin", "data.synthetic={heads:0,tails:0}"),
        ("data.synthetic.heads=0 data.synthetic.tails=0", "heads + tails must be >= 1"),
    ),
    Case(
        "override_grammar",
        ("optim.lr=[1,",),
        ("optim.lr=[1,", "not an override Hydra can parse", "key=value"),
        on_command_line=True,
    ),
    # Issue 19's silently accepted input, now refused.
    Case(
        "bernoulli_empty_outcome",
        ("model=beta_bernoulli", "data.path={tmp}/flips.csv"),
        (
            "data.path={tmp}/flips.csv",
            "line 3, column outcome: an empty cell is not allowed",
            "expected columns outcome",
        ),
        {"flips.csv": b"outcome,note\n1,a\n,b\n0,c\n"},
    ),
    Case(
        "duplicated_column",
        (f"data.path={{tmp}}/{COUNTS}",),
        (WHERE, "line 1: the header names column trials twice", "each column needs a name of its own"),
        {COUNTS: b"successes,trials,trials\n1,2,3\n"},
    ),
    Case(
        "multi_line_quoted_cell",
        (f"data.path={{tmp}}/{COUNTS}",),
        (WHERE, "line 3: a quoted cell runs over 2 lines", "each row must be on one line"),
        {COUNTS: b'note,successes,trials\nok,1,2\n"two\nlines",3,4\n'},
    ),
    Case(
        "extra_cells",
        (f"data.path={{tmp}}/{COUNTS}",),
        (WHERE, "line 2: 3 cells, but the header has 2 cells", "every row needs one cell per column"),
        {COUNTS: b"successes,trials\n1,2,3\n"},
    ),
    Case(
        "underscore_digits",
        (f"data.path={{tmp}}/{COUNTS}",),
        (WHERE, "line 2, column successes: '1_0' is not allowed", ALLOWED_COUNTS),
        {COUNTS: b"successes,trials\n1_0,20\n"},
    ),
    Case(
        "count_beyond_float32",
        (f"data.path={{tmp}}/{COUNTS}",),
        (WHERE, "line 2, column trials: '9007199254740991' is not allowed", ALLOWED_COUNTS),
        {COUNTS: b"successes,trials\n1,9007199254740991\n"},
    ),
    Case(
        "blank_lines_keep_line_numbers",
        (f"data.path={{tmp}}/{COUNTS}",),
        (WHERE, "line 7: successes=5, trials=4 violates successes <= trials"),
        {COUNTS: b"\nsuccesses,trials\n\n1,2\n\n\n5,4\n"},
    ),
    # Refused before.
    Case(
        "binary_garbage",
        (f"data.path={{tmp}}/{COUNTS}",),
        (WHERE, "not a UTF-8 text file"),
        {COUNTS: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"},
    ),
    Case(
        "huge_count",
        (f"data.path={{tmp}}/{COUNTS}",),
        (WHERE, "line 2, column trials: '1e308' is not allowed", ALLOWED_COUNTS),
        {COUNTS: b"successes,trials\n1,1e308\n"},
    ),
    Case("scheduler_not_a_mapping", ("optim.scheduler=5",), ("optim.scheduler=5: must be null or a mapping",)),
    Case("negative_workers", ("data.num_workers=-1",), ("data.num_workers=-1: must be an integer >= 0",)),
    Case("missing_file", ("data.path={tmp}/absent.csv",), ("data.path={tmp}/absent.csv: no such file", "Expected")),
]
CASES_BY_NAME = {case.name: case for case in CASES}
_refusals: dict[str, tuple[Path, Refusal]] = {}


def refusal(name: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Refusal]:
    """Case ``name`` run once per session in a folder of its own: (that folder, what happened)."""
    if name not in _refusals:
        case = CASES_BY_NAME[name]
        folder = tmp_path_factory.mktemp(name)
        for file_name, content in case.files.items():
            (folder / file_name).write_bytes(content)
        args = [arg.replace("{tmp}", str(folder)) for arg in case.args]
        if not any(arg.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for arg in args):
            args += [f"hydra.run.dir={folder / 'run'}", f"hydra.sweep.dir={folder / 'sweep'}"]
        _refusals[name] = folder, run_train_py_measured(*args, cwd=folder, env={"HOME": str(folder)})
    return _refusals[name]


@pytest.mark.parametrize("name", CASES_BY_NAME)
def test_refused_in_one_line_before_torch(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder, result = refusal(name, tmp_path_factory)
    assert result.status == 2, result.stderr[-3000:]
    assert len(result.error_lines) == 1, result.error_lines
    for expected in CASES_BY_NAME[name].said:
        assert expected.replace("{tmp}", str(folder)) in result.error_lines[0], result.error_lines[0]
    assert len(result.error_lines[0]) < 600
    assert "Traceback" not in result.stderr + result.stdout
    assert result.other_lines == [], result.other_lines  # Hydra's own messages included
    # Checked before torch: a property of the program, whatever the machine's load.
    assert "torch" not in result.imported and "pyro" not in result.imported
    assert result.cpu_seconds < MAX_CPU_SECONDS, result.cpu_seconds


@pytest.mark.parametrize("name", CASES_BY_NAME)
def test_no_run_folder_is_left_behind(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder, result = refusal(name, tmp_path_factory)
    assert result.status == 2
    assert not (folder / "run").exists() and not (folder / "sweep").exists() and not (folder / "outputs").exists()
    assert not (folder / "a_file").is_dir()
