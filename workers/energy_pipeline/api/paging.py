"""Keyset cursors and next-page links (pure).

A cursor is the primary key of the last row of a page, so the next page starts with an
index range scan right after it: cost independent of how deep the client has paged, and
rows inserted meanwhile never shift pages (as OFFSET would). It is opaque to clients
(base64url of a small JSON array tagged with its endpoint), but not secret: it only holds
values the client has already seen.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

_TS_FIELDS = {"readings": (2,), "hourly": (0,), "forecasts": (0,), "sites": (), "models": (0,)}
_LENGTHS = {"readings": 3, "hourly": 1, "forecasts": 1, "sites": 1, "models": 2}


class CursorError(ValueError):
    pass


def iso(ts: datetime) -> str:
    """ISO 8601 in UTC with a Z, at full precision (a cursor must not round)."""
    ts = ts.astimezone(UTC)
    text = ts.isoformat(timespec="microseconds" if ts.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def encode_cursor(kind: str, key: tuple[object, ...]) -> str:
    values = [iso(v) if isinstance(v, datetime) else v for v in key]
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(kind: str, text: str) -> tuple[object, ...]:
    """The key in `text`, with its timestamps as datetimes; CursorError if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise CursorError("not a cursor issued by this API (copy the whole `next` link)") from exc
    if (
        not isinstance(values, list)
        or len(values) != _LENGTHS[kind] + 1
        or values[0] != kind
        or not all(isinstance(v, str) and v for v in values[1:])
    ):
        raise CursorError(f"not a cursor of the {kind} endpoint")
    key: list[object] = list(values[1:])
    for index in _TS_FIELDS[kind]:
        try:
            parsed = datetime.fromisoformat(str(key[index]))
            if parsed.tzinfo is None:
                raise ValueError("naive")
            key[index] = parsed.astimezone(UTC)
        except (ValueError, OverflowError) as exc:
            raise CursorError(f"not a cursor of the {kind} endpoint") from exc
    return tuple(key)


def page_link(path: str, params: Iterable[tuple[str, str]]) -> str:
    """A relative URL (path and query), so it is right behind any Ingress host or scheme."""
    # Commas and colons stay readable: they are legal in a query (RFC 3986 3.4).
    query = urlencode(list(params), quote_via=quote, safe=",:")
    return f"{quote(path)}?{query}" if query else quote(path)
