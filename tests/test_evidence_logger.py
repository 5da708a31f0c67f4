"""The evidence logger: log p_θ(x) before each logged step where the model has a closed form, and no
work at all on a logged step where it has none (every user's program)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from lightning_svi.logging.evidence import EvidenceLogger


class Model:
    """A model whose closed form is ``value`` (None: it has none), counting how often it is asked."""

    def __init__(self, value: float | None) -> None:
        self.value = value
        self.calls = 0

    def log_evidence(self, data: dict[str, torch.Tensor]) -> torch.Tensor | None:
        self.calls += 1
        return None if self.value is None else torch.tensor(self.value)


def module(model: Model) -> SimpleNamespace:
    engine = SimpleNamespace(reports_evidence=False)
    return SimpleNamespace(model=model, device=torch.device("cpu"), engine=engine, last_statistics=None, last_loss=None)


def logged_steps(model: Model, steps: int = 3) -> list[dict | None]:
    pl_module = module(model)
    logger = EvidenceLogger({"x": torch.ones(3)})
    logger.on_train_start(None, pl_module)
    found = []
    for step in range(1, steps + 1):
        logger.before_step(None, pl_module, step)
        pl_module.last_loss = torch.tensor(10.0)
        found.append(logger.after_update(None, pl_module, step))
    return found


def test_a_closed_form_is_logged_with_its_gap_on_every_logged_step() -> None:
    model = Model(-7.5)
    metrics = logged_steps(model)
    assert [(m["evidence/log_evidence"].item(), m["evidence/gap"].item()) for m in metrics] == [(-7.5, 2.5)] * 3
    assert model.calls == 4  # once at the start, then before each logged step


def test_a_model_without_a_closed_form_is_asked_once_at_the_start() -> None:
    model = Model(None)
    assert logged_steps(model) == [None] * 3
    assert model.calls == 1
