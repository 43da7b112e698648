"""The CLI's one error type of its own."""


class UsageError(Exception):
    """Bad command-line input; exit 2."""
