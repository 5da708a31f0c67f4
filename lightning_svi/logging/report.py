"""What a person reads on the console: one line before the slow imports saying what is about to train,
no third-party noise, and a few lines at the end saying what came out, where it is and what to type next.

Pure Python (no torch, no Lightning): ``cli.run`` uses it before anything heavy is imported.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

# Lightning's INFO lines that carry nothing for this user (the device lines are in the first line, the
# fit's end in the report), and Pyro's guess that the estimator makes on every run.
NOISE = {
    "pytorch_lightning.utilities.rank_zero": (
        "GPU available:",
        "TPU available:",
        "HPU available:",
        "💡 Tip:",
        "`Trainer.fit` stopped:",
    ),
    "lightning_fabric.utilities.rank_zero": ("GPU available:", "TPU available:", "💡 Tip:"),
    "pyro.infer.elbo": ("Guessed max_plate_nesting",),
}
# Python warnings raised on every run from inside the libraries, not about anything the user wrote.
NOISY_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)
MAX_THETA_SHOWN = 6


class DropMessages(logging.Filter):
    """Drops the records of one logger whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: Sequence[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_known_noise() -> None:
    """Filter the known uninformative messages at their source: by logger and message, never by level
    alone or by swallowing all warnings. Idempotent (a launcher runs several jobs in one process)."""
    for name, prefixes in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, DropMessages) for existing in logger.filters):
            logger.addFilter(DropMessages(prefixes))
    for message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def _device(trainer: DictConfig) -> str:
    accelerator = trainer.get("accelerator", "auto")
    devices = trainer.get("devices", 1)
    strategy = trainer.get("strategy")
    return f"{accelerator} × {devices}" + (f" ({strategy})" if strategy else "")


def _target_tail(node: Any) -> str:
    target = node.get("_target_", "") if node is not None else ""
    return str(target).rsplit(".", 1)[-1] if target else "?"


def _named(choices: dict[str, str], group: str, node: Any) -> str:
    """The group's option as typed (``guide=normal``); a custom program by its ``_target_``."""
    choice = choices.get(group)
    if choice in (None, "custom"):
        return str(node.get("_target_", choice)) if node is not None else str(choice)
    return choice


def start_line(cfg: DictConfig, choices: dict[str, str], num_rows: int | None, run_dir: Path) -> str:
    """The first console line: model, guide, estimator, data, device, steps and run folder, from the
    config alone (printed before torch, Pyro and Lightning are imported)."""
    data_path = cfg.data.get("path")
    if data_path is not None:
        data = f"{data_path}" + (f" ({num_rows} rows)" if num_rows is not None else "")
    elif cfg.data.get("synthetic"):
        data = "embedded data " + ", ".join(f"{key}={value}" for key, value in cfg.data.synthetic.items())
    else:
        data = "the model's embedded data"
    parts = [
        f"model={_named(choices, 'model', cfg.model)}",
        f"guide={_named(choices, 'guide', cfg.guide)}",
        _target_tail(cfg.elbo),
        data,
        _device(cfg.trainer),
        f"{cfg.trainer.max_steps} steps",
    ]
    return f"lightning-svi: training {', '.join(parts)} -> {run_dir}"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _parameter(value: Any) -> str:
    """A scalar as a number, a short list in full, a long one by its size, a summarised tensor by its shape."""
    if isinstance(value, dict):  # {"shape", "mean", "sd", "min", "max"}
        return f"shape {value.get('shape')}, mean {_number(value.get('mean'))}"
    if isinstance(value, list):
        flat = list(_flatten(value))
        if len(flat) <= 4:
            return "[" + ", ".join(_number(item) for item in flat) + "]"
        return f"{len(flat)} values, {_number(min(flat, default=0))} … {_number(max(flat, default=0))}"
    return _number(value)


def _flatten(value: Any) -> Iterable[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    elif isinstance(value, (int, float)):
        yield value


# Characters that make Hydra's override grammar read a value as more than a plain string.
HYDRA_SPECIAL = set("=,[]{}()'\" :$\\")


def hydra_value(text: str) -> str:
    """``text`` as a value Hydra's override parser reads back unchanged (quoted where it must be)."""
    return f"'{text}'" if HYDRA_SPECIAL & set(text) else text


def shell_word(argument: str) -> str:
    """``argument`` for a POSIX shell: as is where it is safe, in double quotes around Hydra's single quotes."""
    if shlex.quote(argument) == argument:
        return argument
    if "'" in argument and not set(argument) & set('"$`\\!'):
        return f'"{argument}"'
    return shlex.quote(argument)


def _resume_command(run_dir: Path, overrides: Sequence[str], steps: int) -> str:
    """``python train.py`` with the run's own overrides, its last checkpoint and twice its steps."""
    kept = [item for item in overrides if item.split("=", 1)[0].lstrip("+~") not in ("ckpt_path", "trainer.max_steps")]
    checkpoint = hydra_value(str(run_dir / "checkpoints" / "last.ckpt"))
    arguments = [*kept, f"ckpt_path={checkpoint}", f"trainer.max_steps={2 * max(steps, 1)}"]
    return "python train.py " + " ".join(shell_word(argument) for argument in arguments)


def report_lines(summary: dict[str, Any], run_dir: Path, overrides: Sequence[str] = ()) -> list[str]:
    """The end-of-run report, from ``summary.json``'s content (see docs: the run folder contract)."""
    final = summary.get("final") or {}
    diagnostics = summary.get("diagnostics") or {}
    timing = summary.get("timing") or {}
    steps = summary.get("steps", 0)
    rate = timing.get("steps_per_second")
    lines = [
        f"lightning-svi: {summary.get('status', '?')} after {steps} steps"
        + (f" ({rate:.1f} steps/s)" if isinstance(rate, (int, float)) else "")
        + f": model={summary.get('model')}, guide={summary.get('guide')}, {summary.get('elbo')}"
    ]
    theta = summary.get("theta") or {}
    if theta:
        shown = [f"{name}={_parameter(value)}" for name, value in list(theta.items())[:MAX_THETA_SHOWN]]
        more = len(theta) - MAX_THETA_SHOWN
        lines.append("  θ: " + ", ".join(shown) + (f" (+{more} more in summary.json)" if more > 0 else ""))
    else:
        lines.append("  θ: none (the model has no parameters)")
    numbers = [("ELBO", final.get("elbo")), ("log evidence", final.get("log_evidence")), ("gap", final.get("gap"))]
    numbers += [("IW log evidence", final.get("iw_log_evidence")), ("PSIS k̂", diagnostics.get("psis_khat"))]
    known = [f"{label} {_number(value)}" for label, value in numbers if isinstance(value, (int, float))]
    if known:
        lines.append("  " + ", ".join(known))
    if summary.get("error"):
        lines.append(f"  error: {summary['error']}")
    lines += [
        f"  run folder: {run_dir}",
        f"  TensorBoard: tensorboard --logdir {shlex.quote(str(run_dir))}",
        f"  resume or extend: {_resume_command(run_dir, overrides, steps)}",
    ]
    return lines


def print_report(run_dir: Path, overrides: Sequence[str] = (), summary: dict[str, Any] | None = None) -> None:
    """The report of ``run_dir/summary.json`` (or ``summary`` when there is no file) on stderr, and into
    the run's log file (the root logger's file handlers, ``train.log`` under Hydra) without a second
    console copy."""
    path = Path(run_dir) / "summary.json"
    if path.is_file():
        summary = json.loads(path.read_text())
    if summary is None:
        return
    text = "\n".join(report_lines(summary, Path(run_dir), overrides)) + "\n"
    sys.stdout.flush()
    sys.stderr.write(text)
    sys.stderr.flush()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and handler.stream is not None:
            handler.stream.write(text)
            handler.flush()
