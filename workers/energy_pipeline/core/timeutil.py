"""Parsing of durations ("90s", "5m", "24h", "7d") and times ("now", "now-7d", ISO 8601)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"duration {text!r} must look like 500ms, 90s, 5m, 24h, 7d or 2w")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (UTC if no offset), or "now", "now-7d", "now+1h"."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text.startswith("now"):
        rest = text[3:]
        if not rest:
            return now
        if rest[0] not in "+-":
            raise ValueError(f"time {text!r}: expected now, now-<duration> or now+<duration>")
        delta = parse_duration(rest[1:])
        return now - delta if rest[0] == "-" else now + delta
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def floor_time(ts: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    seconds = step.total_seconds()
    return epoch + timedelta(seconds=((ts - epoch).total_seconds() // seconds) * seconds)
