"""How good is a run's fit, from its checkpoint: ``python evaluate.py ckpt_path=RUN/checkpoints/last.ckpt``.

Writes ``evaluation.json``, ``posterior.nc`` and ``posterior.png`` into the run folder (or ``output_dir=``), with the
run's own config; ``diagnostics.*`` keys on the command line (e.g. ``diagnostics.num_particles=10000``) change how.
See ``lightning_svi/training/evaluate.py``.
"""

import sys

import hydra
from omegaconf import DictConfig

from lightning_svi.config.launch_time import register_resolver
from lightning_svi.errors import ConfigError

register_resolver()  # before Hydra composes: the run folder is found by ${run_folder_of:...}


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from lightning_svi.training.evaluate import main as evaluate

    evaluate(cfg)


if __name__ == "__main__":
    from lightning_svi.training.evaluate import EXIT_BAD_INPUT, check_evaluate_command_line

    try:
        check_evaluate_command_line(sys.argv[1:])  # before Hydra, which would make a run folder or refuse in pages
    except ConfigError as error:
        print(f"lightning-svi: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    main()
