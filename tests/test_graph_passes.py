"""hoist_elementwise_before_expand: the same values, with the elementwise maths on the small tensors."""

from __future__ import annotations

import copy

import pyro
import pyro.distributions as dist
import torch
from torch._inductor.decomposition import select_decomp_table
from torch.fx.experimental.proxy_tensor import make_fx

from lightning_svi.compile.compiled_step import CompiledSVIStep
from lightning_svi.compile.graph_passes import hoist_elementwise_before_expand
from lightning_svi.core.patches import pyro_static_tracing
from lightning_svi.data.datamodule import TensorDataModule
from lightning_svi.models.beta_bernoulli import BetaBernoulli
from lightning_svi.training.run import build_module, reset_global_state
from tests.conftest import compose_config

TRANSCENDENTAL = {torch.ops.aten.log.default, torch.ops.aten.log1p.default, torch.ops.aten.exp.default}


def traced_and_hoisted(function, *inputs: torch.Tensor):
    graph = make_fx(function, decomposition_table=select_decomp_table())(*inputs)
    hoisted = copy.deepcopy(graph)
    moved = hoist_elementwise_before_expand(hoisted, list(inputs))
    return graph, hoisted, moved


def largest_output(graph, ops) -> int:
    return max(node.meta["val"].numel() for node in graph.graph.nodes if node.target in ops)


def test_a_broadcast_distribution_takes_its_logarithms_once_per_particle_not_per_datum() -> None:
    probs = torch.tensor([[0.2], [0.7], [0.4]])  # 3 particles
    data = (torch.rand(500) < 0.3).float()

    def log_prob_and_gradient(probs, data):
        probs = probs.detach().requires_grad_()
        log_prob = dist.Bernoulli(probs.expand(3, 500), validate_args=False).log_prob(data).sum()
        return log_prob, torch.autograd.grad(log_prob, probs)[0]

    graph, hoisted, moved = traced_and_hoisted(log_prob_and_gradient, probs, data)
    assert moved > 0
    assert largest_output(graph, TRANSCENDENTAL) == 1500  # before: logits of every (particle, datum)
    assert largest_output(hoisted, TRANSCENDENTAL) == 3  # after: of every particle
    for before, after in zip(graph(probs, data), hoisted(probs, data), strict=True):
        torch.testing.assert_close(after, before)
    expected = data.sum() * probs.log() + (500 - data.sum()) * (1 - probs).log()
    torch.testing.assert_close(hoisted(probs, data)[0], expected.sum())


def test_random_draws_stay_one_per_element() -> None:
    def draws(probs):
        return torch.bernoulli(probs.expand(4000)), probs.expand(4000).log()

    probs = torch.tensor([0.5])
    graph, hoisted, _ = traced_and_hoisted(draws, probs)
    torch.manual_seed(0)
    before = graph(probs)
    torch.manual_seed(0)
    after = hoisted(probs)
    assert 1500 < after[0].sum() < 2500  # 4,000 fair coins, not one coin repeated
    torch.testing.assert_close(after, before)
    assert largest_output(hoisted, TRANSCENDENTAL) == 1


def test_an_op_whose_output_is_written_in_place_is_left_where_it_is() -> None:
    def masks(x):
        above = x.expand(3, 4) > 0
        return above.logical_and_(x.expand(3, 4) < 1)

    x = torch.tensor([0.5, -1.0, 2.0, 0.1])
    graph, hoisted, moved = traced_and_hoisted(masks, x)
    torch.testing.assert_close(hoisted(x), graph(x))
    # ``>`` stays on the expanded (3, 4) tensor, which ``logical_and_`` writes into (moving it would
    # make that write land in a zero-stride view).
    (greater,) = [node for node in hoisted.graph.nodes if node.target is torch.ops.aten.gt.Scalar]
    assert tuple(greater.meta["val"].shape) == (3, 4)
    assert moved == 0  # ``<`` too: any input of an in-place op is left alone


def test_the_beta_bernoulli_step_gives_the_same_loss_and_gradients_once_hoisted() -> None:
    reset_global_state(0)
    cfg = compose_config("model=beta_bernoulli", "data.synthetic={num_flips: 2000}", "elbo.num_particles=5")
    datamodule = TensorDataModule(BetaBernoulli.synthetic_data(0, num_flips=2000))
    module, _ = build_module(cfg, datamodule)
    batch = datamodule.full_batch()
    module.svi(batch)  # creates the guide's parameters
    step = CompiledSVIStep(module.svi, module.estimator, batch, backend="fx")
    inputs = step._flat_inputs(batch, update=False)
    with pyro_static_tracing():
        graph, hoisted, moved = traced_and_hoisted(step._flat_step, *inputs)
    assert moved > 0
    logarithms = {torch.ops.aten.log.default, torch.ops.aten.log1p.default}
    assert largest_output(graph, logarithms) == 5 * 2000
    assert largest_output(hoisted, logarithms) <= 10  # per particle (the Beta guide takes two per particle)
    pyro.set_rng_seed(3)
    before = graph(*inputs)
    pyro.set_rng_seed(3)
    after = hoisted(*inputs)
    for a, b in zip(after, before, strict=True):  # loss, gradients of θ and φ, per-site log-probs
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-3)


def test_mixed_precision_keeps_the_dtype_the_expanded_inputs_promote_to() -> None:
    def product(a, b):  # a float64 scalar expanded beside float32 values promotes to float64
        return a.expand(5) * b.expand(5)

    a, b = torch.tensor(0.1, dtype=torch.float64), torch.tensor([0.3])
    graph, hoisted, _ = traced_and_hoisted(product, a, b)
    assert hoisted(a, b).dtype == graph(a, b).dtype == torch.float64
    torch.testing.assert_close(hoisted(a, b), graph(a, b))
