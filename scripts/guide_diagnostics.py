"""Is the guide good? ``python scripts/guide_diagnostics.py RUN_DIR [RUN_DIR ...]``

Prints one row per run (any folder under the given ones holding a ``summary.json``): its ELBO, the closed-form log
evidence where the model has one, the importance-weighted estimate with its standard error, the gap between them
and the ELBO, PSIS k̂ with its reading, the ESS of the weights, and, for a run with ``diagnostics.reference=nuts``,
the largest distance between the guide's and NUTS's moments over the latent sites (in NUTS sds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COLUMNS = ("run", "ELBO", "log p(x)", "IW log p(x)", "IW gap", "gap", "k̂", "reading", "ESS", "NUTS distance")


def number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def with_error(value: float | None, error: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ± {number(error)}"


def row(name: str, summary: dict[str, Any]) -> tuple[str, ...]:
    """The table's cells for one run's summary."""
    final = summary.get("final", {})
    diagnostics = summary.get("diagnostics", {})
    sites = summary.get("reference", {}).get("sites", {})
    distance = max((entry["distance"] for entry in sites.values()), default=None)
    reading = diagnostics.get("reading") or diagnostics.get("skipped") or diagnostics.get("error") or "—"
    return (
        name,
        number(final.get("elbo")),
        number(final.get("log_evidence")),
        with_error(final.get("iw_log_evidence"), final.get("iw_log_evidence_se")),
        with_error(final.get("iw_gap"), final.get("iw_gap_se")),
        number(final.get("gap")),
        number(diagnostics.get("psis_khat")),
        reading,
        number(diagnostics.get("ess"), 0),
        number(distance),
    )


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(cells[index]) for cells in [COLUMNS, *rows]) for index in range(len(COLUMNS))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) for cells in rows]
    header = " | ".join(cell.ljust(width) for cell, width in zip(COLUMNS, widths, strict=True))
    return "\n".join([header, "-|-".join("-" * width for width in widths), *lines])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, or folders holding them")
    arguments = parser.parse_args(argv)
    rows = []
    for folder in arguments.runs:
        for path in sorted(folder.rglob("summary.json")):
            name = str(path.parent.relative_to(folder)) if path.parent != folder else folder.name
            rows.append(row(name, json.loads(path.read_text())))
    print(table(rows))


if __name__ == "__main__":
    main()
