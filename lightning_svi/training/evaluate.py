"""``evaluate.py``: how good is the fit of a finished or interrupted run, from its checkpoint, without training.

``python evaluate.py ckpt_path=RUN/checkpoints/last.ckpt diagnostics.num_particles=10000`` rebuilds the model,
guide and data from the run's own config (``RUN/.hydra/config.yaml``) as ``train()`` builds them, loads θ and φ
from the checkpoint's ``state_dict`` (refused, as a resume is, when it was written for another model, guide or
data), and writes into the run folder (or ``output_dir=``):

* ``evaluation.json``: the checkpoint and its step, θ, φ, ``final.iw_*`` (and the closed-form ``log_evidence``
  where the model has one), the ``diagnostics`` section and, with ``diagnostics.reference=nuts``, ``reference``,
  in the keys ``summary.json`` uses. ``summary.json`` stays the training run's record: an evaluation with another
  K never overwrites the numbers the run computed at its end.
* ``posterior.nc`` (ArviZ, with the ``arviz`` extra), ``posterior.png`` (the picture TensorBoard shows as
  ``posterior/picture``) and, with the NUTS reference, ``reference.png``.

Only ``ckpt_path``, ``output_dir`` and ``diagnostics.*`` keys are taken from the command line; its checks, and the
run folder's, run before torch is imported. Bad input is one line ``lightning-svi: error: ...`` and exit status 2,
as with ``train.py``; what cannot be computed says why in ``evaluation.json``, as in ``summary.json``.
"""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.utils import get_args_parser
from omegaconf import DictConfig, OmegaConf

from lightning_svi.config.checks import check_diagnostics, read_data_file
from lightning_svi.config.command_line import check_command_line, require_creatable_folder
from lightning_svi.config.launch_time import run_folder_of
from lightning_svi.errors import ConfigError, UserInputError, one_line

EXIT_BAD_INPUT = 2
EVALUATION_FILE = "evaluation.json"
POSTERIOR_FILE = "posterior.nc"
PICTURE_FILE = "posterior.png"
REFERENCE_FILE = "reference.png"
# diagnostics.* keys that apply to an evaluation (every_n_steps is about training)
DIAGNOSTICS_KEYS = ("num_particles", "max_chunk", "reference", "reference_warmup", "reference_draws")


def check_evaluate_command_line(argv: Sequence[str]) -> None:
    """Raise ``ConfigError`` for what ``evaluate.py`` cannot use: an override Hydra could not parse, a key other
    than ``ckpt_path``, ``output_dir``, ``diagnostics.KEY`` (or Hydra's own), no ``ckpt_path``, a checkpoint that
    is not a file torch wrote, one outside a run folder, or an ``output_dir`` that cannot be created."""
    check_command_line(argv)
    try:
        arguments, _ = get_args_parser().parse_known_args(list(argv))
    except SystemExit:  # a malformed Hydra flag: Hydra's own parser says what is wrong with it
        return
    if arguments.help or arguments.hydra_help or arguments.cfg or arguments.info:
        return
    given: dict[str, str] = {}
    for text in arguments.overrides:
        key, _, value = text.partition("=")
        key = key.lstrip("+~")
        name = key.removeprefix("diagnostics.")
        if not (key in ("ckpt_path", "output_dir") or key.startswith("hydra") or name in DIAGNOSTICS_KEYS):
            raise ConfigError(
                f"{text}: evaluate.py takes ckpt_path=, output_dir= and diagnostics.KEY= with KEY one of "
                f"{', '.join(DIAGNOSTICS_KEYS)}; the model, guide, data and the rest are the run's own "
                "(RUN/.hydra/config.yaml)."
            )
        given[key] = value.strip("'\"")
    if not given.get("ckpt_path") or given["ckpt_path"] == "null":
        raise ConfigError(
            "ckpt_path: missing; evaluate.py evaluates a run from its checkpoint: "
            "python evaluate.py ckpt_path=RUN/checkpoints/last.ckpt"
        )
    run_folder(given["ckpt_path"])
    if given.get("output_dir") not in (None, "", "null"):
        require_creatable_folder("output_dir", given["output_dir"])


def run_folder(ckpt_path: str) -> Path:
    """The run folder that wrote ``ckpt_path`` (``RUN`` of ``RUN/checkpoints/NAME.ckpt`` holding
    ``RUN/.hydra/config.yaml``); ``ConfigError`` for a missing or non-torch file, or one outside a run folder."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path}: no such checkpoint file; pass RUN/checkpoints/last.ckpt of a finished or "
            "interrupted run."
        )
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its content is checked when loaded
        raise ConfigError(
            f"ckpt_path={ckpt_path}: not a readable checkpoint (not the zip archive torch.save writes). "
            "Pass a checkpoints/last.ckpt written by lightning-svi."
        )
    run_dir = Path(run_folder_of(str(path), ""))
    if run_dir == Path("") or not (run_dir / ".hydra" / "config.yaml").is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path}: no run config beside it (RUN/.hydra/config.yaml for RUN/checkpoints/last.ckpt); "
            "evaluate.py rebuilds the model, guide and data from the config of the run that wrote the checkpoint."
        )
    return run_dir


def run_config(run_dir: Path, diagnostics: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The run's own config, with ``diagnostics`` keys given on the command line (``overrides``) on top of the run's
    (or of ``diagnostics``, the defaults, for a run from before the ``diagnostics`` block); checked."""
    path = run_dir / ".hydra" / "config.yaml"
    try:
        cfg = OmegaConf.load(path)
    except Exception as error:  # a damaged or hand-edited file
        raise ConfigError(f"{path}: not a readable run config ({one_line(error)}).") from None
    merged = OmegaConf.merge(diagnostics, cfg.get("diagnostics") or {})
    for text in overrides:
        key = text.partition("=")[0].lstrip("+~")
        if key.startswith("diagnostics."):
            name = key.removeprefix("diagnostics.")
            merged[name] = diagnostics[name]
    cfg.diagnostics = merged
    check_diagnostics(cfg.diagnostics)
    return cfg


def main(cfg: DictConfig) -> dict[str, Any]:
    """What ``evaluate.py`` runs once Hydra has composed ``cfg``: evaluate, print what was written."""
    from hydra.core.hydra_config import HydraConfig

    if os.getcwd() not in sys.path:  # as train.py: a user's model module in the current folder can be imported
        sys.path.insert(0, os.getcwd())
    overrides = list(HydraConfig.get().overrides.task)
    try:
        run_dir = run_folder(str(cfg.ckpt_path))
        run_cfg = run_config(run_dir, cfg.diagnostics, overrides)
        table = read_data_file(run_cfg)
        from lightning_svi.training.components import check_components

        check_components(run_cfg)  # imports torch and Pyro: after every torch-free check
        output_dir = Path(cfg.output_dir) if cfg.get("output_dir") else run_dir
        evaluation = evaluate(run_cfg, str(cfg.ckpt_path), output_dir, table)
    except UserInputError as error:
        print(f"lightning-svi: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    print("\n".join(evaluation_lines(evaluation, output_dir)), file=sys.stderr)
    return evaluation


def evaluation_lines(evaluation: dict[str, Any], output_dir: Path) -> list[str]:
    """What the console says after an evaluation: the numbers in words, and what was written where."""
    final, diagnostics = evaluation["final"], evaluation["diagnostics"]
    lines = [f"lightning-svi: evaluated {evaluation['checkpoint']} (step {evaluation['step']})"]
    if final.get("iw_log_evidence") is not None:
        khat = diagnostics.get("psis_khat")
        lines.append(
            f"  IW log evidence {final['iw_log_evidence']:.2f} ± {final['iw_log_evidence_se']:.2g} "
            f"({diagnostics['num_particles']} draws), IW gap {final['iw_gap']:.2f} ± {final['iw_gap_se']:.2g}, "
            f"PSIS k̂ {'inf' if khat is None else f'{khat:.2f}'} ({diagnostics['reading']}), "
            f"ESS {diagnostics['ess']:.0f}"
        )
    for key in ("skipped", "error", "note"):
        if diagnostics.get(key):
            lines.append(f"  {key}: {diagnostics[key]}")
    lines.append(f"  wrote {', '.join(evaluation['files'])} into {output_dir}")
    lines += [f"  not written: {reason}" for reason in evaluation["not_written"]]
    return lines


def evaluate(
    cfg: DictConfig, ckpt_path: str, output_dir: Path, table: dict[str, list[float]] | None = None
) -> dict[str, Any]:
    """Evaluate the guide of ``ckpt_path`` (a checkpoint of the run whose config is ``cfg``) and write
    ``evaluation.json``, ``posterior.nc`` and the pictures into ``output_dir``; returns the evaluation."""
    from lightning_svi.logging.report import quiet_known_noise
    from lightning_svi.training.run import pyro_settings_restored

    quiet_known_noise()
    with pyro_settings_restored():
        return _evaluate(cfg, ckpt_path, Path(output_dir), table)


def _evaluate(
    cfg: DictConfig, ckpt_path: str, output_dir: Path, table: dict[str, list[float]] | None
) -> dict[str, Any]:
    import torch

    from lightning_svi.analysis.importance import importance_estimate
    from lightning_svi.core.programs.build import guide_name
    from lightning_svi.logging.diagnostics import estimate_sections
    from lightning_svi.logging.evidence import log_evidence
    from lightning_svi.logging.summary import parameter_json, to_json_tree, write_json_atomically
    from lightning_svi.training.run import build_datamodule, build_module, reset_global_state

    reset_global_state(cfg.seed)
    datamodule = build_datamodule(cfg, table)
    module, model_name = build_module(cfg, datamodule)
    full_data = datamodule.full_batch()
    checkpoint = load_parameters(module, full_data, ckpt_path, cfg.get("validate_first_step", True))
    device = evaluation_device(cfg.trainer)
    module.to(device)
    data = {name: tensor.to(device) for name, tensor in full_data.items()}
    options = cfg.diagnostics
    model, guide = module.model, module.guide

    def estimate() -> Any:
        with torch.no_grad():
            return importance_estimate(model, guide, data, options.num_particles, options.max_chunk)

    estimated, final, diagnostics = estimate_sections(estimate)
    evidence = log_evidence(module, data)
    final["log_evidence"] = None if evidence is None else float(evidence)
    evaluation: dict[str, Any] = {
        "checkpoint": str(ckpt_path),
        "step": checkpoint.get("global_step"),
        "model": model_name,
        "guide": guide_name(cfg.guide),
        "theta": {name: parameter_json(value) for name, value in module.sides.theta_values().items()},
        "phi": {name: parameter_json(value) for name, value in module.sides.phi_values().items()},
        "final": final,
        "diagnostics": diagnostics,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    files, not_written = [EVALUATION_FILE], []
    if options.reference == "nuts":
        evaluation["reference"] = _nuts(model, guide, data, options, output_dir / REFERENCE_FILE)
        if "error" not in evaluation["reference"]:
            files.append(REFERENCE_FILE)
    for name, write in (
        (POSTERIOR_FILE, lambda path: _posterior_netcdf(model, guide, data, path, estimated)),
        (PICTURE_FILE, lambda path: _picture(model, guide, data, path)),
    ):
        try:
            reason = write(output_dir / name)
        except Exception as error:  # as at the end of a run: what cannot be written says why
            reason = f"{name}: {one_line(error)}"
        if reason is None:
            files.append(name)
        else:
            not_written.append(reason)
    evaluation["files"], evaluation["not_written"] = files, not_written
    write_json_atomically(output_dir / EVALUATION_FILE, to_json_tree(evaluation))
    return evaluation


def load_parameters(module: Any, full_data: dict, ckpt_path: str, validate: bool) -> dict[str, Any]:
    """Create the module's parameters (the warm-up a training run starts with), then load θ and φ from the
    checkpoint: refused (``CheckpointError``) when it is damaged, or was written for another model, guide or data."""
    from lightning_svi.checkpointing.atomic_io import AtomicCheckpointIO, CheckpointError
    from lightning_svi.checkpointing.identity import IDENTITY_KEY, check_identity, checkpoint_identity, data_fingerprint
    from lightning_svi.core.programs.warmup import warm_up

    checkpoint = AtomicCheckpointIO().load_checkpoint(ckpt_path)
    module.sides = warm_up(module.svi, module.estimator, full_data, validate)
    current = checkpoint_identity(module.model, module.guide, module.state_dict())
    check_identity(checkpoint.get(IDENTITY_KEY), current, ckpt_path)
    trained_on = _saved_data_fingerprint(checkpoint)
    if trained_on is not None and trained_on != data_fingerprint(full_data):
        raise CheckpointError(
            f"ckpt_path={ckpt_path}: refused; it was trained on other data (data fingerprint {trained_on}; the data "
            "the run's config gives now differs: its data file changed?). Evaluate with the data that trained it."
        )
    module.load_state_dict(checkpoint["state_dict"])
    return checkpoint


def _saved_data_fingerprint(checkpoint: dict[str, Any]) -> str | None:
    """The data fingerprint ``TrainingIdentity`` saved, if any: among Lightning's callback states, or nested in the
    state of the ``CallbackGroup`` that held lightning-svi's callbacks in earlier checkpoints."""
    from lightning_svi.checkpointing.identity import TrainingIdentity

    states = checkpoint.get("callbacks") or {}
    for holder in (states, *states.values()):
        identity = holder.get(TrainingIdentity.__qualname__) if isinstance(holder, dict) else None
        if isinstance(identity, dict) and "data" in identity:
            return identity["data"]
    return None


def evaluation_device(trainer: DictConfig) -> Any:
    """The first GPU where the run trained on one (or ``auto``) and this machine has one, else the CPU."""
    import torch

    accelerator = str(trainer.get("accelerator") or "cpu")
    on_gpu = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return torch.device("cuda", 0) if on_gpu else torch.device("cpu")


def _nuts(model: Any, guide: Any, data: dict, options: DictConfig, picture: Path) -> dict[str, Any]:
    """``summary.json``'s ``reference`` section, with its picture written to ``picture``."""
    from lightning_svi.analysis.reference import nuts_reference, reference_figure
    from lightning_svi.core.rng import untouched_rng

    try:
        with untouched_rng(next(iter(data.values())).device):
            reference = nuts_reference(model, guide, data, options.reference_warmup, options.reference_draws)
        reference_figure(reference).savefig(picture)
        return reference
    except Exception as error:  # e.g. a model too large for NUTS
        return {"method": "nuts", "error": one_line(error)}


def _posterior_netcdf(model: Any, guide: Any, data: dict, path: Path, estimate: Any) -> str | None:
    """Write ``posterior.nc`` with the estimate's log weights; the reason where it is not written."""
    from lightning_svi.analysis.arviz_export import netcdf_available, write_posterior_netcdf

    if not netcdf_available():
        return f"{path.name}: ArviZ's file needs xarray and h5netcdf (pip install -e .[arviz])"
    write_posterior_netcdf(model, guide, data, path, estimate.log_weights if estimate is not None else None)
    return None


def _picture(model: Any, guide: Any, data: dict, path: Path) -> str | None:
    """Write the posterior picture as a PNG; the reason where the model draws none."""
    import torch

    from lightning_svi.logging.pictures import posterior_figure

    with torch.no_grad():
        figure = posterior_figure(model, guide, data)
    if figure is None:
        return f"{path.name}: the model draws no posterior picture (too many latents)"
    figure.savefig(path)
    return None
