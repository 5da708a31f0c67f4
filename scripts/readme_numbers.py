"""Every number README.md quotes, recomputed: ``python scripts/readme_numbers.py``.

    python scripts/readme_numbers.py                 # closed forms only (seconds): print them
    python scripts/readme_numbers.py --train         # also the training runs README quotes (~10 min on 2 cores)
    python scripts/readme_numbers.py --train --write # and store them in docs/readme_numbers.json

Each number is a formatted string under a key (``empty.alpha``); ``SNIPPETS`` are the README passages
that quote them, with ``{key}`` where the number goes (``fill``). ``tests/test_readme_numbers.py`` checks that
README holds every snippet filled with the stored numbers (so an edited number fails), recomputes the
closed forms against the stored file, and, in the slow suite, reruns the training commands
(tolerance ``TOLERANCE``: a rerun on another machine may differ in the last digits; ``UNBOUNDED_TOLERANCE`` for
the empty guide's run, whose α and β never settle). Timings are
printed but not stored: they depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STORED = REPO / "docs" / "readme_numbers.json"
TOLERANCE = 0.03  # relative, for numbers from training runs; closed forms must match to the digits shown
# The empty guide's run: α and β grow without bound, so their values after 3,000 steps, and the ELBO, gap and
# k-hat there, follow the last bits of every step's arithmetic. Two CPUs running the same code put α 7 % and the
# ELBO 41 % apart (468,210 and +46.92 stored, 500,677 and +66.23 on another machine): compared within a factor of 2.
UNBOUNDED_RUN = "empty."
UNBOUNDED_TOLERANCE = 0.5

# name -> the command's arguments (``python train.py ARGS``), as README gives them
RUNS: dict[str, list[str]] = {
    "full": ["model=beta_binomial", "guide=full"],
    "empty": ["model=beta_binomial", "guide=empty", "trainer.max_steps=3000", "optim.lr=0.05"],
    "forum_full": ["experiment=forum_guides", "guide=full"],  # the forum sweep's jobs
    "forum_normal": ["experiment=forum_guides", "guide=normal"],
    "forum_delta": ["experiment=forum_guides", "guide=delta"],
    "coin": ["model=coin"],
    "schools_nc": ["model=eight_schools", "trainer.max_steps=800"],
    "schools_c": ["model=eight_schools", "model.parameterization=centered", "trainer.max_steps=800"],
    "vae": ["experiment=vae"],
}

SNIPPETS = [
    "  θ: alpha={full.alpha4}, beta={full.beta4}\n  ELBO {full.elbo4}, log evidence {full.log_evidence4}, "
    "gap {full.gap4}, …",
    "| exact type-II MLE | {mle.alpha} | {mle.beta} | — | {mle.log_evidence} | — |",
    "| `guide=full` (default, 2,000 steps) | {full.alpha} | {full.beta} | {full.elbo} | {full.log_evidence} "
    "| {full.gap} |",
    "| `guide=empty` (3,000 steps, lr 0.05) | {empty.alpha} | {empty.beta} | {empty.elbo} "
    "| {empty.log_evidence} | {empty.gap} |",
    "(α/(α+β) = {empty.pooled_rate}, the complete-pooling MLE)",
    *(
        f"| `experiment=forum_guides guide={guide}` | {{{name}.alpha}} ({{{name}.alpha_ratio}} × MLE) "
        f"| {{{name}.beta}} ({{{name}.beta_ratio}} × MLE) | {{{name}.elbo}} | {{{name}.log_evidence}} | {{{name}.gap}} "
        + (
            f"| {{{name}.iw_log_evidence}} ± {{{name}.iw_log_evidence_se}} | {{{name}.iw_gap}} ± {{{name}.iw_gap_se}} "
            f"| {{{name}.khat}} |"
            if guide != "delta"
            else "| — | — | — |"
        )
        for guide, name in (
            ("full", "forum_full"),
            ("normal", "forum_normal"),
            ("empty", "empty"),
            ("delta", "forum_delta"),
        )
    ),
    '"final": {{"loss": {full.loss}, "elbo": {full.elbo}, "log_p": {full.log_p}, "log_q": {full.log_q},',
    '"log_evidence": {full.log_evidence}, "gap": {full.gap}}},',
    '"theta": {{"alpha": {full.alpha}, "beta": {full.beta}}},',
    '"phi": {{"qa": [{full.qa0}, {full.qa1}, ...], "qb": [{full.qb0}, {full.qb1}, ...]}},',
    "evidence {coin.log_evidence}, and `evidence/gap` = KL(q ‖ posterior) falls from KL(uniform ‖ "
    "Beta({coin.exact_a}, {coin.exact_b})) =\n{coin.kl_uniform} to about 0",
    "The run ends with q = Beta({coin.qa}, {coin.qb}): mean {coin.mean}, sd {coin.sd}\n"
    "against the exact {coin.exact_mean} and {coin.exact_sd}.",
    '"posterior": {{"fairness": {{"mean": {coin.mean}, "sd": {coin.sd}, "q05": {coin.q05}, "q95": {coin.q95},',
    '"exact": {{"mean": {coin.exact_mean}, "sd": {coin.exact_sd}, "q05": {coin.exact_q05}, '
    '"q95": {coin.exact_q95}}}}}}}',
    "non-centred gap {schools_nc.gap} nats, μ {schools_nc.mu} ± {schools_nc.mu_sd}, τ {schools_nc.tau}; "
    "centred gap {schools_c.gap} nats, μ {schools_c.mu} ± {schools_c.mu_sd}",
    "The final ELBO is {vae.elbo} for the 2,000\nimages, against {vae.independent_pixels} for the best model "
    "with independent pixels.",
]


def number(value: float, digits: int = 2) -> str:
    """``digits`` decimals below 1,000; a thousands separator and no decimals from 1,000 on."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def closed_forms() -> dict[str, str]:
    """The numbers that need no training: the exact type-II MLE, the coin's exact posterior and evidence,
    the VAE data's best independent-pixel likelihood."""
    import pyro
    import torch

    from lightning_svi.analysis.type2_mle import type2_maximum_likelihood
    from lightning_svi.data.datamodule import load_data
    from lightning_svi.models.beta_binomial import BetaBinomial
    from lightning_svi.models.coin import Coin
    from lightning_svi.models.vae import VAE

    pyro.settings.set(module_local_params=True)
    data = load_data(BetaBinomial, None, seed=0)
    mle, evidence = type2_maximum_likelihood(BetaBinomial(len(data["trials"])), data)
    coin_data = load_data(Coin, None, seed=0)
    coin = Coin(len(coin_data["flip"]))
    posterior = coin.exact_posterior(coin_data)["fairness"]
    uniform = torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0))
    torch.manual_seed(0)
    draws = posterior.sample((20_000,))
    pixels = VAE.synthetic_data(seed=0)["pixels"]
    means = pixels.mean(0).clamp(1e-3, 1 - 1e-3)
    return {
        "mle.alpha": f"{mle['alpha']:.3f}",
        "mle.beta": f"{mle['beta']:.3f}",
        "mle.log_evidence": f"{evidence:.2f}",
        "coin.log_evidence": f"{float(coin.log_evidence(coin_data)):.3f}",
        "coin.exact_a": f"{float(posterior.concentration1):g}",
        "coin.exact_b": f"{float(posterior.concentration0):g}",
        "coin.kl_uniform": f"{float(torch.distributions.kl_divergence(uniform, posterior)):.2f}",
        "coin.exact_mean": f"{float(posterior.mean):.4f}",
        "coin.exact_sd": f"{float(posterior.stddev):.4f}",
        "coin.exact_q05": f"{float(draws.quantile(0.05)):.3f}",
        "coin.exact_q95": f"{float(draws.quantile(0.95)):.3f}",
        "vae.independent_pixels": number(torch.distributions.Bernoulli(means).log_prob(pixels).sum().item()),
    }


def train(arguments: list[str], run_dir: Path) -> dict[str, Any]:
    """``python train.py ARGUMENTS`` into ``run_dir``; its summary, with the first and last logged
    ``trace/log_p`` under ``"log_p_curve"`` (read from its TensorBoard events)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    command = [sys.executable, str(REPO / "train.py"), *arguments, f"hydra.run.dir={run_dir}"]
    subprocess.run([*command, "progress_bar_refresh_rate=0"], check=True, cwd=REPO, capture_output=True, text=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    curve = events.Scalars("trace/log_p")
    return summary | {"log_p_curve": (curve[0].value, curve[-1].value)}


def trained(summaries: dict[str, dict[str, Any]], mle: dict[str, str]) -> dict[str, str]:
    """The numbers README quotes from the runs' summaries."""
    values: dict[str, str] = {}
    for name in ("full", "empty", "forum_full", "forum_normal", "forum_delta"):
        summary = summaries[name]
        alpha, beta = summary["theta"]["alpha"], summary["theta"]["beta"]
        final = summary["final"]
        values |= {
            f"{name}.alpha": number(alpha, 3),
            f"{name}.beta": number(beta, 3),
            f"{name}.alpha_ratio": f"{alpha / float(mle['mle.alpha']):,.3g}",
            f"{name}.beta_ratio": f"{beta / float(mle['mle.beta']):,.3g}",
            f"{name}.elbo": f"{final['elbo']:+.2f}" if final["elbo"] > 0 else f"{final['elbo']:.2f}",
            f"{name}.log_evidence": f"{final['log_evidence']:.2f}",
            f"{name}.gap": f"{final['gap']:.2f}",
            f"{name}.loss": f"{final['loss']:.2f}",
            f"{name}.log_p": f"{final['log_p']:.2f}",
            f"{name}.log_q": f"{final['log_q']:.2f}",
        }
        values[f"{name}.pooled_rate"] = f"{alpha / (alpha + beta):.3f}"
        if final.get("iw_log_evidence") is not None:  # the importance-weighted evidence (none for guide=delta)
            iw_keys = ("iw_log_evidence", "iw_log_evidence_se", "iw_gap", "iw_gap_se")
            values |= {f"{name}.{key}": f"{final[key]:.2f}" for key in iw_keys}
            values[f"{name}.khat"] = f"{summary['diagnostics']['psis_khat']:.2f}"
        # as the end-of-run report prints them (four significant digits)
        reported = {"alpha": alpha, "beta": beta, "elbo": final["elbo"], "log_evidence": final["log_evidence"]}
        values |= {f"{name}.{key}4": f"{value:.4g}" for key, value in (reported | {"gap": final["gap"]}).items()}
    phi = summaries["full"]["phi"]
    values |= {f"full.{side}{index}": f"{phi[side][index]:.1f}" for side in ("qa", "qb") for index in (0, 1)}
    coin = summaries["coin"]
    fairness = coin["posterior"]["fairness"]
    values |= {
        "coin.log_p_first": f"{coin['log_p_curve'][0]:.0f}",
        "coin.log_p_last": f"{coin['log_p_curve'][1]:.0f}",
        "coin.qa": f"{coin['phi']['qa']:.2f}",
        "coin.qb": f"{coin['phi']['qb']:.2f}",
        **{f"coin.{key}": f"{fairness[key]:.3f}" for key in ("mean", "sd", "q05", "q95")},
    }
    for name in ("schools_nc", "schools_c"):
        summary = summaries[name]
        values |= {
            f"{name}.gap": f"{summary['final']['gap']:.2f}",
            f"{name}.mu": f"{summary['posterior']['mu']['mean']:.1f}",
            f"{name}.mu_sd": f"{summary['posterior']['mu']['sd']:.1f}",
            f"{name}.tau": f"{summary['posterior']['tau']['mean']:.1f}",
        }
    values["vae.elbo"] = number(summaries["vae"]["final"]["elbo"])
    return values


def timings(summaries: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Wall time and steps/s of each run: printed, never stored (they depend on the machine)."""
    timing = {name: summary["timing"] for name, summary in summaries.items()}
    return {
        f"{name}.time": f"{times['wall_seconds']:.0f} s, {times['steps_per_second']:.0f} steps/s"
        for name, times in timing.items()
    }


def compute(train_runs: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(the numbers, the timings): the closed forms, and with ``train_runs`` those of every run in ``RUNS``."""
    values = closed_forms()
    if not train_runs:
        return values, {}
    with tempfile.TemporaryDirectory() as scratch:
        summaries = {name: train(arguments, Path(scratch) / name) for name, arguments in RUNS.items()}
    return values | trained(summaries, values), timings(summaries)


def as_float(text: str) -> float:
    return float(text.replace(",", ""))


def differences(fresh: dict[str, str], stored: dict[str, str], tolerance: float = TOLERANCE) -> list[str]:
    """The keys whose fresh value differs from the stored one by more than ``tolerance`` (relative;
    ``UNBOUNDED_TOLERANCE`` for the run whose parameters grow without bound)."""
    return [
        f"{key}: {stored.get(key)} stored, {value} now"
        for key, value in fresh.items()
        if key not in stored
        or not math.isclose(
            as_float(value),
            as_float(stored[key]),
            rel_tol=UNBOUNDED_TOLERANCE if key.startswith(UNBOUNDED_RUN) else tolerance,
        )
    ]


KEY = re.compile(r"\{([a-z][a-z0-9_]*\.[a-z0-9_]+)\}")  # {empty.alpha}; {{ and }} are literal braces


def fill(snippet: str, numbers: dict[str, str]) -> str:
    """``snippet`` with each ``{key}`` replaced by its number (``KeyError`` for a key without one)."""
    return KEY.sub(lambda match: numbers[match.group(1)], snippet).replace("{{", "{").replace("}}", "}")


def missing_snippets(readme: str, numbers: dict[str, str]) -> list[str]:
    """The ``SNIPPETS``, filled with ``numbers``, that ``readme`` does not contain (a key without a
    number counts as missing)."""
    missing = []
    for snippet in SNIPPETS:
        try:
            filled = fill(snippet, numbers)
        except KeyError as error:
            missing.append(f"{snippet} (no number for {error})")
            continue
        if filled not in readme:
            missing.append(filled)
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="store_true", help="also run the training commands README quotes")
    parser.add_argument("--write", action="store_true", help=f"store the numbers in {STORED.relative_to(REPO)}")
    args = parser.parse_args()
    values, times = compute(args.train)
    for key, value in sorted((values | times).items()):
        print(f"{key:28} {value}")
    if args.write:  # without --train, the stored training numbers are kept
        stored = json.loads(STORED.read_text()) if STORED.is_file() else {}
        STORED.write_text(json.dumps(dict(sorted((stored | values).items())), indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {STORED}")


if __name__ == "__main__":
    main()
