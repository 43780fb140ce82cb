"""Error types the CLI reports as one clear line (no traceback)."""


class UserError(Exception):
    """A problem the user can fix: a missing or corrupt file, a wrong shape, a bad argument.

    The message must name the file (or argument) and the problem.
    """
