"""Who may read: bearer tokens of named clients from a file, and a token bucket per client.

The tokens file (API_TOKENS_FILE; on Kubernetes a mounted Secret) names the clients, one a
line: `<client>:<sha256 hex of its token>`, blank lines and `# comments` ignored. Only hashes
are stored, so the file (and whoever can read the Secret or a backup of it) holds no usable
token; tokens are random (`new_token`: 256 bits), so an unsalted hash is enough. A presented
token is hashed and compared with every entry in constant time (`hmac.compare_digest`, no early
exit), so timing tells nothing about which entry came close.

The file is checked for a change at most once a second, when a request with a token comes or
/metrics is scraped (its inode, size and mtime; a Kubernetes Secret volume swaps a symlink,
which changes the inode) and re-read: rotating a
token is editing the file, no restart. A file that turns unreadable or malformed keeps the
clients of the last good one, logged and counted, so a bad edit never locks everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from energy_pipeline.api import metrics

log = logging.getLogger("energy_pipeline.api")

CLIENT_PATTERN = r"[A-Za-z0-9_.\-]{1,64}"
_LINE = re.compile(rf"^({CLIENT_PATTERN}):([0-9a-f]{{64}})$")
# Client name of every request while API_AUTH=none (one rate-limit bucket for all of them).
ANONYMOUS = "anonymous"
# How often, at most, the tokens file is looked at for a change.
RELOAD_CHECK_S = 1.0


class TokensFileError(ValueError):
    """The tokens file cannot be read or has bad lines; the message names each problem."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token: 32 bytes, URL-safe (no character a shell or header would mangle)."""
    return secrets.token_urlsafe(32)


def entry(client: str, token: str) -> str:
    """The tokens-file line of `client` with `token`."""
    if not re.fullmatch(CLIENT_PATTERN, client):
        raise TokensFileError(f"client name {client!r} must match {CLIENT_PATTERN}")
    return f"{client}:{hash_token(token)}"


def parse_tokens(text: str, source: str) -> dict[str, bytes]:
    """Client name -> sha256 digest; every bad line is reported at once (by number, never by
    content: a line might hold a token pasted by mistake)."""
    clients: dict[str, bytes] = {}
    errors: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            errors.append(f"line {number} is not <client>:<64 lowercase hex digits of sha256>")
            continue
        name, digest = match.groups()
        if name in clients:
            errors.append(f"line {number}: client {name!r} appears twice")
            continue
        clients[name] = bytes.fromhex(digest)
    if not clients and not errors:
        errors.append("no client in it")
    if errors:
        raise TokensFileError(f"{source}: " + "; ".join(errors))
    return clients


def read_tokens(path: str) -> dict[str, bytes]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TokensFileError(f"{path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TokensFileError(f"{path}: not UTF-8 text") from exc
    return parse_tokens(text, path)


def add_client(path: str, client: str, token: str) -> bool:
    """Write `client`'s entry for `token` into the tokens file at `path`, replacing the client's
    old entry (rotation) and keeping every other line; the file is created (mode 0600) when
    absent and replaced atomically, so a running API never reads half of it.

    True when the client was new.
    """
    line = entry(client, token)
    target = Path(path)
    try:
        lines = target.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    kept = [old for old in lines if old.strip().split(":", 1)[0] != client]
    fd, scratch = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write("\n".join([*kept, line]) + "\n")
        os.chmod(scratch, 0o600)
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return len(kept) == len(lines)


def _signature(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)  # follows the symlink a Secret volume swaps on update
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class Tokens:
    """The clients of one tokens file, kept current as the file changes."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic,
                 check_every: float = RELOAD_CHECK_S) -> None:
        self.path = path
        self._clock = clock
        self._check_every = check_every
        # Raises TokensFileError: a start without a usable file is refused.
        self._signature = _signature_or_error(path)
        self._clients = read_tokens(path)
        self._checked = clock()
        self._last_error = ""
        metrics.CLIENTS.set(len(self._clients))

    @property
    def clients(self) -> tuple[str, ...]:
        return tuple(sorted(self._clients))

    def refresh(self) -> None:
        """Re-read the file if it changed (looked at no more than once per `check_every`)."""
        now = self._clock()
        if now - self._checked < self._check_every:
            return
        self._checked = now
        try:
            signature = _signature_or_error(self.path)
            if signature == self._signature:
                return
            clients = read_tokens(self.path)
        except TokensFileError as exc:
            metrics.TOKEN_RELOADS.labels("error").inc()
            if str(exc) != self._last_error:  # once per distinct problem, not every second
                log.error("tokens file not reloaded; the previous clients stay valid",
                          extra={"error": str(exc), "clients": len(self._clients)})
                self._last_error = str(exc)
            return
        added = sorted(set(clients) - set(self._clients))
        removed = sorted(set(self._clients) - set(clients))
        changed = sorted(n for n in set(clients) & set(self._clients)
                         if clients[n] != self._clients[n])
        self._signature, self._clients, self._last_error = signature, clients, ""
        metrics.TOKEN_RELOADS.labels("ok").inc()
        metrics.CLIENTS.set(len(clients))
        log.info("tokens file reloaded", extra={
            "clients": len(clients), "added": added, "removed": removed, "rotated": changed})

    def identify(self, token: str) -> str | None:
        """The client whose token this is, or None."""
        self.refresh()
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for name, known in self._clients.items():
            if hmac.compare_digest(known, digest):  # no early exit: every entry is compared
                found = name
        return found


def _signature_or_error(path: str) -> tuple[int, int, int, int]:
    try:
        return _signature(path)
    except OSError as exc:
        raise TokensFileError(f"{path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class Refusal:
    """Why a request is not authenticated: `reason` is the metric label."""

    reason: str  # missing, malformed or unknown
    detail: str

    @property
    def challenge(self) -> str:
        # RFC 6750 section 3: no error code when the request had no credentials at all.
        if self.reason == "missing":
            return 'Bearer realm="energy-pipeline"'
        return 'Bearer realm="energy-pipeline", error="invalid_token"'


def bearer_token(headers: Mapping[str, str]) -> str | Refusal:
    """The token of an `Authorization: Bearer <token>` header, or why there is none."""
    value = headers.get("Authorization")
    if value is None:
        return Refusal("missing", "this endpoint needs an Authorization: Bearer <token> header")
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return Refusal("malformed", "the Authorization header must be Bearer <token>")
    return token


class RateLimiter:
    """A token bucket per client: `burst` requests at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)

    def take(self, client: str) -> float:
        """0 when `client` may go ahead now, else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, then = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate


def retry_after(wait: float) -> str:
    """A Retry-After value (whole seconds, at least 1) for a wait of `wait` seconds."""
    return str(max(1, math.ceil(wait)))
