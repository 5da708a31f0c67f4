"""Bad input that ``train.py`` refuses before torch is imported: exit 2, one line, and no ``torch`` among
the modules ``python -X importtime`` saw imported."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, imported_modules, run_train_py

# One case per check; the message is what the user reads after "lightning-svi: error: ".
EARLY_REFUSALS = [
    (["model.alpha_init=-1"], "model.alpha_init=-1: must be a number > 0."),
    (["+model.alpha_inti=2"], "model.alpha_inti=2: not an option of model=beta_binomial; its options are alpha_init"),
    (["model=eight_schools", "model.parameterization=funnel"], "model.parameterization='funnel': unknown"),
    (
        ["model._target_=lightning_svi.models.coin.Coni"],
        "model._target_=lightning_svi.models.coin.Coni: not a built-in",
    ),
    (
        ["model=custom", "model._target_=no_such_package.Model"],
        "cannot be imported (No module named 'no_such_package')",
    ),
    (["model=coin", "guide=empty"], "guide=empty with model=coin: nothing to train"),
    (["guide=custom"], "guide: no guide given; with guide=custom set guide._target_=my_file.guide"),
    (["guide.kind=wishful"], "guide.kind='wishful': unknown; allowed values are full, empty"),
    (["data=file"], "data.path is not set: data=file reads a data file"),
    (["optim._target_=torhc.optim.Adam"], "optim._target_=torhc.optim.Adam: cannot be imported (No module named"),
    (["optim.scheduler=5"], "optim.scheduler=5: must be null or a mapping with a _target_"),
    (["optim.after_step=no_such_module.clip"], "optim.after_step=no_such_module.clip: cannot be imported (No module"),
    (["elbo.num_particles=0"], "elbo.num_particles=0: must be an integer >= 1."),
    (["callbacks.summary=null"], "callbacks.summary=null: lightning-svi's summary callback cannot be removed"),
    (["+callbacks.mine={_target_:no_such_module.Callback}"], "callbacks.mine._target_=no_such_module.Callback: cannot"),
    (["+logger.mine=5"], "logger.mine=5: must be null or a mapping with a _target_"),
    (["+trainer.logger=false"], "trainer.logger=False: lightning-svi gives the Trainer its logger from the logger"),
    (["trainer.devices=0"], "trainer.devices=0: must be auto, a number of devices >= 1"),
    (["trainer.accelerator=gpus"], "trainer.accelerator='gpus': unknown; allowed values are auto, cpu"),
    (["trainer=ddp_cpu", "trainer.num_nodes=0"], "trainer.num_nodes=0: must be an integer >= 1."),
    (["data.synthetic={num_grups:10}"], "data.synthetic.num_grups=10: not an option of model=beta_binomial's"),
    (["data.synthetic={num_groups:0}"], "data.synthetic.num_groups=0: must be an integer >= 1."),
    (["data.synthetic=5"], "data.synthetic=5: must be null or a mapping"),
    (["compile.enabled=yes"], "compile.enabled='yes': must be true or false."),
    (
        ["compile.cache_dir=/dev/null/inductor"],
        "compile.cache_dir=/dev/null/inductor: /dev/null is a file, so no folder",
    ),
]


# Components named by a _target_, checked against their signature and built once: torch and Pyro are
# imported for them (after every torch-free check), Lightning is not.
COMPONENT_REFUSALS = [
    (["model=custom", "model._target_=textwrap.indent"], "model._target_=textwrap.indent brings no data set"),
    (
        ["guide=normal", "+guide.init_scael=0.1"],
        "guide.init_scael=0.1: pyro.infer.autoguide.AutoNormal takes no argument",
    ),
    (["guide=custom", "guide._target_=no_such_file.guide"], "guide._target_=no_such_file.guide: cannot be imported"),
    (["guide=custom", "guide.method=guide"], "guide.method=guide: BetaBinomial has no method 'guide'"),
    (
        [
            "model=custom",
            "model._target_=textwrap.indent",
            "+model.colour=red",
            "data=file",
            f"data.path={REPO / 'train.py'}",
        ],
        "model.colour='red': textwrap.indent takes no argument",
    ),
    (["optim._target_=torch.optim.Adamm"], "optim._target_=torch.optim.Adamm: cannot be imported (torch.optim has no"),
    (["+optim.foo=1"], "optim.foo=1: torch.optim.Adam takes no argument 'foo'; it takes lr, betas, eps,"),
    (["optim=sgd", "optim.momentum=-0.5"], "optim.momentum=-0.5: refused by torch.optim.SGD (ValueError: Invalid"),
    (["optim.scheduler.gamma=2"], "optim.scheduler.gamma=2: refused by lightning_svi.core.optim.exponential_decay"),
    (
        ["optim/scheduler=cosine", "+optim.scheduler.gamma=0.1"],
        "optim.scheduler.gamma=0.1: torch.optim.lr_scheduler.CosineAnnealingLR takes no argument 'gamma'",
    ),
    (["elbo._target_=pyro.infer.Magic_ELBO"], "elbo._target_=pyro.infer.Magic_ELBO: cannot be imported"),
    (["+elbo.name=Trace_ELBO"], "elbo.name='Trace_ELBO': pyro.infer.TraceEnum_ELBO takes no argument 'name'"),
    (["elbo._target_=pyro.infer.RenyiELBO"], "elbo._target_=pyro.infer.RenyiELBO: has no differentiable_loss"),
    (["elbo._target_=torch.optim.Adam"], "elbo._target_=torch.optim.Adam: not a Pyro ELBO class"),
]
# A check another case makes fast on another component (takes no argument, cannot be imported, refused
# by its class): these run in the slow suite only.
REPEATED_CHECKS = {
    "guide=normal +guide.init_scael=0.1",
    "guide=custom guide._target_=no_such_file.guide",
    "optim._target_=torch.optim.Adamm",
    "+optim.foo=1",
    "optim=sgd optim.momentum=-0.5",
}


def component_case(overrides: list[str], message: str):
    """The case named by its overrides; slow when it repeats a check."""
    name = " ".join(overrides)
    return pytest.param(overrides, message, id=name, marks=pytest.mark.slow if name in REPEATED_CHECKS else ())


def assert_refused_before_torch(result, message: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("lightning-svi: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], error_lines
    assert "Traceback" not in result.stderr + result.stdout
    assert "torch" not in imported_modules(result.stderr)


@pytest.mark.parametrize(("overrides", "message"), EARLY_REFUSALS, ids=[" ".join(o) for o, _ in EARLY_REFUSALS])
def test_bad_value_is_refused_before_torch_is_imported(tmp_path: Path, overrides: list[str], message: str) -> None:
    result = run_train_py(*overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, importtime=True)
    assert_refused_before_torch(result, message)


@pytest.mark.parametrize(("overrides", "message"), [component_case(*case) for case in COMPONENT_REFUSALS])
def test_a_bad_component_is_refused_in_one_line_before_lightning_is_imported(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    result = run_train_py(*overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, importtime=True)
    assert result.returncode == 2, result.stderr[-3000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("lightning-svi: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], error_lines
    assert "Traceback" not in result.stderr + result.stdout
    assert "pytorch_lightning" not in imported_modules(result.stderr)


# Each built-in model's own table spec, read before torch: its row check, or its columns.
BAD_FILES = [
    ("beta_bernoulli", "outcome\n1\n2\n", "line 3: outcome=2 violates outcome is 0 or 1"),
    ("coin", "heads\n1\n", "missing column(s) flip"),
    ("gmm", "x\n0.5\noops\n", "line 3, column x: 'oops' is not allowed"),
    ("eight_schools", "y,sigma\n28,15\n8,0\n", "line 3: y=8, sigma=0 violates sigma > 0"),
    ("vae", ",".join(f"pixel_{i}" for i in range(64)) + "\n" + ",".join(["0"] * 63 + ["2"]), "every pixel is 0 or 1"),
]


@pytest.mark.parametrize(("model", "content", "message"), BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_bad_data_file_of_each_built_in_model_is_refused_before_torch_is_imported(
    tmp_path: Path, model: str, content: str, message: str
) -> None:
    csv = tmp_path / "data.csv"
    csv.write_text(content)
    result = run_train_py(
        f"model={model}", f"data.path={csv}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, importtime=True
    )
    assert_refused_before_torch(result, message)


def test_a_file_that_is_not_a_checkpoint_is_refused_before_torch_is_imported(tmp_path: Path) -> None:
    garbage = tmp_path / "last.ckpt"
    garbage.write_text("not a checkpoint")
    result = run_train_py(f"ckpt_path={garbage}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, importtime=True)
    assert_refused_before_torch(result, f"ckpt_path={garbage}: not a readable checkpoint")


def test_a_missing_data_file_of_a_users_model_is_refused_before_torch_is_imported(tmp_path: Path) -> None:
    # Only the file's existence: its columns are in the model's class, which imports torch.
    (tmp_path / "my_models").mkdir()
    (tmp_path / "my_models" / "__init__.py").write_text("")
    missing = tmp_path / "absent.csv"
    result = run_train_py(
        "model=custom", "model._target_=my_models.counts.PoissonGamma", f"data.path={missing}",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, importtime=True,
    )  # fmt: skip
    assert_refused_before_torch(result, f"data.path={missing}: no such file")
