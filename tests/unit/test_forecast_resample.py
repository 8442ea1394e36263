"""Hourly resampling, time parsing and CSV input/output of the forecasting package."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from energy_pipeline.core.timeutil import parse_duration_hours, parse_time
from energy_pipeline.forecasting.backtest import BacktestResult
from energy_pipeline.forecasting.csvio import read_hourly_csv, write_forecasts_csv
from energy_pipeline.forecasting.frame import HourlyFrame, iso_hour, to_datetime64
from energy_pipeline.forecasting.resample import hourly_means

pytestmark = pytest.mark.unit


def test_half_hours_are_averaged_and_empty_hours_are_nan() -> None:
    times = np.array(
        ["2000-06-05T00:00", "2000-06-05T00:30", "2000-06-05T01:15", "2000-06-05T03:59"],
        dtype="datetime64[s]",
    )
    grid, means = hourly_means(times, {"y": np.array([10.0, 20.0, 7.0, 1.0])})
    assert [str(t) for t in grid] == [
        "2000-06-05T00",
        "2000-06-05T01",
        "2000-06-05T02",
        "2000-06-05T03",
    ]
    np.testing.assert_array_equal(means["y"], [15.0, 7.0, np.nan, 1.0])


def test_a_missing_reading_does_not_blank_its_hour() -> None:
    times = np.array(["2000-01-01T00:00", "2000-01-01T00:30"], dtype="datetime64[s]")
    _, means = hourly_means(times, {"y": np.array([np.nan, 4.0])})
    assert means["y"][0] == 4.0


def test_unsorted_input_is_fine() -> None:
    times = np.array(["2000-01-01T01:00", "2000-01-01T00:00"], dtype="datetime64[s]")
    grid, means = hourly_means(times, {"y": np.array([2.0, 1.0])})
    assert str(grid[0]) == "2000-01-01T00"
    np.testing.assert_array_equal(means["y"], [1.0, 2.0])


def test_times_with_offsets_become_utc() -> None:
    def parse(text: str) -> np.datetime64:
        return to_datetime64(parse_time(text))

    assert parse("2000-06-05T02:00:00+02:00") == np.datetime64("2000-06-05T00:00:00")
    assert parse("2000-06-05T00:00:00Z") == np.datetime64("2000-06-05T00:00:00")
    assert parse("2000-06-05 00:00") == np.datetime64("2000-06-05T00:00:00")
    assert iso_hour(np.datetime64("2000-06-05T07", "h")) == "2000-06-05T07:00:00Z"


@pytest.mark.parametrize(("text", "hours"), [("24h", 24), ("7d", 168), ("2w", 336), ("6", 6)])
def test_durations(text: str, hours: int) -> None:
    assert parse_duration_hours(text) == hours


@pytest.mark.parametrize("text", ["", "0h", "30m", "1y", "-1h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_hours(text)


def test_frame_refuses_a_grid_with_gaps() -> None:
    times = np.array(["2000-01-01T00", "2000-01-01T02"], dtype="datetime64[h]")
    with pytest.raises(ValueError, match="gap-free"):
        HourlyFrame(times, [1.0, 2.0])


def test_visible_at_hides_target_and_past_but_not_future() -> None:
    times = np.datetime64("2000-01-01T00", "h") + np.arange(6).astype("timedelta64[h]")
    frame = HourlyFrame(
        times, np.arange(6.0), past={"p": np.arange(6.0)}, future={"f": np.arange(6.0)}
    )
    view = frame.visible_at(origin=3, horizon=2)
    assert len(view) == 5
    np.testing.assert_array_equal(view.target, [0, 1, 2, np.nan, np.nan])
    np.testing.assert_array_equal(view.past["p"], [0, 1, 2, np.nan, np.nan])
    np.testing.assert_array_equal(view.future["f"], [0, 1, 2, 3, 4])


def test_read_csv_resamples_and_names_columns(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        "ts,load,temp,fc\n"
        "2000-06-05T00:00:00Z,10,1,5\n"
        "2000-06-05T00:30:00Z,20,3,5\n"
        "2000-06-05T01:00:00Z,,2,\n"
    )
    frame = read_hourly_csv(path, "ts", "load", ["temp"], ["fc"])
    np.testing.assert_array_equal(frame.target, [15.0, np.nan])
    np.testing.assert_array_equal(frame.past["temp"], [2.0, 2.0])
    np.testing.assert_array_equal(frame.future["fc"], [5.0, np.nan])


def test_read_csv_reports_a_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("ts,load\n2000-01-01T00:00,1\n")
    with pytest.raises(ValueError, match="nope"):
        read_hourly_csv(path, "ts", "load", ["nope"])


def test_read_csv_reports_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("ts,load\n2000-01-01T00:00,1\nyesterday,2\n")
    with pytest.raises(ValueError, match=":3:"):
        read_hourly_csv(path, "ts", "load")


def test_forecast_csv_has_the_documented_columns(tmp_path: Path) -> None:
    hours = np.datetime64("2000-01-01T00", "h") + np.arange(2).astype("timedelta64[h]")
    result = BacktestResult(
        model="x",
        origin=np.array([hours[0], hours[0]]),
        target_time=hours,
        horizon=np.array([1, 2]),
        p10=np.array([1.0, 2.0]),
        p50=np.array([1.5, 2.5]),
        p90=np.array([2.0, 3.0]),
        actual=np.array([1.25, math.nan]),
        methods=("model",),
        fit_seconds=0.0,
        predict_seconds=0.0,
    )
    path = tmp_path / "out.csv"
    assert write_forecasts_csv(path, result) == 2
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["origin", "target_time", "horizon", "p10", "p50", "p90", "actual"]
    assert rows[1] == [
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:00:00Z",
        "1",
        "1",
        "1.5",
        "2",
        "1.25",
    ]
    assert rows[2][-1] == ""
