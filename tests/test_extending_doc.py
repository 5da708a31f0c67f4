"""docs/extending.md is true: its coin model and guide, data file and command train as the page says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO, read_summary, run_train_py

DOC = REPO / "docs" / "extending.md"


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, in order."""
    return re.findall(r"```(\w*)\n(.*?)```", text, flags=re.DOTALL)


def test_the_pages_coin_trains_to_the_tutorials_posterior(tmp_path: Path) -> None:
    blocks = code_blocks(DOC.read_text())
    python = next(body for language, body in blocks if language == "python")
    flips = next(body for language, body in blocks if language == "" and body.startswith("flip\n"))
    command = next(body for language, body in blocks if language == "bash" and "coin.model" in body)
    (tmp_path / "coin.py").write_text(python)
    (tmp_path / "flips.csv").write_text(flips)
    arguments = command.replace("\\\n", " ").split()
    assert arguments[:2] == ["python", "/path/to/lightning-svi/train.py"]
    run_dir = tmp_path / "run"
    result = run_train_py(*arguments[2:], f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = read_summary(run_dir)
    assert (summary["model"], summary["guide"], summary["elbo"]) == ("coin.model", "coin.guide", "Trace_ELBO")
    assert summary["theta"] == {} and set(summary["phi"]) == {"alpha_q", "beta_q"}
    alpha, beta = summary["phi"]["alpha_q"], summary["phi"]["beta_q"]
    # The exact posterior is Beta(16, 14), mean 0.533; the tutorial prints about 0.53.
    assert alpha / (alpha + beta) == pytest.approx(16 / 30, abs=0.03)
    assert summary["posterior"]["latent_fairness"]["mean"] == pytest.approx(16 / 30, abs=0.05)
