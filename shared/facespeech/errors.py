"""Errors the library raises for bad input: a readable reason, never a traceback for users."""


class InputError(ValueError):
    """The input cannot be used (no face, not media, too short...). The message says why."""
