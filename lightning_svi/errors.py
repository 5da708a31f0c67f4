"""Errors that reach the user as one readable paragraph instead of a traceback."""


class UserInputError(Exception):
    """Bad input from the user: a config value or a data file.

    ``train.py`` prints the message and exits with status 2 before training starts.
    """


class ConfigError(UserInputError):
    """A configuration value that is out of range or of the wrong kind."""


class DataError(UserInputError):
    """A data file that is missing, unreadable or violates the model's table spec."""


def one_line(error: BaseException) -> str:
    """``Type: first line of its message``: how an error from library or user code is quoted in a
    one-line refusal or a ``summary.json`` entry."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
