"""README's numbers are the ones ``scripts/readme_numbers.py`` prints: the README quotes the stored
numbers (docs/readme_numbers.json) at the places ``SNIPPETS`` name, the closed forms recompute to the
same digits, and (slow) the training commands reproduce the rest within ``TOLERANCE``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.readme_numbers import (
    KEY,
    SNIPPETS,
    STORED,
    TOLERANCE,
    closed_forms,
    compute,
    differences,
    missing_snippets,
)
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def stored() -> dict[str, str]:
    return json.loads(STORED.read_text())


def test_readme_quotes_every_stored_number_where_the_snippets_say() -> None:
    assert missing_snippets(README, stored()) == []


def test_an_edited_number_in_readme_is_caught() -> None:
    numbers = stored()
    for key in ("mle.alpha", "empty.alpha", "coin.qa", "full.gap"):
        quoted = numbers[key]
        assert quoted in README
        edited = README.replace(quoted, quoted[:-1] + ("1" if quoted[-1] != "1" else "2"))
        assert missing_snippets(edited, numbers), key


def test_every_snippet_quotes_a_stored_number() -> None:
    keys = {key for snippet in SNIPPETS for key in KEY.findall(snippet)}
    assert keys <= set(stored())


def test_the_closed_forms_recompute_to_the_stored_digits() -> None:
    fresh = closed_forms()
    assert {key: stored()[key] for key in fresh} == fresh


def test_a_drifted_number_is_reported_beyond_the_tolerance() -> None:
    assert differences({"x": "100.0"}, {"x": f"{100 * (1 + TOLERANCE / 2)}"}) == []
    assert differences({"x": "1,000"}, {"x": "1,100"}) == ["x: 1,100 stored, 1,000 now"]
    # The empty guide's run, whose α runs away: the same runaway on another CPU passes, a settled α does not.
    assert (
        differences(
            {"empty.alpha": "500,677", "empty.elbo": "+66.23"}, {"empty.alpha": "468,210", "empty.elbo": "+46.92"}
        )
        == []
    )
    assert differences({"empty.alpha": "2.87"}, {"empty.alpha": "468,210"}) == ["empty.alpha: 468,210 stored, 2.87 now"]


@pytest.mark.slow
def test_the_training_commands_reproduce_the_stored_numbers() -> None:
    fresh, _ = compute(train_runs=True)
    assert differences(fresh, stored()) == []


def test_the_own_model_file_is_the_one_readme_shows_and_trains_unchanged(train_in_process) -> None:
    source = (REPO / "examples" / "coin.py").read_text()
    assert f"```python\n{source}```" in README
    command = (
        "python train.py model=custom model._target_=examples.coin.model \\\n"
        "    guide=custom guide._target_=examples.coin.guide data=file data.path=examples/flips.csv"
    )
    assert command in README
    overrides = command.removeprefix("python train.py ").replace("\\\n   ", "").split()
    overrides = [item.replace("examples/flips.csv", str(REPO / "examples" / "flips.csv")) for item in overrides]
    summary = train_in_process(*overrides, "trainer.max_steps=200", "elbo.num_particles=16")
    assert summary["status"] == "completed" and summary["theta"] == {}
    assert set(summary["phi"]) == {"alpha_q", "beta_q"}
    # Started at Beta(15, 15); the exact posterior is Beta(16, 14): its mean, 0.533, is approached.
    mean = summary["phi"]["alpha_q"] / (summary["phi"]["alpha_q"] + summary["phi"]["beta_q"])
    assert abs(mean - 16 / 30) < abs(0.5 - 16 / 30)


def test_stored_numbers_file_is_sorted_json() -> None:
    numbers = stored()
    assert list(numbers) == sorted(numbers) and all(isinstance(value, str) for value in numbers.values())
    assert Path(STORED).parent.name == "docs"
