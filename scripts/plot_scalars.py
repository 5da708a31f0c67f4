"""Plot TensorBoard scalars of a run folder into a PNG, for the README.

Run it from the repository root (it reads the events as the tests do); it needs matplotlib
(``pip install -e .[plot]``):

python -m scripts.plot_scalars RUN_DIR OUT.png trace/log_p trace/log_q train/elbo --smooth 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from tests.conftest import read_scalars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("tags", nargs="+")
    parser.add_argument("--smooth", type=int, default=1, help="moving average over this many logged steps")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    scalars = read_scalars(args.run_dir)
    figure, axes = plt.subplots(figsize=(7, 4))
    for tag in args.tags:
        steps, values = zip(*scalars[tag], strict=True)
        values = torch.tensor(values)
        if args.smooth > 1:
            kernel = torch.ones(1, 1, args.smooth) / args.smooth
            padded = torch.cat([values[:1].repeat(args.smooth - 1), values])
            values = torch.nn.functional.conv1d(padded.view(1, 1, -1), kernel).flatten()
        axes.plot(steps, values.tolist(), label=tag)
    axes.set_xlabel("step")
    axes.set_title(args.title or str(args.run_dir))
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=100)


if __name__ == "__main__":
    main()
