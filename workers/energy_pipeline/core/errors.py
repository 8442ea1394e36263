"""Failures a user can fix: one line on stderr, a non-zero exit status, no stack trace.

Raise `CommandError` where a command meets a configuration, connection or input problem it
cannot get past: say what failed, naming the variable or option and the address tried, and
what to do. `energy-pipeline` (cli.main) prints it as one line; the stack trace appears only
with `--debug` or LOG_LEVEL=DEBUG.
"""

from __future__ import annotations

import errno
import re

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


def port_in_use(variable: str, port: int, exc: OSError | None = None) -> CommandError:
    """A listening port the worker could not bind: which variable chose it and what to do.
    `exc` None: the library did not say why (gRPC), which is nearly always a taken port."""
    if exc is None or exc.errno == errno.EADDRINUSE:
        return CommandError(
            f"{variable} {port} is in use by another process",
            fix=f"set {variable} to a free port",
        )
    return CommandError(
        f"cannot listen on {variable} {port}: {exc.strerror or exc}",
        fix=f"set {variable} to a port this process may bind",
    )


# `scheme://user:password@host`: the password of a URL; `password=...`: of a libpq key=value
# string or a URL's query.
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*):([^@\s]*)@")
_KEY_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every password of a connection URL or DSN in it replaced by ***."""
    return _KEY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))


def one_line(text: object) -> str:
    """`text` on one line (libpq and librdkafka messages span several), passwords redacted."""
    return redact(" ".join(str(text).split()))
