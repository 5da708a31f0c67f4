"""Steps per second of lightning-svi against the plain Pyro ``SVI.step`` loop, side by side.

    python scripts/bench.py            # every setting, 3 interleaved rounds
    python scripts/bench.py --quick    # one small setting, finishes in about a minute

Each round runs every mode once on the same setting, so machine noise hits all modes alike; the
table reports the median steps/s over rounds and each mode's ratio to plain Pyro. Start-up
(imports, tracing, warm-up) is excluded: lightning-svi's rate is the training loop's own
(``summary.json`` ``timing.steps_per_second``), plain Pyro's is timed after warm-up steps.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytorch_lightning
import torch
from hydra import compose, initialize_config_dir
from pyro.distributions import constraints

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class Setting:
    name: str
    model: str
    overrides: tuple[str, ...]
    num_particles: int
    plain_loop: Callable[[int, int], Callable[[], None]]  # (num_particles, seed) -> one step


def forum_plain_step(num_flips: int) -> Callable[[int, int], Callable[[], None]]:
    """The forum's beta-Bernoulli model and full guide, written as a user would, global param store."""

    def build(num_particles: int, seed: int) -> Callable[[], None]:
        from lightning_svi.models.beta_bernoulli import BetaBernoulli

        data = BetaBernoulli.synthetic_data(seed, num_flips=num_flips)["outcome"]

        def model(outcome: torch.Tensor) -> None:
            alpha = pyro.param("alpha", torch.tensor(1.0), constraint=constraints.positive)
            beta = pyro.param("beta", torch.tensor(1.0), constraint=constraints.positive)
            rate = pyro.sample("rate", dist.Beta(alpha, beta))
            with pyro.plate("flips", len(outcome)):
                pyro.sample("outcome", dist.Bernoulli(rate), obs=outcome)

        def guide(outcome: torch.Tensor) -> None:
            qa = pyro.param("qa", torch.tensor(1.0), constraint=constraints.positive)
            qb = pyro.param("qb", torch.tensor(1.0), constraint=constraints.positive)
            pyro.sample("rate", dist.Beta(qa, qb))

        pyro.settings.set(module_local_params=False)
        pyro.clear_param_store()
        elbo = pyro.infer.TraceEnum_ELBO(num_particles=num_particles, vectorize_particles=True)
        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo)
        return lambda: svi.step(data)

    return build


SETTINGS = {
    "forum-5k-1p": Setting("beta-Bernoulli, 5,000 obs, 1 particle", "beta_bernoulli",
                           ("data.synthetic={num_flips: 5000}",), 1, forum_plain_step(5000)),
    "forum-5k-10p": Setting("beta-Bernoulli, 5,000 obs, 10 particles", "beta_bernoulli",
                            ("data.synthetic={num_flips: 5000}",), 10, forum_plain_step(5000)),
    "forum-100k-10p": Setting("beta-Bernoulli, 100,000 obs, 10 particles", "beta_bernoulli",
                              ("data.synthetic={num_flips: 100000}",), 10, forum_plain_step(100_000)),
}  # fmt: skip


def plain_pyro_rate(setting: Setting, steps: int, warmup: int = 20) -> float:
    step = setting.plain_loop(setting.num_particles, 0)
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def lightning_svi_rate(setting: Setting, steps: int, log_every: int, *extra: str) -> float:
    from lightning_svi.training import train

    overrides = [
        f"model={setting.model}", *setting.overrides, f"elbo.num_particles={setting.num_particles}",
        f"trainer.max_steps={steps}", f"trainer.log_every_n_steps={log_every}", "progress_bar_refresh_rate=0",
        f"checkpoint.every_n_steps={steps}", *extra,
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        summary = train(cfg, Path(run_dir))
    return summary["timing"]["steps_per_second"]


MODES: dict[str, Callable[[Setting, int], float]] = {
    "plain Pyro SVI.step": plain_pyro_rate,
    "lightning-svi (log every 10)": lambda setting, steps: lightning_svi_rate(setting, steps, 10),
    "lightning-svi (log every step)": lambda setting, steps: lightning_svi_rate(setting, steps, 1),
    "compiled, inductor (log every 10)": lambda setting, steps: lightning_svi_rate(
        setting, steps, 10, "compile.enabled=true", "compile.backend=inductor"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=300, help="timed steps per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="forum-5k-1p only, 200 steps, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.settings, args.steps, args.rounds = ["forum-5k-1p"], 200, 2
    torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)

    print(f"torch {torch.__version__}, pyro {pyro.__version__}, lightning {pytorch_lightning.__version__}, "
          f"python {platform.python_version()}, threads {torch.get_num_threads()}, "
          f"{args.rounds} rounds x {args.steps} steps")  # fmt: skip
    print(f"\n| setting | {' | '.join(MODES)} |")
    print("| --- |" + " --- |" * len(MODES))
    for key in args.settings:
        setting = SETTINGS[key]
        rates: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode, measure in MODES.items():
                rates[mode].append(measure(setting, args.steps))
        medians = {mode: statistics.median(values) for mode, values in rates.items()}
        baseline = medians["plain Pyro SVI.step"]
        cells = [f"{rate:.0f}/s ({rate / baseline:.2f}x)" for rate in medians.values()]
        print(f"| {setting.name} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
