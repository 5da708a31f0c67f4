"""lightning-svi: Pyro stochastic variational inference on PyTorch Lightning, configured by Hydra.

The package root imports nothing heavy, so that ``python train.py --help`` and configuration
errors answer before torch, Pyro and Lightning are loaded.

It sets one thing, before numpy is loaded and only where nobody has chosen: numpy's OpenBLAS runs
one thread (``OPENBLAS_NUM_THREADS``). Its thread pool and torch's OpenMP pool contend once torch is
loaded, and a numpy dot product of 25,000 numbers (TensorBoard's histogram of a VAE weight
matrix) took 8 ms instead of 5 µs on a 2-core machine (docs/performance.md gives the command that
prints it). Torch's own BLAS (MKL) is not OpenBLAS.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
