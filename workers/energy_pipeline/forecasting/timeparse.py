"""ISO-8601 time parsing to UTC `datetime64`, and the duration syntax of the CLI (`24h`, `7d`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_HOURS = {"h": 1.0, "": 1.0, "d": 24.0, "w": 168.0, "m": 1 / 60, "s": 1 / 3600}


def parse_time(text: str) -> np.datetime64:
    """One ISO-8601 time; offsets are converted to UTC and naive times are taken as UTC.

    UTC rather than wall-clock keeps hours unique across daylight-saving changes.
    """
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(moment, "s")


def parse_times(texts: Iterable[str]) -> np.ndarray:
    return np.array([parse_time(t) for t in texts], dtype="datetime64[s]")


def parse_duration_hours(text: str) -> int:
    """`24h`, `7d`, `2w` or a bare number of hours, as whole hours (at least 1)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 24h, 7d, 2w)")
    hours = int(match.group(1)) * _UNIT_HOURS[match.group(2)]
    if hours < 1 or hours != int(hours):
        raise ValueError(f"duration {text!r} must be a whole number of hours, at least 1")
    return int(hours)


def iso_hour(time: np.datetime64) -> str:
    """`2000-06-05T13:00:00Z` for the hour starting at `time`."""
    return str(np.datetime64(time, "s")) + "Z"
