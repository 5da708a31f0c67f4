"""Steps per second of lightning-svi against the plain Pyro ``SVI.step`` loop and NumPyro, side by side.

    python scripts/bench.py                              # the four settings of issue 5, every mode, 3 rounds
    python scripts/bench.py --quick                      # one small setting, under two minutes
    python scripts/bench.py --settings gmm-10k --modes pyro default numpyro --rounds 1 --steps 100
    python scripts/bench.py --settings all --modes pyro default compiled compiled-log-off numpyro
                                                         # issue 18's table: every setting (below)

Each round runs every mode once on the same setting (starting from a different mode each round),
so machine noise hits all modes alike; the table reports the median steps/s over rounds and each
mode's ratio to plain Pyro. Start-up is excluded: lightning-svi's rate is its training loop's own
after its first step (``summary.json`` ``timing.steps_per_second``; the first step is a batch of
its own, ``observed_steps``), plain Pyro's and NumPyro's are timed after ``--warmup`` steps. The
second table gives the seconds spent outside the timed loop (median and slowest round): for
lightning-svi the run's wall time minus its steps at the loop's rate, which is mostly tracing and
compiling in compiled mode (inductor caches compiled graphs on disk, so later rounds are faster); for NumPyro
``svi.init`` and the jit compile of the first ``svi.update`` (every round times the jitted update
from the same initial state). The third gives each mode's peak resident memory (the largest round):
every measurement runs in a process of its own (``bench_processes``), forked from this one after its
imports, or ``python train.py`` under DDP (the largest of its processes). lightning-svi runs without
their end-of-run diagnostics (``callbacks.diagnostics=null``): the table is about training. The last
marks issue 18's speed targets (``TARGETS``) met or not, each with its range over the rounds.

Settings (``bench_settings.SETTINGS``): the built-in models on their synthetic data (the model's
``synthetic_data`` under lightning-svi's config, ``conf/model/<model>.yaml``, ``data.seed``), full
batch, in minibatches (``data.batch_size``; plain Pyro slices minibatches from a permutation per pass
and scales its plate by their ``index``) or under DDP (``trainer=ddp_cpu``: two CPU processes against
plain Pyro on one); and Pyro's tutorial programs, unchanged (``tests/pyro_models``), against their
own plain loop. Modes that do not apply to a setting (NumPyro has the full-batch built-in models
only) show "–". The baseline is plain Pyro as a hand-written loop runs it, with Pyro's default
validation on; a second column turns it off, as lightning-svi's loop does after its first step (and
NumPyro's jitted update never checks). A mode is one line of ``MODES``; lightning-svi modes differ
only by their Hydra overrides. "Logging off" sets ``trainer.log_every_n_steps`` past the run's end,
which leaves the first and the last step logged. The NumPyro column needs
``pip install -e '.[bench]'``; without it the column is left out with a note.
"""

from __future__ import annotations

import os

# As train.py has it (lightning_svi/__init__.py): numpy's OpenBLAS on one thread, set before torch loads numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import functools
import importlib.util
import logging
import platform
import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pyro
import pytorch_lightning
import torch
from bench_processes import in_child, train_py
from bench_settings import (
    GROUPS,
    ORIGINAL,
    REPO,
    SETTINGS,
    BuiltInSetting,
    RunOptions,
    Setting,
    TutorialSetting,
    compose_config,
    compose_setting,
    model_options,
    setting_data,
)

sys.path.insert(0, str(REPO))  # the tutorials' YAML names tests.pyro_models.*, as train.py's folder provides it
NUMPYRO_PACKAGES = ("numpyro", "jax", "funsor")


@dataclass(frozen=True)
class Measurement:
    steps_per_second: float
    setup_seconds: float | None = None  # outside the timed loop; None where the mode has nothing to report
    peak_rss_mib: float | None = None  # of the measurement's own process (the largest, under DDP)
    fallback: str | None = None  # compile.enabled=true, yet the run trained eagerly: why


def plain_pyro_rate(setting: Setting, run: RunOptions, validate: bool = True) -> Measurement:
    rate, peak = in_child(setting.plain_pyro_rate, run, validate)
    return Measurement(rate, peak_rss_mib=peak)


def train_in_process(overrides: list[str], run_dir: Path) -> dict:
    """``train.py``'s run without its imports (in a forked child): the run's summary."""
    from lightning_svi.training.run import train

    return train(compose_config(overrides), run_dir)


# The importance-weighted evidence, k-hat and ESS at the end: outside the timed loop, yet a minute
# of K = 1,000 draws over 1,000,000 rows, and the peak memory would be theirs instead of training's.
END_OF_RUN_DIAGNOSTICS_OFF = "callbacks.diagnostics=null"


def lightning_svi_rate(overrides: tuple[str, ...], setting: Setting, run: RunOptions) -> Measurement:
    with tempfile.TemporaryDirectory() as folder:
        arguments = [
            *setting.overrides(Path(folder), run.steps),
            f"trainer.max_steps={run.steps}",
            "progress_bar_refresh_rate=0",
            f"checkpoint.every_n_steps={run.steps}",
            f"compile.backend={run.compile_backend}",
            END_OF_RUN_DIAGNOSTICS_OFF,
            *overrides,
        ]
        run_dir = Path(folder) / "run"
        if isinstance(setting, BuiltInSetting) and setting.trainer is not None:
            summary, peak = train_py(arguments, run_dir, run.threads)
        else:
            summary, peak = in_child(train_in_process, arguments, run_dir)
    timing = summary["timing"]
    loop_seconds = run.steps / timing["steps_per_second"]
    fallback = summary.get("compile", {}).get("fallback")
    return Measurement(timing["steps_per_second"], timing["wall_seconds"] - loop_seconds, peak, fallback)


def numpyro_measurement(setting: BuiltInSetting, run: RunOptions) -> tuple[float, float]:
    """NumPyro's steps/s and its seconds in ``svi.init`` and the first (compiling) jitted update."""
    from bench_numpyro import jitted_loop, steps_per_second  # imports JAX: after XLA_FLAGS are set

    cfg = compose_setting(setting)
    data = {name: values.numpy() for name, values in setting_data(cfg).items()}
    loop = jitted_loop(setting.model, model_options(cfg), data, setting.num_particles)
    return steps_per_second(loop, run.steps, run.warmup), loop.compile_seconds


def numpyro_rate(setting: BuiltInSetting, run: RunOptions) -> Measurement:
    (rate, compile_seconds), peak = in_child(numpyro_measurement, setting, run)
    return Measurement(rate, compile_seconds, peak)


def always(setting: Setting) -> bool:
    return True


@dataclass(frozen=True)
class Mode:
    title: str
    measure: Callable[[Setting, RunOptions], Measurement]
    applies: Callable[[Setting], bool] = always  # "–" in the tables where it does not


def lightning_svi(*overrides: str) -> Callable[[Setting, RunOptions], Measurement]:
    return functools.partial(lightning_svi_rate, overrides)


LOG_EVERY_10 = "trainer.log_every_n_steps=10"
LOG_OFF = f"trainer.log_every_n_steps={2**31 - 1}"  # past any run's end: logs the first and last step only
COMPILED = "compile.enabled=true"
BASELINE = "pyro"
MODES = {
    BASELINE: Mode("plain Pyro SVI.step", plain_pyro_rate),
    "pyro-unvalidated": Mode("plain Pyro, validation off", functools.partial(plain_pyro_rate, validate=False)),
    "default": Mode("lightning-svi (log every 10)", lightning_svi(LOG_EVERY_10)),
    "log-every-step": Mode("lightning-svi (log every step)", lightning_svi("trainer.log_every_n_steps=1")),
    "log-off": Mode("lightning-svi (logging off)", lightning_svi(LOG_OFF)),
    "compiled": Mode("compiled (log every 10)", lightning_svi(COMPILED, LOG_EVERY_10)),
    "compiled-log-off": Mode("compiled (logging off)", lightning_svi(COMPILED, LOG_OFF)),
    "numpyro": Mode("NumPyro jit(svi.update)", numpyro_rate, lambda setting: setting.has_numpyro_program),
}


def missing_numpyro_packages() -> list[str]:
    return [name for name in NUMPYRO_PACKAGES if importlib.util.find_spec(name) is None]


def limit_threads(threads: int) -> str:
    """Set torch's and XLA's thread counts (XLA's must be in XLA_FLAGS before JAX is imported); say what was set."""
    torch.set_num_threads(threads)
    if threads > 1:
        return f"torch {torch.get_num_threads()}, JAX XLA's default pool"
    flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    return f"torch {torch.get_num_threads()}, JAX 1 (XLA_FLAGS={os.environ['XLA_FLAGS']})"


def quiet_runs() -> None:
    """Keep the tables readable: drop the log lines and warnings that every lightning-svi run repeats."""
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("pyro").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", message=".*found no sample sites configured for enumeration.*")
    warnings.filterwarnings("ignore", message="compile.enabled=true: ")  # the notes say why a run fell back


def versions(with_numpyro: bool) -> str:
    names = [
        f"torch {torch.__version__}",
        f"pyro {pyro.__version__}",
        f"lightning {pytorch_lightning.__version__}",
    ]
    if with_numpyro:  # not imported here: every child forked from this process would carry JAX
        names += [f"jax {metadata.version('jax')}", f"numpyro {metadata.version('numpyro')}"]
    return ", ".join([*names, f"python {platform.python_version()}"])


def measure_setting(setting: Setting, modes: list[str], run: RunOptions, rounds: int) -> dict[str, list[Measurement]]:
    """Every mode that applies once per round; each round starts one mode later, so no mode always runs first."""
    measurements: dict[str, list[Measurement]] = {mode: [] for mode in modes}
    applicable = [mode for mode in modes if MODES[mode].applies(setting)]
    for round_index in range(rounds):
        start = round_index % len(applicable)
        for mode in applicable[start:] + applicable[:start]:
            measurements[mode].append(MODES[mode].measure(setting, run))
    return measurements


def rate_cells(measurements: dict[str, list[Measurement]]) -> list[str]:
    medians = {mode: statistics.median(m.steps_per_second for m in runs) for mode, runs in measurements.items() if runs}
    baseline = medians[BASELINE]
    return [
        f"{medians[mode]:.0f}/s ({medians[mode] / baseline:.2f}x)" if mode in medians else "–" for mode in measurements
    ]


def setup_cells(measurements: dict[str, list[Measurement]]) -> list[str]:
    cells = []
    for runs in measurements.values():
        seconds = [m.setup_seconds for m in runs if m.setup_seconds is not None]
        cells.append(f"{statistics.median(seconds):.1f} s (max {max(seconds):.1f} s)" if seconds else "–")
    return cells


def rss_cells(measurements: dict[str, list[Measurement]]) -> list[str]:
    peaks = [[m.peak_rss_mib for m in runs if m.peak_rss_mib is not None] for runs in measurements.values()]
    return [f"{max(values):.0f} MiB" if values else "–" for values in peaks]


def notes(setting: Setting, measurements: dict[str, list[Measurement]]) -> list[str]:
    """The setting's own note, and why a compiled mode trained eagerly."""
    lines = [f"{setting.title}: {setting.note}"] if setting.note else []
    modes_of: dict[str, list[str]] = {}  # reason -> the modes that gave it
    for mode, runs in measurements.items():
        for reason in dict.fromkeys(m.fallback for m in runs if m.fallback):
            modes_of.setdefault(reason, []).append(MODES[mode].title)
    for reason, titles in modes_of.items():
        lines.append(f"{setting.title}: {', '.join(titles)} fell back to eager: {reason}")
    return lines


@dataclass(frozen=True)
class Target:
    """One of issue 18's speed targets: ``mode``'s rate at least ``at_least`` times ``over``'s, on the
    settings it ``covers``."""

    title: str
    mode: str
    over: str
    at_least: float
    covers: Callable[[Setting], bool] = always


def is_tutorial(setting: Setting) -> bool:
    return isinstance(setting, TutorialSetting)


def full_batch_model(model: str) -> Callable[[Setting], bool]:
    return lambda setting: setting.has_numpyro_program and getattr(setting, "model", None) == model


TARGETS = [
    Target("compiled (log every 10) ≥ 1.5x NumPyro", "compiled", "numpyro", 1.5, full_batch_model("beta_bernoulli")),
    Target("compiled (log every 10) ≥ 1.0x NumPyro", "compiled", "numpyro", 1.0, full_batch_model("gmm")),
    Target("lightning-svi (log every 10) ≥ 1.2x plain Pyro", "default", BASELINE, 1.2),
    Target("lightning-svi (log every step) ≥ 1.0x plain Pyro", "log-every-step", BASELINE, 1.0),
    Target("compiled ≥ 5x plain Pyro, or a fall-back with its reason", "compiled", BASELINE, 5.0, is_tutorial),
]


def target_rows(setting: Setting, measurements: dict[str, list[Measurement]]) -> list[str]:
    """A row per target that covers ``setting`` and was measured: the ratio of medians (as the rate table),
    its range over rounds (each round's two runs taken side by side), and whether it is met."""
    rows = []
    for target in TARGETS:
        ours, theirs = measurements.get(target.mode, []), measurements.get(target.over, [])
        if not target.covers(setting) or not ours or not theirs:
            continue
        if any(m.fallback for m in ours):
            rows.append(table_row(target.title, [setting.title, "–", "–", "fell back to eager (see notes)"]))
            continue
        ratio = statistics.median(m.steps_per_second for m in ours) / statistics.median(
            m.steps_per_second for m in theirs
        )
        per_round = [a.steps_per_second / b.steps_per_second for a, b in zip(ours, theirs, strict=True)]
        verdict = "met" if ratio >= target.at_least else "not met"
        if min(per_round) < target.at_least <= ratio:
            verdict += " (not in every round)"
        elif ratio < target.at_least <= max(per_round):
            verdict += " (met in some rounds)"
        cells = [setting.title, f"{ratio:.2f}x", f"{min(per_round):.2f}–{max(per_round):.2f}x", verdict]
        rows.append(table_row(target.title, cells))
    return rows


def table_row(first: str, cells: list[str]) -> str:
    return f"| {first} | {' | '.join(cells)} |"


def print_header(first: str, modes: list[str]) -> None:
    print("\n" + table_row(first, [MODES[mode].title for mode in modes]))
    print("| --- |" + " --- |" * len(modes))


QUICK = {
    "settings": ["forum-5k-1p"],
    "modes": [mode for mode in MODES if mode != "compiled-log-off"],
    "steps": 100,
    "rounds": 2,
}  # under two minutes on a 2-core machine, a cold inductor compile included


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = "; ".join(f"{name}: {' '.join(keys)}" for name, keys in GROUPS.items())
    parser.add_argument(
        "--settings",
        nargs="+",
        default=ORIGINAL,
        choices=[*SETTINGS, *GROUPS],
        help=f"rows, in order (default: {' '.join(ORIGINAL)}); groups: {groups}",
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="columns, in order")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per mode and round")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before plain Pyro's and NumPyro's")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile-backend", default="inductor", choices=["inductor", "fx"])
    quick_choices = ", ".join(f"{key} {value}" for key, value in QUICK.items())
    parser.add_argument("--quick", action="store_true", help=f"defaults for a short run: {quick_choices}")
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK)  # options given explicitly still win
    args = parser.parse_args(argv)
    args.settings = list(dict.fromkeys(key for name in args.settings for key in GROUPS.get(name, [name])))
    args.modes = [BASELINE, *(mode for mode in args.modes if mode != BASELINE)]  # the ratios need it first
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threads = limit_threads(args.threads)
    quiet_runs()
    missing = missing_numpyro_packages()
    if missing and "numpyro" in args.modes:
        args.modes.remove("numpyro")
        print(f"NumPyro column left out: {', '.join(missing)} not installed (pip install -e '.[bench]').")
    run = RunOptions(args.steps, args.warmup, args.compile_backend, args.threads)
    print(versions(with_numpyro=not missing))
    print(f"threads: {threads}; {os.cpu_count()} CPUs; {args.rounds} rounds x {args.steps} steps "
          f"(warm-up {args.warmup}); compile.backend={args.compile_backend}")  # fmt: skip
    print_header("setting", args.modes)
    setup_rows, rss_rows, note_lines, targets = [], [], [], []
    for key in args.settings:
        setting = SETTINGS[key]
        measurements = measure_setting(setting, args.modes, run, args.rounds)
        print(table_row(setting.title, rate_cells(measurements)), flush=True)
        setup_rows.append(table_row(setting.title, setup_cells(measurements)))
        rss_rows.append(table_row(setting.title, rss_cells(measurements)))
        note_lines += notes(setting, measurements)
        targets += target_rows(setting, measurements)
    print_header("seconds outside the timed loop", args.modes)
    print("\n".join(setup_rows))
    print_header("peak RSS (largest round)", args.modes)
    print("\n".join(rss_rows))
    if targets:
        print("\n| target | setting | ratio (medians) | range over rounds | |\n| --- | --- | --- | --- | --- |")
        print("\n".join(targets))
    if note_lines:
        print("\nnotes:\n" + "\n".join(f"- {line}" for line in note_lines))


if __name__ == "__main__":
    main()
