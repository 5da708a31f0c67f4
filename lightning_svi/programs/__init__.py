"""A user's Pyro model and guide, unchanged, as modules the framework trains (see ``program``)."""
