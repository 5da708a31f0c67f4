"""Components by ``_target_``: estimators (any Pyro ELBO, recorded), callbacks and loggers as config
groups, the generic signature check, and the one-line errors of each."""

from __future__ import annotations

import csv
from pathlib import Path

import pyro
import pytest
import torch
from omegaconf import OmegaConf

from lightning_svi.config.targets import check_target, target_name
from lightning_svi.errors import ConfigError
from tests.conftest import CONF_DIR, compose_config

SHORT = ["trainer.max_steps=20", "trainer.log_every_n_steps=5"]


# --- every shipped component config --------------------------------------------------------------------------


def _shipped(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("elbo", _shipped("elbo"))
@pytest.mark.parametrize("optim", _shipped("optim"))
def test_every_shipped_estimator_optimizer_and_schedule_passes_the_checks(elbo: str, optim: str) -> None:
    from lightning_svi.config.checks import check_config
    from lightning_svi.training.components import check_components

    for scheduler in [None, *_shipped("optim/scheduler")]:
        chosen = [] if scheduler is None else [f"optim/scheduler={scheduler}"]
        cfg = compose_config(f"elbo={elbo}", f"optim={optim}", *chosen)
        check_config(cfg)
        check_components(cfg)


@pytest.mark.parametrize("logger", _shipped("logger"))
def test_every_shipped_callback_and_logger_takes_the_keys_of_its_node(logger: str) -> None:
    from lightning_svi.training.run import RUN_TIME_ARGUMENTS

    cfg = compose_config(f"logger={logger}")
    for group in ("callbacks", "logger"):
        for name, node in cfg[group].items():
            check_target(node, f"{group}.{name}", supplied=RUN_TIME_ARGUMENTS)


# --- estimators ---------------------------------------------------------------------------------------------


@pytest.fixture
def beta_binomial() -> tuple:
    from lightning_svi.models.beta_binomial import BetaBinomial

    pyro.settings.set(module_local_params=True)
    pyro.set_rng_seed(0)
    data = BetaBinomial.synthetic_data(seed=0, num_groups=8)
    model = BetaBinomial(num_data=8)
    return model, model.full_guide(), {"index": torch.arange(8), **data}


@pytest.mark.parametrize(
    ("short_name", "recorded_as"),
    [
        ("trace_enum", "TraceEnumSample_ELBO"),  # samples its enumerated sites from the loss's contraction
        ("trace_graph", "TraceGraphWithLoss"),  # TraceGraph_ELBO with a differentiable_loss
        ("trace", "Trace_ELBO"),
        ("trace_mean_field", "TraceMeanField_ELBO"),
    ],
)
def test_each_shipped_elbo_is_built_as_its_recording_variant(short_name: str, recorded_as: str) -> None:
    from lightning_svi.core.estimators import RecordsTraces, build_estimator

    elbo_cfg = compose_config(f"elbo={short_name}").elbo
    estimator = build_estimator(elbo_cfg)
    assert isinstance(estimator, RecordsTraces)
    assert recorded_as in [base.__name__ for base in type(estimator).__mro__]
    assert estimator.num_particles == elbo_cfg.num_particles and estimator.vectorize_particles
    assert type(estimator) is type(build_estimator(elbo_cfg))  # one class per ELBO, built once


def test_a_pyro_elbo_the_project_does_not_ship_records_its_traces(beta_binomial: tuple) -> None:
    from lightning_svi.core.estimators import build_estimator

    model, guide, batch = beta_binomial
    estimator = build_estimator({"_target_": "pyro.infer.TraceTMC_ELBO", "max_plate_nesting": 1})
    loss = estimator(model, guide)(batch)
    loss.backward()
    traces = estimator.last_traces
    assert (-loss).item() == pytest.approx((traces.log_p - traces.log_q).item(), rel=1e-5)
    assert set(traces.log_q_sites) == {"rate"}
    assert torch.isfinite(model.alpha_unconstrained.grad).all()


def test_a_pyro_elbo_the_project_does_not_ship_trains_from_the_command_line(train_in_process) -> None:
    summary = train_in_process(*SHORT, "elbo._target_=pyro.infer.TraceTMC_ELBO", "~elbo.num_particles")
    assert summary["status"] == "completed" and summary["elbo"] == "TraceTMC_ELBO"


def test_the_enumeration_warning_stays_off_for_trace_enum_unless_asked(beta_binomial: tuple) -> None:
    from lightning_svi.core.estimators import build_estimator

    assert build_estimator({"_target_": "pyro.infer.TraceEnum_ELBO"}).strict_enumeration_warning is False
    asked = {"_target_": "pyro.infer.TraceEnum_ELBO", "strict_enumeration_warning": True}
    assert build_estimator(asked).strict_enumeration_warning is True


def regression(x: torch.Tensor, y: torch.Tensor) -> None:
    """Bayesian linear regression written for one sample of its weights: ``x @ w.t()`` does not
    broadcast over the particle dimension that vectorized particles add on the left."""
    w = pyro.sample("w", pyro.distributions.Normal(0.0, 1.0).expand([1, x.shape[-1]]).to_event(2))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", pyro.distributions.Normal((x @ w.t()).squeeze(-1), 1.0), obs=y)


def test_a_model_that_fails_only_with_vectorized_particles_is_explained_in_one_line() -> None:
    from pyro.infer.autoguide import AutoNormal

    from lightning_svi.core.estimators import build_estimator, explain_vectorization_error

    pyro.clear_param_store()
    x, y = torch.randn(10, 3), torch.randn(10)
    guide = AutoNormal(regression)
    estimator = build_estimator(compose_config("elbo=trace").elbo)

    def loss() -> torch.Tensor:
        return estimator.differentiable_loss(regression, guide, x, y)

    with pytest.raises(Exception) as raised:
        loss()
    message = explain_vectorization_error(raised.value, estimator, loss)
    assert message is not None and "\n" not in message
    assert message.startswith("elbo.vectorize_particles=true: ") and "elbo.vectorize_particles=false" in message
    assert "t() expects a tensor with <= 2 dimensions" in message
    assert estimator.vectorize_particles  # left as it was

    def broken() -> None:
        raise RuntimeError("unrelated")

    assert explain_vectorization_error(RuntimeError("unrelated"), estimator, broken) is None
    estimator.vectorize_particles = False
    assert explain_vectorization_error(raised.value, estimator) is None


# --- the generic check ----------------------------------------------------------------------------------------


def takes_anything(a: int, **rest: object) -> None: ...


def needs_two(a: int, b: int = 0) -> None: ...


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"_target_": "tests.test_components.needs_two", "c": 1}, "x.c=1: tests.test_components.needs_two takes no"),
        ({"_target_": "tests.test_components.needs_two", "b": 1}, "x: tests.test_components.needs_two needs a"),
        ({"_target_": "tests.test_components.nothing"}, "x._target_=tests.test_components.nothing: cannot be imported"),
        (
            {"_target_": "tests.no_module.f"},
            "x._target_=tests.no_module.f: cannot be imported (tests has no attribute 'no_module')",
        ),
        ({"_target_": "tests.test_components.SHORT"}, "x._target_=tests.test_components.SHORT: is not a class"),
        ({"_target_": 3}, "x._target_=3: must be the dotted path"),
        ({"a": 1}, "x._target_=None: must be the dotted path"),
        ([1, 2], "x=[1, 2]: must be a mapping with a _target_"),
    ],
)
def test_check_target_refuses_in_one_line(node: object, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_target(OmegaConf.create(node), "x")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_check_target_accepts_any_key_of_a_target_that_takes_keywords_and_partial_nodes() -> None:
    anything = check_target({"_target_": "tests.test_components.takes_anything", "a": 1, "zz": 2}, "x")
    assert anything.__name__ == "takes_anything"
    assert check_target({"_target_": "tests.test_components.needs_two", "_partial_": True}, "x").__name__ == "needs_two"
    assert check_target({"_target_": "tests.test_components.needs_two", "_partial_": True}, "x", supplied=("a",))


def test_target_name_is_the_class_name() -> None:
    assert target_name(compose_config().elbo) == "TraceEnum_ELBO"


# --- callbacks and loggers --------------------------------------------------------------------------------------


def built_callbacks(tmp_path: Path, *overrides: str) -> list:
    from lightning_svi.models.beta_binomial import BetaBinomial
    from lightning_svi.training.run import build_callbacks

    data = {"index": torch.arange(5), **BetaBinomial.synthetic_data(0, num_groups=5)}
    return build_callbacks(compose_config(*overrides), tmp_path, "beta_binomial", data)


EARLY_STOP = (
    "+callbacks.early_stop={_target_: pytorch_lightning.callbacks.EarlyStopping, monitor: train/elbo, mode: max}"
)


def test_default_callbacks_keep_their_order(tmp_path: Path) -> None:
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_svi.logging.hparams import HParamsLogger
    from lightning_svi.logging.pictures import PosteriorPictureLogger
    from lightning_svi.logging.progress import StepProgressBar
    from lightning_svi.logging.step_logger import EarlyStoppingChecks
    from lightning_svi.logging.summary import RunSummary
    from lightning_svi.training.run import trainer_callbacks

    callbacks = built_callbacks(tmp_path, EARLY_STOP)
    names = [type(callback).__name__ for callback in callbacks]
    assert names[:3] == ["StepProgressBar", "TraceLogger", "ParameterLogger"]
    assert names.index("RunSummary") < names.index("HParamsLogger") < names.index("LastCheckpoint")
    assert names[-2:] == ["LastCheckpoint", "EarlyStopping"]
    summary = next(callback for callback in callbacks if isinstance(callback, RunSummary))
    assert summary.path == tmp_path / "summary.json"
    assert next(c for c in callbacks if isinstance(c, HParamsLogger)).run_summary is summary
    assert next(c for c in callbacks if isinstance(c, ModelCheckpoint)).dirpath == str(tmp_path / "checkpoints")
    assert any(isinstance(callback, PosteriorPictureLogger) for callback in callbacks)

    given = trainer_callbacks(callbacks)
    assert given[:-1] == callbacks and isinstance(given[0], StepProgressBar)
    assert isinstance(given[-1], EarlyStoppingChecks)  # Lightning checks at epoch ends: SVI has none
    plain = built_callbacks(tmp_path / "plain")
    assert trainer_callbacks(plain) == plain


def test_a_callback_set_to_null_is_removed(tmp_path: Path) -> None:
    names = [type(callback).__name__ for callback in built_callbacks(tmp_path, "callbacks.pictures=null")]
    assert "PosteriorPictureLogger" not in names and "TraceLogger" in names


def test_a_callback_argument_it_does_not_take_is_one_line(tmp_path: Path) -> None:
    bad = "+callbacks.early_stop={_target_: pytorch_lightning.callbacks.EarlyStopping, monitr: train/elbo}"
    with pytest.raises(ConfigError, match=r"^callbacks.early_stop.monitr='train/elbo': pytorch_lightning\.callbacks"):
        built_callbacks(tmp_path, bad)


def test_early_stopping_from_the_command_line_stops_a_real_run(train_in_process, tmp_path: Path) -> None:
    """EarlyStopping reads the monitored scalar from the logged ones; with a threshold every ELBO
    meets, it stops the run at its first check, long before max_steps."""
    stop = EARLY_STOP.replace("mode: max}", "mode: max, stopping_threshold: -1.0e12}")
    summary = train_in_process("trainer.max_steps=500", stop, "logger=csv")
    assert summary["status"] == "stopped"
    assert summary["steps"] < 500
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    assert rows and {"train/elbo", "train/loss", "theta/alpha", "step"} <= set(rows[0])
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_loggers_by_name_or_several_at_once(tmp_path: Path) -> None:
    from pytorch_lightning.loggers import CSVLogger

    from lightning_svi.logging.tensorboard_logger import BufferedTensorBoardLogger
    from lightning_svi.training.run import build_loggers

    loggers = build_loggers(compose_config("logger=[tensorboard,csv]"), tmp_path)
    assert [type(logger) for logger in loggers] == [BufferedTensorBoardLogger, CSVLogger]
    assert Path(loggers[0].log_dir) == tmp_path / "tensorboard" and Path(loggers[1].log_dir) == tmp_path / "csv"
    assert build_loggers(compose_config("~logger"), tmp_path) == []


def test_the_after_step_hook_is_called_once_per_step(train_in_process) -> None:
    from tests import after_step_hooks

    after_step_hooks.CALLS.clear()
    summary = train_in_process(*SHORT, "optim.after_step=tests.after_step_hooks.record_call")
    assert summary["steps"] == 20
    assert len(after_step_hooks.CALLS) == 20


def test_lightnings_own_tensorboard_logger_gets_the_scalars_and_histograms(train_in_process, tmp_path: Path) -> None:
    from tests.conftest import read_histogram_tags, read_scalars

    plain = "logger.tensorboard._target_=pytorch_lightning.loggers.TensorBoardLogger"
    train_in_process(*SHORT, plain, "~logger.tensorboard.flush_seconds")  # the buffered logger's option
    assert {"train/elbo", "theta/alpha", "phi/qa/median"} <= set(read_scalars(tmp_path / "run"))
    assert read_histogram_tags(tmp_path / "run") == {"phi/qa", "phi/qb"}
