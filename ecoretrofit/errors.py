"""Errors every layer may raise; the CLI prints them as one line, not a traceback."""


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""
