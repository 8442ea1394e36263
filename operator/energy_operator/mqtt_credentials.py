"""The credentials file of energy-pipeline's HiveMQ extension (hivemq-extension/AuthMain.java).

One user per line, fields separated by white space, `#` starts a comment:

    <user> publish   energy/<site>/#          pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>
    <user> subscribe $share/<group>/energy/#  pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>

A `publish` user (a device) may only publish under its filter; a `subscribe` user (the bridge)
may only hold that subscription. The hash is PBKDF2-HMAC-SHA256 with a 32-byte output over the
password's UTF-8 bytes, what the extension computes at each CONNECT.

Pure functions: `energy-pipeline platform-secrets` writes the file into a Secret with them,
the test harness into a test broker's folder.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

# OWASP's 2023 figure for PBKDF2-HMAC-SHA256; the broker pays it once per CONNECT (about 0.2 s
# of one core here), the hook once per user and run (it checks each hash against its password).
ITERATIONS = 600_000
ACTIVITIES = ("publish", "subscribe")
_USER = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
HEADER = "# user  publish|subscribe  topic-filter  pbkdf2-sha256$iterations$salt$hash\n"


@dataclass(frozen=True)
class Permission:
    """What one user may do: publish under, or subscribe to, exactly one topic filter."""

    user: str
    activity: str
    topic_filter: str


def parse_permission(text: str) -> Permission:
    """`USER:publish:FILTER` or `USER:subscribe:FILTER`; ValueError naming what is wrong."""
    user, _, rest = text.partition(":")
    activity, _, topic_filter = rest.partition(":")
    problems = []
    if not _USER.fullmatch(user):
        problems.append(f"user {user!r} is not lower-case letters, digits and '-'")
    if activity not in ACTIVITIES:
        problems.append(f"{activity!r} is not publish or subscribe")
    if not topic_filter or any(c.isspace() for c in topic_filter):
        problems.append("the topic filter is empty or holds white space")
    elif topic_filter.startswith("$share/") and (
            activity == "publish" or len(topic_filter.split("/", 2)) < 3):
        problems.append("$share/<group>/<filter> is for subscribe users only")
    if problems:
        raise ValueError(f"{text!r}: {'; '.join(problems)} (USER:publish|subscribe:FILTER, "
                         "e.g. building-7:publish:energy/site-007/#)")
    return Permission(user, activity, topic_filter)


def hash_password(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """The extension's hash of `password`, with a fresh 16-byte salt unless given."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations, dklen=32)
    return "$".join(("pbkdf2-sha256", str(iterations), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()))


def matches(hashed: str, password: str) -> bool:
    """Whether `hashed` (the extension's format) is a hash of `password`; False if malformed."""
    try:
        scheme, iterations, salt, expected = hashed.split("$")
        if scheme != "pbkdf2-sha256" or int(iterations) < 1:
            return False
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt),
                                     int(iterations), dklen=32)
        return hmac.compare_digest(digest, base64.b64decode(expected))
    except ValueError:  # binascii.Error is one
        return False


def line(permission: Permission, hashed: str) -> str:
    return f"{permission.user} {permission.activity} {permission.topic_filter} {hashed}"


def parse_file(text: str) -> dict[str, tuple[Permission, str]]:
    """The well-formed lines of a credentials file: user -> (permission, hash). A line the
    extension would skip is left out here too (it is then written afresh)."""
    found: dict[str, tuple[Permission, str]] = {}
    for raw in text.splitlines():
        fields = raw.split()
        if len(fields) != 4 or fields[0].startswith("#") or fields[0] in found:
            continue
        try:
            permission = parse_permission(":".join(fields[:3]))
        except ValueError:
            continue
        found[permission.user] = (permission, fields[3])
    return found


def render_file(lines: list[str]) -> str:
    return HEADER + "".join(f"{text}\n" for text in lines)
