"""The one grammar of durations and times, for every command and the read API.

Durations: a number and a unit, ms, s, m, h, d or w ("500ms", "90s", "1.5d", "2w"). A bare
number is accepted only where the option names its unit: backtest's --every and
--retrain-every are hours ("6"), as they have always been read; elsewhere ("simulate
--interval 5") it is refused rather than guessed. Times: ISO 8601 (UTC when it
has no offset), or "now", "now-<duration>", "now+<duration>". Results are `timedelta` and
UTC-aware `datetime`; forecasting converts to numpy at its own edge (`forecasting.frame`), so
that this module stays free of numpy.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {
    "ms": "milliseconds",
    "s": "seconds",
    "m": "minutes",
    "h": "hours",
    "d": "days",
    "w": "weeks",
}
_HOUR = timedelta(hours=1)


def parse_duration(text: str, bare_unit: str | None = None) -> timedelta:
    """A duration; `bare_unit` (one of the units) is what a number without a unit means, and
    without it such a number is refused."""
    match = _DURATION.match(text)
    unit = match.group(2) or bare_unit if match else None
    if not match or unit is None:
        raise ValueError(
            f"not a duration: {text!r} (use a number and a unit, e.g. 500ms, 90s, 5m, 24h, 7d "
            "or 2w)"
        )
    try:
        return timedelta(**{_UNITS[unit]: float(match.group(1))})
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long") from None


def parse_duration_hours(text: str) -> int:
    """A duration that must be a whole number of hours, at least 1 (backtest's steps); a bare
    number is hours."""
    hours, rest = divmod(parse_duration(text, bare_unit="h"), _HOUR)
    if hours < 1 or rest:
        raise ValueError(f"duration {text!r} must be a whole number of hours, at least 1")
    return hours


def parse_iso_time(text: str) -> datetime:
    """ISO 8601 only, as data files hold it (a file must not mean something else tomorrow).

    UTC if there is no offset; UTC rather than wall-clock keeps hours unique across
    daylight-saving changes.
    """
    parsed = datetime.fromisoformat(text.strip())
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (UTC if no offset), or "now", "now-7d", "now+1h"."""
    text = text.strip()
    if not text.startswith("now"):
        return parse_iso_time(text)
    now = now or datetime.now(UTC)
    rest = text[3:]
    if not rest:
        return now
    if rest[0] not in "+-":
        raise ValueError(f"time {text!r}: expected now, now-<duration> or now+<duration>")
    delta = parse_duration(rest[1:])
    return now - delta if rest[0] == "-" else now + delta


def floor_time(ts: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    seconds = step.total_seconds()
    return epoch + timedelta(seconds=((ts - epoch).total_seconds() // seconds) * seconds)
