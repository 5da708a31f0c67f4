"""Callbacks, one logged concern each: θ and φ, trace log-probs, evidence and gap, gradient
norms, the run summary, and the guard against non-finite values; the TensorBoard layout, the
posterior pictures and the hyperparameters with final metrics."""

from lightning_svi.callbacks.evidence import EvidenceLogger
from lightning_svi.callbacks.final_checkpoint import FinalCheckpoint
from lightning_svi.callbacks.gradients import GradientNormLogger
from lightning_svi.callbacks.hparams import HParamsLogger
from lightning_svi.callbacks.layout import ScalarLayoutWriter
from lightning_svi.callbacks.non_finite import NonFiniteGuard, TrainingDiverged
from lightning_svi.callbacks.parameters import ParameterLogger
from lightning_svi.callbacks.pictures import PosteriorPictureLogger
from lightning_svi.callbacks.progress import StepProgressBar
from lightning_svi.callbacks.rng_state import RngStateCheckpoint
from lightning_svi.callbacks.summary import RunSummary
from lightning_svi.callbacks.traces import TraceLogger

__all__ = [
    "EvidenceLogger",
    "FinalCheckpoint",
    "GradientNormLogger",
    "HParamsLogger",
    "NonFiniteGuard",
    "ParameterLogger",
    "PosteriorPictureLogger",
    "RngStateCheckpoint",
    "RunSummary",
    "ScalarLayoutWriter",
    "StepProgressBar",
    "TraceLogger",
    "TrainingDiverged",
]
