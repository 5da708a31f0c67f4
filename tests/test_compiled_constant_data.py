"""Compiled mode on models that read values of their data, where every step reads the same data (the
whole data set): Pyro's HMM example loops over ``range(lengths.max())`` and asserts on it. The trace
may then read what is computed from the data alone (``DataValuesReadable``), and still refuses what
depends on parameters or samples, or on data that changes between steps (minibatches)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from lightning_svi.compile.compiled_step import CompiledSVIStep, CompileError
from lightning_svi.core.patches import DataValuesReadable
from lightning_svi.training.run import build_datamodule, build_module, reset_global_state
from tests.conftest import compose_config
from tests.pyro_models.make_files import write_file
from tests.test_pyro_tutorials import settings_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def traced_reading(step, *inputs: torch.Tensor) -> torch.fx.GraphModule:
    """``step`` traced by ``make_fx`` with its first input marked as the data."""

    def marked(data: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        readable.add([data])
        return step(data, *rest)

    with DataValuesReadable() as readable:
        return make_fx(marked)(*inputs)


def repeat_to_the_largest_count(counts: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A loop as long as a value of the data: the largest of ``counts[index]``, ``index`` a factory's ``arange``
    (as a plate's indices are), which ``make_fx``'s own constant folding does not follow."""
    assert counts.max() <= 10
    index = torch.arange(counts.shape[0])
    total = weight
    for _ in range(counts[index].max()):
        total = total * 2 + (counts > 1).sum()
    return total


def test_a_trace_reads_values_computed_from_the_data_alone() -> None:
    counts, weight = torch.tensor([3, 5, 4]), torch.ones(2)
    graph = traced_reading(repeat_to_the_largest_count, counts, weight)
    assert torch.equal(graph(counts, weight), repeat_to_the_largest_count(counts, weight))
    assert sum(node.target is torch.ops.aten.mul.Tensor for node in graph.graph.nodes) == 5  # the loop, unrolled
    with pytest.raises(RuntimeError, match="_local_scalar_dense"):  # make_fx alone
        make_fx(repeat_to_the_largest_count)(counts, weight)


@pytest.mark.parametrize(
    "step",
    [
        lambda data, weight: weight * 2 if (data * weight).sum() > 0 else weight,  # another input
        lambda data, weight: weight * 2 if (data + torch.randn(())).sum() > 0 else weight,  # a random draw
        lambda data, weight: weight * 2 if (data + torch.empty(()).normal_()).sum() > 0 else weight,  # drawn in place
    ],
    ids=["parameter", "sample", "sample-in-place"],
)
def test_a_trace_still_refuses_values_that_depend_on_more_than_the_data(step) -> None:
    with pytest.raises(RuntimeError, match="_local_scalar_dense"):
        traced_reading(step, torch.tensor([1.0, 2.0]), torch.ones(2))


def test_the_patch_is_gone_after_the_block() -> None:
    with pytest.raises(RuntimeError, match="_local_scalar_dense"), DataValuesReadable():
        raise RuntimeError("inside: _local_scalar_dense")
    with pytest.raises(RuntimeError, match="_local_scalar_dense"):
        make_fx(repeat_to_the_largest_count)(torch.tensor([3, 5, 4]), torch.ones(2))


@pytest.fixture
def hmm(tmp_path: Path):
    """Pyro's HMM example (``tests/pyro_models/hmm.py``) as the training run builds it, its parameters created."""
    reset_global_state(2)
    data = write_file("hmm", tmp_path, seed=2)
    cfg = compose_config(*settings_of("hmm"), "data=file", f"data.path={data}", "seed=2")
    datamodule = build_datamodule(cfg)
    module, _ = build_module(cfg, datamodule)
    batch = datamodule.full_batch()
    module.svi(batch)
    return module, batch


def test_the_hmm_compiled_on_its_whole_data_gives_the_eager_loss_and_gradients(hmm) -> None:
    """The HMM's loss is exact (MAP tables, hidden states summed out): one graph call and one eager step
    give the same loss and gradients, and the graph holds one time step per step of the longest sequence."""
    module, batch = hmm
    batch = {**batch, "lengths": batch["lengths"].clamp(max=26)}  # shorter than the padded sequences (30)
    step = CompiledSVIStep(module.svi, module.estimator, batch, backend="fx", fixed_batch=True)
    loss, log_probs, _ = step(batch, update=False)
    parameters = step.parameters
    compiled = [parameter.grad for parameter in parameters]
    eager_loss = module.svi(batch)
    eager = torch.autograd.grad(eager_loss, parameters)
    torch.testing.assert_close(loss, eager_loss.detach(), rtol=1e-5, atol=1e-4)
    for got, expected in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # 26 time steps (x_t, y_t): the loop's length is the data's lengths.max(), not the padded 30.
    assert set(log_probs.log_p_sites) == {"marginal(x_0..y_25, 52 sites)", "probs_x", "probs_y"}
    # 26 time steps (x_t, y_t): the loop's length is the data's lengths.max(), not the padded 30.
    assert set(log_probs.log_p_sites) == {"marginal(x_0..y_25, 52 sites)", "probs_x", "probs_y"}


def test_the_hmm_on_minibatches_falls_back_and_names_the_line_that_reads_the_data(hmm) -> None:
    """Without ``fixed_batch`` (minibatches: the data's values change between steps) the loop's length
    cannot be fixed in the graph: the reason names the example's line."""
    module, batch = hmm
    with pytest.raises(CompileError) as error:
        CompiledSVIStep(module.svi, module.estimator, batch, backend="fx")
    message = str(error.value)
    assert "model_1 (" in message and "hmm.py:54) reads a tensor's value in `assert lengths.max() <= max_length`" in (
        message
    )
