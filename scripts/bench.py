"""Steps per second of lightning-svi against the plain Pyro ``SVI.step`` loop and NumPyro, side by side.

    python scripts/bench.py                              # every setting and mode, 3 interleaved rounds
    python scripts/bench.py --quick                      # one small setting, under two minutes
    python scripts/bench.py --settings gmm-10k --modes pyro default numpyro --rounds 1 --steps 100

Each round runs every mode once on the same setting (starting from a different mode each round),
so machine noise hits all modes alike; the table reports the median steps/s over rounds and each
mode's ratio to plain Pyro. Start-up is excluded: lightning-svi's rate is its training loop's own
(``summary.json`` ``timing.steps_per_second``), plain Pyro's and NumPyro's are timed after warm-up
steps. The second table gives the seconds spent outside the timed loop (median and slowest round):
for lightning-svi the run's wall time minus its loop time, which is mostly tracing and compiling in
compiled mode (inductor caches compiled graphs across runs, so later rounds are faster); for
NumPyro ``svi.init`` and the jit compile of the first ``svi.update``, done once per setting (every
round times the same jitted update from the same initial state).

All runs use the same data, the model's ``synthetic_data`` under lightning-svi's config
(``conf/model/<model>.yaml``, ``data.seed``), and the same model options. The baseline is plain
Pyro as a hand-written loop runs it, with Pyro's default validation on; a second column turns it
off, as lightning-svi's loop does after its first step (and NumPyro's jitted update never checks).
A mode is one line of ``MODES``; lightning-svi modes differ only by their Hydra overrides.
"Logging off" sets ``trainer.log_every_n_steps`` past the run's end, which leaves the first and
the last step logged. The NumPyro column needs ``pip install -e '.[bench]'``; without it the
column is left out with a note.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import pytorch_lightning
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from pyro.distributions import constraints
from pyro.ops.indexing import Vindex

if TYPE_CHECKING:
    from bench_numpyro import JittedLoop

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
NUMPYRO_PACKAGES = ("numpyro", "jax", "funsor")
LEARNING_RATE = 0.05  # plain Pyro's and NumPyro's Adam; lightning-svi runs its configured optimizer


@dataclass(frozen=True)
class Setting:
    title: str
    model: str  # conf/model/<model>.yaml
    data_options: dict[str, int] = field(hash=False)  # the model's synthetic_data options (data.synthetic)
    num_particles: int


SETTINGS = {
    "forum-5k-1p": Setting("beta-Bernoulli, 5,000 obs, 1 particle", "beta_bernoulli", {"num_flips": 5000}, 1),
    "forum-5k-10p": Setting("beta-Bernoulli, 5,000 obs, 10 particles", "beta_bernoulli", {"num_flips": 5000}, 10),
    "forum-100k-10p": Setting(
        "beta-Bernoulli, 100,000 obs, 10 particles", "beta_bernoulli", {"num_flips": 100_000}, 10
    ),
    "gmm-10k": Setting("GMM, K = 3, 10,000 points, enumerated, 1 particle", "gmm", {"num_points": 10_000}, 1),
}


@dataclass(frozen=True)
class RunOptions:
    steps: int
    warmup: int
    compile_backend: str


@dataclass(frozen=True)
class Measurement:
    steps_per_second: float
    setup_seconds: float | None  # outside the timed loop; None where the mode has nothing to report


def setting_overrides(setting: Setting) -> list[str]:
    options = ", ".join(f"{key}: {value}" for key, value in setting.data_options.items())
    return [f"model={setting.model}", f"data.synthetic={{{options}}}", f"elbo.num_particles={setting.num_particles}"]


def compose_setting(setting: Setting, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[*setting_overrides(setting), *overrides])


def model_options(cfg: DictConfig) -> dict:
    """The model's constructor options in the config (``alpha_init``, ``num_components``, ...)."""
    return {key: value for key, value in OmegaConf.to_container(cfg.model).items() if key != "_target_"}


def setting_data(cfg: DictConfig) -> dict[str, torch.Tensor]:
    """The data lightning-svi trains on under ``cfg``: the model's synthetic data set."""
    from lightning_svi.training.run import build_datamodule

    data = build_datamodule(cfg).full_batch()
    return {name: column for name, column in data.items() if name != "index"}


# ---- plain Pyro, written as a user would: functions, a global param store, pyro.infer.SVI ----


def pyro_beta_bernoulli(alpha_init: float, beta_init: float) -> tuple[Callable, Callable]:
    """The forum's beta-Bernoulli model and full guide."""

    def model(outcome: torch.Tensor) -> None:
        alpha = pyro.param("alpha", torch.tensor(alpha_init), constraint=constraints.positive)
        beta = pyro.param("beta", torch.tensor(beta_init), constraint=constraints.positive)
        rate = pyro.sample("rate", dist.Beta(alpha, beta))
        with pyro.plate("flips", len(outcome)):
            pyro.sample("outcome", dist.Bernoulli(rate), obs=outcome)

    def guide(outcome: torch.Tensor) -> None:
        qa = pyro.param("qa", torch.tensor(1.0), constraint=constraints.positive)
        qb = pyro.param("qb", torch.tensor(1.0), constraint=constraints.positive)
        pyro.sample("rate", dist.Beta(qa, qb))

    return model, guide


def pyro_gmm(num_components: int, prior_scale: float) -> tuple[Callable, Callable]:
    """The Gaussian mixture with its assignment enumerated, and a mean-field guide over the globals."""

    def model(x: torch.Tensor) -> None:
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(num_components)))
        locs = pyro.sample("locs", dist.Normal(torch.zeros(num_components), prior_scale).to_event(1))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
        with pyro.plate("points", len(x)):
            assignment = pyro.sample("assignment", dist.Categorical(weights), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(Vindex(locs)[..., assignment], scale), obs=x)

    def guide(x: torch.Tensor) -> None:
        spread = torch.linspace(-0.5, 0.5, num_components) * prior_scale
        concentration = pyro.param("weights_concentration", torch.ones(num_components), constraint=constraints.positive)
        locs_loc = pyro.param("locs_loc", spread)
        locs_scale = pyro.param("locs_scale", torch.ones(num_components), constraint=constraints.positive)
        scale_loc = pyro.param("scale_loc", torch.tensor(0.0))
        scale_scale = pyro.param("scale_scale", torch.tensor(0.5), constraint=constraints.positive)
        pyro.sample("weights", dist.Dirichlet(concentration))
        pyro.sample("locs", dist.Normal(locs_loc, locs_scale).to_event(1))
        pyro.sample("scale", dist.LogNormal(scale_loc, scale_scale))

    return model, guide


PYRO_PROGRAMS = {"beta_bernoulli": pyro_beta_bernoulli, "gmm": pyro_gmm}


def plain_pyro_rate(setting: Setting, run: RunOptions, validate: bool = True) -> Measurement:
    cfg = compose_setting(setting)
    data = setting_data(cfg)
    pyro.settings.set(module_local_params=False)
    pyro.enable_validation(validate)  # set either way: lightning-svi's runs leave it off
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    elbo = pyro.infer.TraceEnum_ELBO(num_particles=setting.num_particles, vectorize_particles=True, max_plate_nesting=1)
    model, guide = PYRO_PROGRAMS[setting.model](**model_options(cfg))
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": LEARNING_RATE}), elbo)
    for _ in range(run.warmup):
        svi.step(**data)
    started = time.perf_counter()
    for _ in range(run.steps):
        svi.step(**data)
    return Measurement(run.steps / (time.perf_counter() - started), None)


def lightning_svi_rate(overrides: tuple[str, ...], setting: Setting, run: RunOptions) -> Measurement:
    from lightning_svi.training.run import train

    cfg = compose_setting(
        setting,
        f"trainer.max_steps={run.steps}",
        "progress_bar_refresh_rate=0",
        f"checkpoint.every_n_steps={run.steps}",
        f"compile.backend={run.compile_backend}",
        *overrides,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        timing = train(cfg, Path(run_dir))["timing"]
    loop_seconds = run.steps / timing["steps_per_second"]
    return Measurement(timing["steps_per_second"], timing["wall_seconds"] - loop_seconds)


@functools.cache
def numpyro_loop(setting: Setting) -> JittedLoop:
    """Built and compiled once per setting: every round times the same jitted update from the same state."""
    from bench_numpyro import jitted_loop  # imports JAX: after XLA_FLAGS are set

    cfg = compose_setting(setting)
    data = {name: values.numpy() for name, values in setting_data(cfg).items()}
    return jitted_loop(setting.model, model_options(cfg), data, setting.num_particles)


def numpyro_rate(setting: Setting, run: RunOptions) -> Measurement:
    from bench_numpyro import steps_per_second

    loop = numpyro_loop(setting)
    return Measurement(steps_per_second(loop, run.steps, run.warmup), loop.compile_seconds)


@dataclass(frozen=True)
class Mode:
    title: str
    measure: Callable[[Setting, RunOptions], Measurement]


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
    "numpyro": Mode("NumPyro jit(svi.update)", numpyro_rate),
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


def versions(with_numpyro: bool) -> str:
    names = [
        f"torch {torch.__version__}",
        f"pyro {pyro.__version__}",
        f"lightning {pytorch_lightning.__version__}",
    ]
    if with_numpyro:
        import jax
        import numpyro

        names += [f"jax {jax.__version__}", f"numpyro {numpyro.__version__}"]
    return ", ".join([*names, f"python {platform.python_version()}"])


def measure_setting(setting: Setting, modes: list[str], run: RunOptions, rounds: int) -> dict[str, list[Measurement]]:
    """Every mode once per round; each round starts one mode later, so no mode always runs first."""
    measurements: dict[str, list[Measurement]] = {mode: [] for mode in modes}
    for round_index in range(rounds):
        start = round_index % len(modes)
        for mode in modes[start:] + modes[:start]:
            measurements[mode].append(MODES[mode].measure(setting, run))
    return measurements


def rate_cells(measurements: dict[str, list[Measurement]]) -> list[str]:
    medians = {mode: statistics.median(m.steps_per_second for m in runs) for mode, runs in measurements.items()}
    baseline = medians[BASELINE]
    return [f"{rate:.0f}/s ({rate / baseline:.2f}x)" for rate in medians.values()]


def setup_cells(measurements: dict[str, list[Measurement]]) -> list[str]:
    cells = []
    for runs in measurements.values():
        seconds = [m.setup_seconds for m in runs if m.setup_seconds is not None]
        cells.append(f"{statistics.median(seconds):.1f} s (max {max(seconds):.1f} s)" if seconds else "–")
    return cells


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
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
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
    run = RunOptions(args.steps, args.warmup, args.compile_backend)
    print(versions(with_numpyro=not missing))
    print(f"threads: {threads}; {os.cpu_count()} CPUs; {args.rounds} rounds x {args.steps} steps "
          f"(warm-up {args.warmup}); compile.backend={args.compile_backend}")  # fmt: skip
    print_header("setting", args.modes)
    setup_rows = []
    for key in args.settings:
        measurements = measure_setting(SETTINGS[key], args.modes, run, args.rounds)
        print(table_row(SETTINGS[key].title, rate_cells(measurements)), flush=True)
        setup_rows.append(table_row(SETTINGS[key].title, setup_cells(measurements)))
    print_header("seconds outside the timed loop", args.modes)
    print("\n".join(setup_rows))


if __name__ == "__main__":
    main()
