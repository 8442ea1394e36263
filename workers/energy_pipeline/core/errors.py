"""Failures a user can fix: one line on stderr, a non-zero exit status, no stack trace.

Raise `CommandError` where a command meets a configuration, connection or input problem it
cannot get past: say what failed, naming the variable or option and the address tried, and
what to do. `energy-pipeline` (cli.main) prints it as one line; the stack trace appears only
with `--debug` or LOG_LEVEL=DEBUG.
"""

from __future__ import annotations

# Exit statuses: 2 for a wrong option or variable (as argparse uses), 1 for everything else.
USAGE = 2
FAILURE = 1


class CommandError(Exception):
    """A failure the user can fix. `str()` is the one line printed."""

    def __init__(self, message: str, *, fix: str = "", status: int = FAILURE) -> None:
        self.message = message
        self.fix = fix
        self.status = status
        super().__init__(f"{message}; {fix}" if fix else message)
