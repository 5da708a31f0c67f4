"""Compare the jobs of a sweep: ``python scripts/compare_runs.py MULTIRUN_DIR [--type2-mle]``.

Prints one table of every job under MULTIRUN_DIR (any folder holding a ``summary.json``): its
overrides, θ, final ELBO, the closed-form log evidence and gap where the model has one, the
importance-weighted log evidence (± its standard error), its gap to the ELBO and PSIS k̂ for any model
(``summary.json``'s ``final.iw_*`` and ``diagnostics``), steps per second and status, and writes their
``train/elbo`` curves, read from the TensorBoard event files, to a PNG. The guide whose ELBO meets the
evidence (IW gap near 0, k̂ < 0.7) is the one whose θ is (close to) the type-II maximum-likelihood value; a
job without an estimate gets a note under the table saying why. ``--type2-mle`` adds, for each data set, the
exact type-II maximum-likelihood θ (the maximiser of the closed-form log evidence) and each job's θ relative
to it: what each guide did to θ.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


@dataclass
class Job:
    """One finished (or stopped) job of the sweep."""

    folder: Path
    overrides: list[str]
    summary: dict[str, Any]
    config: DictConfig | None

    @property
    def name(self) -> str:
        return " ".join(self.overrides) or self.folder.name


def find_jobs(multirun_dir: Path) -> list[Job]:
    """Every folder under ``multirun_dir`` with a ``summary.json``, in Hydra's job order."""
    jobs = []
    for summary_path in sorted(multirun_dir.rglob("summary.json")):
        folder = summary_path.parent
        hydra_dir = folder / ".hydra"
        overrides_file, config_file = hydra_dir / "overrides.yaml", hydra_dir / "config.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
        config = OmegaConf.load(config_file) if config_file.is_file() else None
        jobs.append(Job(folder, [str(item) for item in overrides], json.loads(summary_path.read_text()), config))
    return sorted(jobs, key=lambda job: _job_number(job.folder))


def _job_number(folder: Path) -> tuple[int, str]:
    prefix = folder.name.split("-", 1)[0]
    return (int(prefix), str(folder)) if prefix.isdigit() else (sys.maxsize, str(folder))


def elbo_curve(job: Job) -> list[tuple[int, float]]:
    """The job's ``train/elbo`` series from its TensorBoard event files (empty if none)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(job.folder / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    if "train/elbo" not in accumulator.Tags()["scalars"]:
        return []
    return [(event.step, event.value) for event in accumulator.Scalars("train/elbo")]


def type2_mle(config: DictConfig) -> tuple[dict[str, float], float] | None:
    """The exact type-II MLE θ and its log evidence for the job's model and data, or None without a
    closed form."""
    from hydra.utils import get_class, instantiate

    from lightning_svi.analysis.type2_mle import type2_maximum_likelihood
    from lightning_svi.data.datamodule import load_data

    model_class = get_class(config.model._target_)
    synthetic = OmegaConf.to_container(config.data.synthetic) if config.data.get("synthetic") else None
    data = load_data(model_class, config.data.path, config.data.seed, synthetic)
    model = instantiate(config.model, num_data=len(next(iter(data.values()))))
    try:
        return type2_maximum_likelihood(model, data)
    except ValueError:
        return None


def _number(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and abs(value) >= 1e4:
        return f"{value:.3g}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _with_error(value: float | None, error: float | None) -> str:
    return "—" if value is None else f"{_number(value)} ± {_number(error)}"


def _khat(diagnostics: dict[str, Any]) -> str:
    """k̂ with two decimals; ∞ where it was computed but is infinite (``summary.json`` holds null and a note)."""
    if diagnostics.get("psis_khat") is not None:
        return _number(diagnostics["psis_khat"])
    return "∞" if "num_particles" in diagnostics else "—"


def estimate_notes(jobs: list[Job]) -> list[str]:
    """Why a job has no importance-weighted estimate (``diagnostics.skipped`` or ``error``), one line each."""
    notes = []
    for job in jobs:
        diagnostics = job.summary.get("diagnostics") or {}
        reason = diagnostics.get("skipped") or diagnostics.get("error")
        if reason is None and "diagnostics" not in job.summary:
            reason = "no diagnostics in summary.json (a run that did not end, or callbacks.diagnostics=null)"
        if reason is not None:
            notes.append(f"{job.name}: no IW estimate: {reason}")
    return notes


def _scalar_theta(summary: dict[str, Any]) -> dict[str, float]:
    return {name: value for name, value in summary["theta"].items() if isinstance(value, (int, float))}


def table_rows(jobs: list[Job], with_type2_mle: bool) -> list[list[str]]:
    """Header and one row per job; with ``with_type2_mle`` a reference row per data set first."""
    rows = [["job", "θ", "final ELBO", "log p_θ(x)", "gap", "IW log p_θ(x)", "IW gap", "k̂", "steps/s", "status"]]
    references: dict[str, tuple[dict[str, float], float] | None] = {}
    for job in jobs:
        theta = _scalar_theta(job.summary)
        final = job.summary["final"]
        theta_text = ", ".join(f"{name}={_number(value, 3)}" for name, value in theta.items())
        if with_type2_mle and job.config is not None:
            key = OmegaConf.to_yaml({"model": job.config.model, "data": job.config.data})
            if key not in references:
                references[key] = type2_mle(job.config)
                if references[key] is not None:
                    mle_theta, mle_log_evidence = references[key]
                    mle_text = ", ".join(f"{name}={_number(value, 3)}" for name, value in mle_theta.items())
                    rows.append(["exact type-II MLE", mle_text, "—", _number(mle_log_evidence), *["—"] * 6])
            if references[key] is not None:
                mle_theta = references[key][0]
                theta_text += (
                    " ("
                    + ", ".join(
                        f"{name} ×{value / mle_theta[name]:.3g}" for name, value in theta.items() if name in mle_theta
                    )
                    + " of MLE)"
                )
        rows.append([
            job.name,
            theta_text,
            _number(final.get("elbo")),
            _number(final.get("log_evidence")),
            _number(final.get("gap")),
            _with_error(final.get("iw_log_evidence"), final.get("iw_log_evidence_se")),
            _with_error(final.get("iw_gap"), final.get("iw_gap_se")),
            _khat(job.summary.get("diagnostics") or {}),
            _number(job.summary.get("timing", {}).get("steps_per_second"), 1),
            job.summary.get("status", "—"),
        ])  # fmt: skip
    return rows


def _width(cell: str) -> int:
    """Characters as shown: a combining mark (the hat of k̂) takes no column."""
    return sum(1 for character in cell if not unicodedata.combining(character))


def format_table(rows: list[list[str]]) -> str:
    """A Markdown table (readable as plain text too)."""
    widths = [max(_width(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(cell + " " * (width - _width(cell)) for cell, width in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "| " + " | ".join("-" * width for width in widths) + " |")
    return "\n".join(lines)


def plot_curves(jobs: list[Job], path: Path) -> None:
    """ELBO against step, one line per job, written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for job in jobs:
        curve = elbo_curve(job)
        if curve:
            steps, values = zip(*curve, strict=True)
            axes.plot(steps, values, label=job.name)
    axes.set_xlabel("step")
    axes.set_ylabel("train/elbo")
    axes.set_yscale("symlog")  # guides can differ by orders of magnitude (the empty guide's ELBO is not a bound)
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("multirun_dir", type=Path, help="a sweep folder (multirun/<date_time>) or any folder of runs")
    parser.add_argument("--plot", type=Path, default=None, help="PNG to write (default: MULTIRUN_DIR/elbo_curves.png)")
    parser.add_argument("--type2-mle", action="store_true", help="compare θ with the exact type-II MLE")
    args = parser.parse_args(argv)
    jobs = find_jobs(args.multirun_dir) if args.multirun_dir.is_dir() else []
    if not jobs:
        print(f"compare_runs: error: no job with a summary.json under {args.multirun_dir}.", file=sys.stderr)
        return 2
    print(format_table(table_rows(jobs, args.type2_mle)))
    notes = estimate_notes(jobs)
    if notes:
        print("\n" + "\n".join(notes))
    plot_path = args.plot or args.multirun_dir / "elbo_curves.png"
    plot_curves(jobs, plot_path)
    print(f"\nELBO curves: {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
