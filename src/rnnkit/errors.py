"""User-facing errors. The command line prints these as one line and exits with code 2."""


class UsageError(Exception):
    """A mistake in what the user gave us (a path, a flag, a file's contents)."""


class DataError(UsageError):
    """A data file that cannot be read as asked; the message names the file and line."""
