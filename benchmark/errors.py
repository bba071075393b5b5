"""The exception type for bad user input (reported as one line, exit code 2), and the job's
record of the signals it received (light: a signal handler imports nothing heavy)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input a user can fix: unknown name, value out of range, missing file or resource.

    The message must be one line that says what is wrong and which config key or file to set.
    ``benchmark.run`` prints it without a traceback and exits with code 2.
    """


class JobTerminated(BaseException):
    """SIGTERM (what Slurm sends at a time-out) turned into an exception, so the job's record
    says so. A BaseException: ``except Exception`` blocks in libraries do not swallow it."""


SIGNALS_SEEN: list[str] = []
"""Signals (SIGINT, SIGTERM) this process received during the running job. Python can lose the
exception a signal handler raises (one raised while a ``__del__`` or a weakref callback runs is
printed as "Exception ignored" and dropped), after which the job would run on and write ``ok``;
the job checks this list before it does."""


def note_signal(name: str) -> None:
    SIGNALS_SEEN.append(name)
