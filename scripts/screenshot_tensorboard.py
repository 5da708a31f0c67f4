"""Take the README's screenshot of TensorBoard: the custom-scalars page of three runs of the default
model, one per guide (full, empty, normal), so that each chart shows which line is which.

    python -m scripts.screenshot_tensorboard               # trains the three runs first (~3 min)
    python -m scripts.screenshot_tensorboard LOGDIR        # finished runs under LOGDIR instead
    python -m scripts.screenshot_tensorboard --out docs/tensorboard.png --size 1400,2600

Needs Debian's ``chromium`` (``apt-get install -y chromium``); not part of the test suite.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.tensorboard_server import tensorboard_server

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


GUIDES = ("full", "empty", "normal")


def train_runs(logdir: Path, guides: tuple[str, ...] = GUIDES) -> None:
    """``python train.py guide=GUIDE`` (the default model, 2,000 steps) for each guide, into
    ``logdir/beta_binomial-GUIDE``: TensorBoard names each run by its folder."""
    for guide in guides:
        run_dir = logdir / f"beta_binomial-{guide}"
        command = [sys.executable, str(REPO / "train.py"), f"guide={guide}", f"hydra.run.dir={run_dir}"]
        subprocess.run([*command, "progress_bar_refresh_rate=0"], check=True, cwd=REPO)


def screenshot(url: str, out: Path, size: str, wait_ms: int) -> None:
    """Load ``url`` in headless Chromium, let it run ``wait_ms`` of virtual time, save a PNG."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed: apt-get install -y chromium")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        command = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={size}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={out.resolve()}",
            url,
        ]
        subprocess.run(command, check=True, timeout=180, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", nargs="?", type=Path, help="a folder of finished runs (default: train three)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "tensorboard.png")
    parser.add_argument("--size", default="1400,2600", help="window width,height in pixels")
    parser.add_argument("--wait-ms", type=int, default=20000, help="virtual time for the page to draw its charts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        logdir = args.logdir
        if logdir is None:
            logdir = Path(scratch)
            train_runs(logdir)
        with tensorboard_server(logdir) as url:
            screenshot(f"{url}/#custom_scalars", args.out, args.size, args.wait_ms)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
