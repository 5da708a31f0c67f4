"""What a logged step reports beyond its ELBO estimate: gradient norms, θ and φ, the evidence.

The eager step leaves these to the loggers, which compute them from the module; the compiled step
computes them inside its graph (``compile.compiled_step``), where they cost a few fused operations
instead of an eager pass each on every logged step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

SMALL_PARAMETER = 16  # elements: a parameter this small is logged one scalar per element


@dataclass
class StepStatistics:
    """Quantities of one step, computed where the step was: ``None`` or empty where they were not.

    ``gradient_norms`` are the L2 norms of each optimizer group's gradients (``theta``, ``phi``),
    before the update; ``parameters`` the constrained values of the small parameters of each side,
    after the update; ``log_evidence`` the closed-form log p_θ(x) of the full data at θ before the
    update, the θ the step's ELBO was estimated at.
    """

    gradient_norms: dict[str, torch.Tensor] = field(default_factory=dict)
    parameters: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # side -> name -> value
    log_evidence: torch.Tensor | None = None


def gradient_norm(gradients: list[torch.Tensor], fused: bool = False) -> torch.Tensor:
    """The L2 norm of several gradients taken together: eagerly one ``_foreach_norm`` kernel; ``fused``
    (inside a compiled graph) as sums of squares, which inductor fuses into the kernels that make the
    gradients, where ``_foreach_norm`` would run as a fallback call of its own."""
    if fused:
        return torch.sqrt(sum((gradient * gradient).sum() for gradient in gradients))
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(gradients)))
