"""A user's Pyro program, unchanged, as the framework's model or guide: parameters, arguments,
minibatch scaling, θ/φ by use, and the errors a user sees."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pyro
import pyro.distributions as dist
import pytest
import torch
from omegaconf import OmegaConf
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule
from torch import nn

from lightning_svi.core.programs.build import build_guide, build_model, pair_programs
from lightning_svi.core.programs.inputs import Inputs, resolve_inputs
from lightning_svi.core.programs.minibatch import MinibatchScale
from lightning_svi.core.programs.warmup import check_minibatch_scaling, first_loss, warm_up
from lightning_svi.errors import ConfigError

FLIPS = torch.tensor([1.0] * 6 + [0.0] * 4)


# Pyro's SVI Part I coin, as the tutorial writes it.
def coin_model(data):
    f = pyro.sample("latent_fairness", dist.Beta(10.0, 10.0))
    for i in range(len(data)):
        pyro.sample(f"obs_{i}", dist.Bernoulli(f), obs=data[i])


def coin_guide(data):
    alpha_q = pyro.param("alpha_q", torch.tensor(15.0), constraint=constraints.positive)
    beta_q = pyro.param("beta_q", torch.tensor(15.0), constraint=constraints.positive)
    pyro.sample("latent_fairness", dist.Beta(alpha_q, beta_q))


def regression(x, y=None):
    weight = pyro.param("weight", torch.zeros(x.shape[-1]))
    sigma = pyro.param("sigma", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal(x @ weight, sigma), obs=y)


def empty(x, y=None):
    pass


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)


class TinyVAE(nn.Module):
    """The tutorial's shape: one object, both networks, ``model`` and ``guide`` methods."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.decoder = nn.Linear(1, 4)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 1.0).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            out = self.encoder.fc(x)
            pyro.sample("z", dist.Normal(out[:, :1], out[:, 1:].exp()).to_event(1))


class RegressionModule(PyroModule):
    """A ``PyroModule`` that calls ``pyro.param``: Pyro's local-parameter mode refuses this (pyro#3237)."""

    def forward(self, x, y=None):
        return regression(x, y)


@pytest.fixture(autouse=True)
def user_module(monkeypatch: pytest.MonkeyPatch):
    """The functions above, importable by dotted path as a user's file would be."""
    module = types.ModuleType("user_file")
    module.__spec__ = importlib.machinery.ModuleSpec("user_file", None)
    for name, value in list(globals().items()):
        if callable(value) and getattr(value, "__module__", None) == __name__:
            setattr(module, name, value)
    monkeypatch.setitem(sys.modules, "user_file", module)
    pyro.settings.set(module_local_params=True)
    pyro.clear_param_store()
    yield module


def batch_of(**columns: torch.Tensor) -> dict[str, torch.Tensor]:
    rows = len(next(iter(columns.values())))
    return {"index": torch.arange(rows), **columns}


def pair(model_node: dict, guide_node: dict, batch: dict, num_rows: int | None = None):
    columns = [name for name in batch if name != "index"]
    rows = num_rows or len(batch["index"])
    model = build_model(OmegaConf.create(model_node), columns, rows)
    guide = build_guide(OmegaConf.create(guide_node), model, columns, rows)
    pair_programs(model.module, guide)
    return model.module, guide


def test_the_coin_tutorial_trains_exactly_as_plain_pyro_does() -> None:
    batch = batch_of(flips=FLIPS)
    model, guide = pair({"_target_": "user_file.coin_model"}, {"_target_": "user_file.coin_guide"}, batch)
    estimator = Trace_ELBO()
    svi = estimator(model, guide)
    pyro.set_rng_seed(0)
    sides = warm_up(svi, estimator, batch, validate=True)
    assert set(sides.phi) == {"alpha_q", "beta_q"} and not sides.theta
    optimizer = torch.optim.Adam(sides.phi_parameters, lr=0.0005, betas=(0.90, 0.999))
    pyro.set_rng_seed(1)
    ours = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = svi(batch)
        loss.backward()
        optimizer.step()
        ours.append(loss.item())

    pyro.clear_param_store()
    pyro.settings.set(module_local_params=False)
    try:
        reference = SVI(coin_model, coin_guide, pyro.optim.Adam({"lr": 0.0005, "betas": (0.90, 0.999)}), Trace_ELBO())
        pyro.set_rng_seed(1)
        theirs = [reference.step(FLIPS) for _ in range(50)]
        alpha_q = pyro.param("alpha_q").item()
    finally:
        pyro.settings.set(module_local_params=True)
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert sides.phi_values()["alpha_q"].item() == pytest.approx(alpha_q, rel=1e-5)


def test_pyro_param_inside_a_pyro_module_needs_no_rewrite() -> None:
    x, y = torch.randn(20, 3), torch.randn(20)
    batch = batch_of(x=x, y=y)
    model, guide = pair({"_target_": "user_file.RegressionModule"}, {"_target_": "user_file.empty"}, batch)
    estimator = Trace_ELBO()
    sides = warm_up(estimator(model, guide), estimator, batch, validate=True)
    assert set(sides.theta) == {"weight", "sigma"} and not sides.phi
    assert sides.theta_values()["sigma"].item() == pytest.approx(1.0)


def test_a_vae_object_splits_theta_and_phi_by_which_program_uses_each_network() -> None:
    batch = batch_of(x=torch.randn(8, 4))
    model, guide = pair({"_target_": "user_file.TinyVAE", "method": "model"}, {"method": "guide"}, batch)
    estimator = Trace_ELBO()
    sides = warm_up(estimator(model, guide), estimator, batch, validate=True)
    assert set(sides.theta) == {"decoder$$$weight", "decoder$$$bias"}
    assert set(sides.phi) == {"encoder$$$fc.weight", "encoder$$$fc.bias"}
    # The networks' own parameters are trained in place, and stored once in the state dict.
    assert sides.theta["decoder$$$weight"][0] is model.owner.decoder.weight
    assert len(estimator(model, guide).state_dict()) == 4


def test_a_model_may_read_a_parameter_the_guide_created() -> None:
    def model(x, y=None):
        pyro.sample("offset", dist.Normal(pyro.param("shared"), 1.0))  # read: the global store would hand the guide's
        regression(x, y)

    def guide(x, y=None):
        pyro.sample("offset", dist.Normal(pyro.param("shared", torch.tensor(0.5)), 1.0))

    sys.modules["user_file"].model, sys.modules["user_file"].guide = model, guide
    batch = batch_of(x=torch.randn(5, 2), y=torch.randn(5))
    built_model, built_guide = pair({"_target_": "user_file.model"}, {"_target_": "user_file.guide"}, batch)
    estimator = Trace_ELBO()
    with pytest.warns(UserWarning, match="'shared' is used by both the model and the guide"):
        sides = warm_up(estimator(built_model, built_guide), estimator, batch, validate=True)
    assert "shared" in sides.theta and "shared" not in sides.phi


def test_both_sides_creating_one_name_is_refused() -> None:
    def guide(x, y=None):
        pyro.param("weight", torch.ones(2))

    sys.modules["user_file"].guide = guide
    batch = batch_of(x=torch.randn(5, 2), y=torch.randn(5))
    model, built_guide = pair({"_target_": "user_file.regression"}, {"_target_": "user_file.guide"}, batch)
    estimator = Trace_ELBO()
    with pytest.raises(ConfigError, match=r"pyro.param\('weight'\) is created .* by both the model and the guide"):
        first_loss(estimator(model, built_guide), estimator, batch, validate=True)


def test_a_parameter_first_created_after_the_warm_up_is_refused() -> None:
    calls = []

    def model(x, y=None):
        calls.append(1)
        if len(calls) > 1:
            pyro.param("late", torch.zeros(1))
        regression(x, y)

    sys.modules["user_file"].model = model
    batch = batch_of(x=torch.randn(5, 2), y=torch.randn(5))
    built_model, guide = pair({"_target_": "user_file.model"}, {"_target_": "user_file.empty"}, batch)
    estimator = Trace_ELBO()
    svi = estimator(built_model, guide)
    first_loss(svi, estimator, batch, validate=True)
    built_model.freeze()
    with pytest.raises(ConfigError, match=r"created pyro.param\('late'\) after the first step"):
        svi(batch)


def test_arguments_are_matched_to_columns_by_name_or_by_the_config() -> None:
    assert resolve_inputs(regression, ["x", "y"], "model") == Inputs(kwargs={"x": "x", "y": "y"})
    assert resolve_inputs(coin_model, ["flips"], "model") == Inputs(args=("flips",))  # model(data), one column
    assert resolve_inputs(regression, ["a", "b"], "model", args=["a"], kwargs={"y": "b"}) == Inputs(("a",), {"y": "b"})
    with pytest.raises(ConfigError, match=r"model: its argument\(s\) data are not data columns \(the data has a, b\)"):
        resolve_inputs(coin_model, ["a", "b"], "model")
    with pytest.raises(
        ConfigError, match=r"model.data_args/model.data_kwargs name column\(s\) z that the data does not have"
    ):
        resolve_inputs(regression, ["x", "y"], "model", args=["z"])
    args, kwargs = Inputs(args=("x",), kwargs={"y": "y"})(batch_of(x=torch.ones(2), y=torch.zeros(2)))
    assert torch.equal(args[0], torch.ones(2)) and torch.equal(kwargs["y"], torch.zeros(2))


def test_a_plate_of_the_minibatch_size_is_scaled_to_the_full_data() -> None:
    x, y = torch.randn(4, 2), torch.randn(4)

    def log_density(scale: MinibatchScale | None, subsample: bool) -> float:
        def model():
            if subsample:  # a model written for subsampling: full size 40, four rows of it
                with pyro.plate("data", 40, subsample=torch.arange(4)):
                    pyro.sample("y", dist.Normal(x.sum(-1), 1.0), obs=y)
            else:
                with pyro.plate("data", 4):
                    pyro.sample("y", dist.Normal(x.sum(-1), 1.0), obs=y)

        if scale is None:
            return pyro.poutine.trace(model).get_trace().log_prob_sum().item()
        with scale:
            return pyro.poutine.trace(model).get_trace().log_prob_sum().item()

    unscaled = log_density(None, subsample=False)
    assert log_density(MinibatchScale(4, 40), subsample=False) == pytest.approx(10 * unscaled)
    # A plate that subsamples itself is scaled by Pyro once, not again.
    assert log_density(MinibatchScale(4, 40), subsample=True) == pytest.approx(log_density(None, subsample=True))
    assert log_density(None, subsample=True) == pytest.approx(10 * unscaled)


def test_a_minibatch_of_a_model_without_a_data_plate_is_refused() -> None:
    batch = batch_of(flips=FLIPS[:4])
    model, _ = pair({"_target_": "user_file.coin_model"}, {"_target_": "user_file.coin_guide"}, batch, num_rows=10)
    with pytest.raises(ConfigError, match=r"batches of 4 of the 10 rows .*: observed site\(s\) obs_0, obs_1, obs_2"):
        check_minibatch_scaling(model, batch, 10)
    regression_model, _ = pair(
        {"_target_": "user_file.regression"}, {"_target_": "user_file.empty"}, batch_of(x=x4(), y=torch.zeros(4)), 10
    )
    check_minibatch_scaling(regression_model, batch_of(x=x4(), y=torch.zeros(4)), 10)


def x4() -> torch.Tensor:
    return torch.randn(4, 2)


def test_vectorized_particles_that_the_model_cannot_take_name_the_setting() -> None:
    def model(x, y=None):
        weight = pyro.sample("weight", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("y", dist.Normal(x @ weight.t(), 1.0).to_event(1), obs=y)  # t(): at most 2 dimensions

    sys.modules["user_file"].model = model
    batch = batch_of(x=torch.randn(5, 2), y=torch.randn(5))
    built_model, guide = pair(
        {"_target_": "user_file.model"}, {"_target_": "pyro.infer.autoguide.AutoNormal", "_partial_": True}, batch
    )
    estimator = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    with pytest.raises(ConfigError, match=r"vectorize_particles=true: the model fails .* set elbo.vectorize_particles"):
        first_loss(estimator(built_model, guide), estimator, batch, validate=True)


def test_a_value_an_autoguide_refuses_names_its_key() -> None:
    batch = batch_of(x=torch.randn(3, 2), y=torch.randn(3))
    lowrank = {"_target_": "pyro.infer.autoguide.AutoLowRankMultivariateNormal", "_partial_": True, "rank": 0}
    with pytest.raises(ConfigError, match=r"guide.rank=0: refused by pyro.infer.autoguide.AutoLowRankMultivariate"):
        pair({"_target_": "user_file.regression"}, lowrank, batch)


def test_unimportable_and_unknown_targets_are_one_line_errors() -> None:
    batch = batch_of(x=torch.randn(3, 2))
    with pytest.raises(ConfigError, match=r"model._target_=user_file.nope: cannot be imported"):
        pair({"_target_": "user_file.nope"}, {"kind": "empty"}, batch)
    with pytest.raises(ConfigError, match=r"guide=full: model user_file.regression has no full guide of its own"):
        pair({"_target_": "user_file.regression"}, {"kind": "full"}, batch)
    with pytest.raises(ConfigError, match=r"guide.method=decode: TinyVAE has no method 'decode'"):
        pair({"_target_": "user_file.TinyVAE", "method": "model"}, {"method": "decode"}, batch)


def test_an_empty_guide_on_a_model_without_parameters_says_there_is_nothing_to_train() -> None:
    batch = batch_of(flips=FLIPS)
    model, guide = pair({"_target_": "user_file.coin_model"}, {"kind": "empty"}, batch)
    estimator = Trace_ELBO()
    with pytest.raises(ConfigError, match="nothing to train: neither the model nor the guide has parameters"):
        warm_up(estimator(model, guide), estimator, batch, validate=True)
