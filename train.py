"""Train a Pyro model with SVI: ``python train.py model=beta_binomial guide=full``.

Hydra composes the config from ``conf/``; everything else lives in the ``lightning_svi`` package.
"""

import sys

import hydra
from omegaconf import DictConfig

from lightning_svi.config.command_line import refuse_bad_command_line
from lightning_svi.config.launch_time import register_resolver
from lightning_svi.config.single_composition import composed_once

register_resolver()  # before Hydra composes: the run and sweep folder names use ${launch_time:...}


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from lightning_svi.cli import run

    return run(cfg)


if __name__ == "__main__":
    refuse_bad_command_line(sys.argv[1:])  # what Hydra would refuse with a traceback before lightning-svi runs
    with composed_once(sys.argv[1:]):  # Hydra would compose the config twice
        main()
