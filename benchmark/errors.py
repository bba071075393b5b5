"""The one exception type for bad user input (reported as one line, exit code 2)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input a user can fix: unknown name, value out of range, missing file or resource.

    The message must be one line that says what is wrong and which config key or file to set.
    ``benchmark.run`` prints it without a traceback and exits with code 2.
    """
