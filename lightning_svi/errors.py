"""Errors that reach the user as one readable paragraph instead of a traceback."""


class UserInputError(Exception):
    """Bad input from the user: a config value or a data file.

    ``train.py`` prints the message and exits with status 2 before training starts.
    """


class ConfigError(UserInputError):
    """A configuration value that is out of range or of the wrong kind."""


class DataError(UserInputError):
    """A data file that is missing, unreadable or violates the model's table spec."""
