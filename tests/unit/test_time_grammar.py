"""The CLI's one grammar of durations and times: what simulate and the read API took before
the merge (`500ms`, `1.5h`, `now-7d`) and what backtest took (a bare number of hours, where the
option names hours as its unit)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from energy_pipeline.core.timeutil import (
    parse_duration,
    parse_duration_hours,
    parse_iso_time,
    parse_time,
)
from energy_pipeline.forecasting.csvio import read_hourly_csv
from energy_pipeline.forecasting.frame import iso_hour, to_datetime64

pytestmark = pytest.mark.unit

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1.5h", timedelta(minutes=90)),
        ("24h", timedelta(hours=24)),
        ("15d", timedelta(days=15)),
        ("2w", timedelta(weeks=2)),
        (" 7 d ", timedelta(days=7)),
        ("0s", timedelta(0)),
    ],
)
def test_durations_of_both_old_grammars(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "h", "5 minutes", "-1h", "+1h", "1y", "5H", "1e3d", "1.h", ".5h", "1h30m"]
)
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"), [("6", timedelta(hours=6)), ("0.5", timedelta(minutes=30))]
)
def test_a_bare_number_takes_the_unit_the_option_names(text: str, expected: timedelta) -> None:
    assert parse_duration(text, bare_unit="h") == expected
    # Without one it is refused, not guessed: `simulate --interval 5` is not five hours.
    with pytest.raises(ValueError, match="a number and a unit"):
        parse_duration(text)


def test_a_duration_too_long_for_timedelta_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("99999999999d")


@pytest.mark.parametrize(
    ("text", "hours"),
    [("120m", 2), ("3600s", 1), ("1.5d", 36), ("1", 1), ("2w", 336), ("7200000ms", 2)],
)
def test_whole_hours_in_any_unit(text: str, hours: int) -> None:
    assert parse_duration_hours(text) == hours


@pytest.mark.parametrize("text", ["1.5h", "90m", "0", "0.5", "59m", "5 minutes"])
def test_whole_hours_refuse_fractions_and_zero(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_hours(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        (" now ", NOW),
        ("now-7d", NOW - timedelta(days=7)),
        ("now+1h", NOW + timedelta(hours=1)),
        ("now-6h", NOW - timedelta(hours=6)),
        ("now-500ms", NOW - timedelta(milliseconds=500)),
        ("2025-01-01T00:00:00", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01-01 02:00+02:00", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01-01T00:00:00Z", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01-01", datetime(2025, 1, 1, tzinfo=UTC)),
    ],
)
def test_times(text: str, expected: datetime) -> None:
    parsed = parse_time(text, NOW)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["", "now-", "now-6", "now*2", "now 7d", "nowadays", "yesterday"])
def test_what_is_not_a_time(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text, NOW)


def test_now_defaults_to_the_clock() -> None:
    before = datetime.now(UTC)
    assert before <= parse_time("now") <= datetime.now(UTC)


def test_data_times_are_iso_only() -> None:
    assert parse_iso_time("2025-01-01T01:00:00+01:00") == datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_iso_time("now-1d")


def test_forecasting_times_are_naive_utc_seconds() -> None:
    moment = datetime(2000, 6, 5, 2, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=2)))
    converted = to_datetime64(moment)
    assert converted == np.datetime64("2000-06-05T00:00:00")
    assert converted.dtype == np.dtype("datetime64[s]")
    assert iso_hour(converted) == "2000-06-05T00:00:00Z"


def test_a_csv_time_column_in_the_data_grammar(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(
            [["t", "y"], ["2000-01-01T01:00:00+01:00", "1"], ["2000-01-01 01:30", "3"]]
        )
    frame = read_hourly_csv(path, "t", "y")
    assert [iso_hour(t) for t in frame.times] == ["2000-01-01T00:00:00Z", "2000-01-01T01:00:00Z"]
    path.write_text("t,y\nnow,1\n")
    with pytest.raises(ValueError, match=":2:"):
        read_hourly_csv(path, "t", "y")
