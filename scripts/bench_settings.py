"""The bench's settings (its rows): what lightning-svi trains, and the plain Pyro loop it is compared with.

Two kinds. A ``BuiltInSetting`` trains one of lightning-svi's models on its synthetic data, full batch or
in minibatches, on one process or under DDP; its plain Pyro loop is written below as a user would write
it. A ``TutorialSetting`` trains one of Pyro's own tutorial programs, unchanged (``tests/pyro_models``),
through the YAML a user would write for it; its plain Pyro loop is the tutorial's own
(``tests.pyro_models.reference``).
"""

from __future__ import annotations

import importlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pyro
import pyro.distributions as dist
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from pyro.distributions import constraints
from pyro.ops.indexing import Vindex

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
TUTORIAL_CONF = REPO / "tests" / "pyro_models" / "conf"
LEARNING_RATE = 0.05  # plain Pyro's and NumPyro's Adam; lightning-svi runs its configured optimizer
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class RunOptions:
    steps: int
    warmup: int
    compile_backend: str
    threads: int


@dataclass(frozen=True)
class BuiltInSetting:
    """A lightning-svi model (``conf/model/<model>.yaml``) on its synthetic data."""

    title: str
    model: str
    data_options: dict[str, int] = field(hash=False)  # the model's synthetic_data options (data.synthetic)
    num_particles: int = 1
    batch_size: int | None = None  # data.batch_size; plain Pyro steps through the same kind of minibatches
    trainer: str | None = None  # trainer=<name>, e.g. ddp_cpu: lightning-svi runs train.py (DDP relaunches it)
    note: str | None = None  # printed under the tables

    @property
    def has_numpyro_program(self) -> bool:
        """NumPyro runs the full-batch, one-process settings (``bench_numpyro.PROGRAMS``)."""
        return self.batch_size is None and self.trainer is None

    def overrides(self, folder: Path, steps: int) -> list[str]:
        """lightning-svi's overrides for this setting (``folder`` and ``steps`` are for tutorials' data)."""
        options = ", ".join(f"{key}: {value}" for key, value in self.data_options.items())
        return [
            f"model={self.model}",
            f"data.synthetic={{{options}}}",
            f"elbo.num_particles={self.num_particles}",
            *([f"data.batch_size={self.batch_size}"] if self.batch_size else []),
            *([f"trainer={self.trainer}"] if self.trainer else []),
        ]

    def plain_pyro_rate(self, run: RunOptions, validate: bool) -> float:
        """Steps/s of ``SVI.step`` with a global param store, after ``run.warmup`` untimed steps."""
        cfg = compose_setting(self)
        data = setting_data(cfg)
        pyro.settings.set(module_local_params=False)
        pyro.enable_validation(validate)
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        elbo = pyro.infer.TraceEnum_ELBO(
            num_particles=self.num_particles, vectorize_particles=True, max_plate_nesting=1
        )
        num_data = len(next(iter(data.values())))
        model, guide = PYRO_PROGRAMS[self.model](num_data, **model_options(cfg))
        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": LEARNING_RATE}), elbo)
        batches = minibatches(data, self.batch_size, seed=0) if self.batch_size else itertools.repeat(data)
        for batch in itertools.islice(batches, run.warmup):
            svi.step(**batch)
        started = time.perf_counter()
        for batch in itertools.islice(batches, run.steps):
            svi.step(**batch)
        return run.steps / (time.perf_counter() - started)


@dataclass(frozen=True)
class TutorialSetting:
    """One of Pyro's tutorial programs as ``tests/pyro_models/<name>.py`` holds it, trained through
    ``tests/pyro_models/conf`` (``model=pyro_<name> guide=pyro_<name> data=file``) at the reference loop's
    settings (``tests.pyro_models.reference.overrides``)."""

    title: str
    name: str
    note: str | None = None
    has_numpyro_program = False

    @property
    def seed(self) -> int:
        """The reference loop's first good seed (the GMM and HMM reach their intended optimum from it)."""
        from tests.pyro_models.reference import GOOD_SEEDS

        return GOOD_SEEDS.get(self.name, (0,))[0]

    def overrides(self, folder: Path, steps: int) -> list[str]:
        """Writes the tutorial's data file into ``folder``; its YAML and the reference loop's settings."""
        from tests.pyro_models.make_files import write_file
        from tests.pyro_models.reference import overrides

        path = write_file(self.name, folder, seed=self.seed)
        return [
            f"hydra.searchpath=[file://{TUTORIAL_CONF}]",
            f"model=pyro_{self.name}",
            f"guide=pyro_{self.name}",
            *overrides(self.name, steps),
            "data=file",
            f"data.path={path}",
            f"seed={self.seed}",
        ]

    def plain_pyro_rate(self, run: RunOptions, validate: bool) -> float:
        """Steps/s of the tutorial's own loop (``reference_svi``), its ``svi.step`` calls timed after
        ``run.warmup`` untimed ones."""
        from tests.pyro_models import reference

        module = importlib.import_module(f"tests.pyro_models.{self.name}")
        pyro.enable_validation(validate)
        with mock.patch.object(module, "run_steps", warmed_up(module.run_steps, run.warmup)):
            result = reference.run(self.name, seed=self.seed, steps=run.steps)
        return run.steps / result["seconds"]


Setting = BuiltInSetting | TutorialSetting

SETTINGS: dict[str, Setting] = {
    "forum-5k-1p": BuiltInSetting("beta-Bernoulli, 5,000 obs, 1 particle", "beta_bernoulli", {"num_flips": 5000}),
    "forum-5k-10p": BuiltInSetting(
        "beta-Bernoulli, 5,000 obs, 10 particles", "beta_bernoulli", {"num_flips": 5000}, num_particles=10
    ),
    "forum-100k-10p": BuiltInSetting(
        "beta-Bernoulli, 100,000 obs, 10 particles", "beta_bernoulli", {"num_flips": 100_000}, num_particles=10
    ),
    "gmm-10k": BuiltInSetting("GMM, K = 3, 10,000 points, enumerated, 1 particle", "gmm", {"num_points": 10_000}),
    "forum-1m-batch10k": BuiltInSetting(
        "beta-Bernoulli, 1,000,000 obs, minibatches of 10,000",
        "beta_bernoulli",
        {"num_flips": 1_000_000},
        batch_size=10_000,
        note="plain Pyro: minibatches sliced from a fresh permutation per pass, plate(N, subsample=index)",
    ),
    "gmm-10k-batch1k": BuiltInSetting(
        "GMM, K = 3, 10,000 points, minibatches of 1,000",
        "gmm",
        {"num_points": 10_000},
        batch_size=1_000,
        note="plain Pyro: minibatches sliced from a fresh permutation per pass, plate(N, subsample=index)",
    ),
    "forum-5k-ddp": BuiltInSetting(
        "beta-Bernoulli, 5,000 obs, DDP on 2 CPU processes",
        "beta_bernoulli",
        {"num_flips": 5000},
        trainer="ddp_cpu",
        note=(
            "lightning-svi on 2 processes (python train.py trainer=ddp_cpu: gloo, and shared memory for "
            "the steps' all-reduce); plain Pyro on one"
        ),
    ),
    "coin": TutorialSetting("Pyro tutorial: SVI Part I coin (10 flips)", "coin"),
    "tutorial-gmm": TutorialSetting("Pyro tutorial: GMM, AutoDelta, enumerated (5 points)", "gmm"),
    "regression": TutorialSetting("Pyro tutorial: Bayesian regression, AutoNormal (170 rows)", "regression"),
    "vae": TutorialSetting("Pyro example: VAE, z 2, hidden 32 (256 images)", "vae"),
    "hmm": TutorialSetting("Pyro example: HMM model_1, enumerated (20 sequences)", "hmm"),
}
ORIGINAL = ["forum-5k-1p", "forum-5k-10p", "forum-100k-10p", "gmm-10k"]  # the default: the settings of issue 5
GROUPS = {"all": list(SETTINGS), "tutorials": ["coin", "tutorial-gmm", "regression", "vae", "hmm"]}


def compose_config(overrides: list[str]) -> DictConfig:
    """lightning-svi's config (``conf/``) under ``overrides``, as ``train.py`` composes it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def compose_setting(setting: BuiltInSetting, *overrides: str) -> DictConfig:
    return compose_config([*setting.overrides(Path(), 0), *overrides])


def model_options(cfg: DictConfig) -> dict:
    """The model's constructor options in the config (``alpha_init``, ``num_components``, ...)."""
    return {key: value for key, value in OmegaConf.to_container(cfg.model).items() if key != "_target_"}


def setting_data(cfg: DictConfig) -> Batch:
    """The data lightning-svi trains on under ``cfg``: the model's synthetic data set."""
    from lightning_svi.training.run import build_datamodule

    data = build_datamodule(cfg).full_batch()
    return {name: column for name, column in data.items() if name != "index"}


def minibatches(data: Batch, batch_size: int, seed: int) -> Iterator[Batch]:
    """Shuffled minibatches and their rows' ``index``, a fresh permutation per pass, as a PyTorch user
    slices them (and as lightning-svi's sampler draws them on one process)."""
    num_rows = len(next(iter(data.values())))
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(num_rows, generator=generator)[: num_rows // batch_size * batch_size]
        for index in order.split(batch_size):
            yield {"index": index, **{name: column[index] for name, column in data.items()}}


def warmed_up(run_steps: Callable[..., dict], warmup: int) -> Callable[..., dict]:
    """``run_steps(svi, steps, ...)`` after ``warmup`` untimed ``svi.step`` calls."""

    def run(svi: pyro.infer.SVI, steps: int, *args: object, **kwargs: object) -> dict:
        for _ in range(warmup):
            svi.step(*args, **kwargs)
        return run_steps(svi, steps, *args, **kwargs)

    return run


# ---- plain Pyro, written as a user would: functions, a global param store, pyro.infer.SVI ----
# The data plate has the full data's size; a minibatch passes its rows' ``index`` to scale it up.


def pyro_beta_bernoulli(num_data: int, alpha_init: float, beta_init: float) -> tuple[Callable, Callable]:
    """The forum's beta-Bernoulli model and full guide."""

    def model(outcome: torch.Tensor, index: torch.Tensor | None = None) -> None:
        alpha = pyro.param("alpha", torch.tensor(alpha_init), constraint=constraints.positive)
        beta = pyro.param("beta", torch.tensor(beta_init), constraint=constraints.positive)
        rate = pyro.sample("rate", dist.Beta(alpha, beta))
        with pyro.plate("flips", num_data, subsample=index):
            pyro.sample("outcome", dist.Bernoulli(rate), obs=outcome)

    def guide(outcome: torch.Tensor, index: torch.Tensor | None = None) -> None:
        qa = pyro.param("qa", torch.tensor(1.0), constraint=constraints.positive)
        qb = pyro.param("qb", torch.tensor(1.0), constraint=constraints.positive)
        pyro.sample("rate", dist.Beta(qa, qb))

    return model, guide


def pyro_gmm(num_data: int, num_components: int, prior_scale: float) -> tuple[Callable, Callable]:
    """The Gaussian mixture with its assignment enumerated, and a mean-field guide over the globals."""

    def model(x: torch.Tensor, index: torch.Tensor | None = None) -> None:
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(num_components)))
        locs = pyro.sample("locs", dist.Normal(torch.zeros(num_components), prior_scale).to_event(1))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
        with pyro.plate("points", num_data, subsample=index):
            assignment = pyro.sample("assignment", dist.Categorical(weights), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(Vindex(locs)[..., assignment], scale), obs=x)

    def guide(x: torch.Tensor, index: torch.Tensor | None = None) -> None:
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
