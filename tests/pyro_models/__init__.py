"""Pyro's own tutorials and examples, their model and guide code copied verbatim (issue 14's acceptance fixtures).

One module per model (``coin``, ``gmm``, ``regression``, ``hmm``, ``vae``), each with

- the tutorial's model and guide code, unchanged (a header comment names the source file and Pyro commit);
- ``make_data(seed) -> dict[str, torch.Tensor]``: a small data set keyed by the model's argument names;
- ``reference_svi(seed, steps, lr, ...) -> dict``: the plain Pyro ``SVI.step`` loop a Pyro user would write.

``reference.py`` runs them all (``python -m tests.pyro_models.reference``); ``make_files.py`` writes each data set
into a folder as the files ``data.path`` takes; ``conf/`` holds the model, guide and data YAML a user would write.
"""

MODELS = ("coin", "gmm", "regression", "hmm", "vae")
