"""lightning-svi: Pyro stochastic variational inference on PyTorch Lightning, configured by Hydra.

The package root imports nothing heavy, so that ``python train.py --help`` and configuration
errors answer before torch, Pyro and Lightning are loaded.
"""

__version__ = "0.1.0"
