"""`energy-pipeline backtest --weather-forecasts`: forecasts as issued, each origin reading
only the issues made before it (issue #20)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from energy_pipeline.cli import main
from energy_pipeline.forecasting.csvio import read_issued_csv

pytestmark = pytest.mark.unit

START = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 56


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_files(tmp_path: Path) -> tuple[Path, Path]:
    """Load driven by an outdoor temperature that wanders (an AR(1) weather anomaly the lags
    cannot know), and that temperature forecast every 6 h for 48 h with an error that grows
    with the lead time."""
    rng = np.random.default_rng(11)
    hours = DAYS * 24
    anomaly = np.zeros(hours)
    for i in range(1, hours):
        anomaly[i] = 0.97 * anomaly[i - 1] + rng.normal(0, 1.0)
    t = np.arange(hours)
    temperature = 8 + 5 * np.cos(2 * np.pi * (t % 24 - 15) / 24) + anomaly
    load = 100 + 6 * np.abs(temperature - 18) + 20 * ((t % 24 >= 8) & (t % 24 < 18)) \
        + rng.normal(0, 2, hours)
    data = tmp_path / "load.csv"
    with data.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["time", "load"])
        for i in range(hours):
            out.writerow([iso(START + timedelta(hours=i)), f"{load[i]:.3f}"])
    forecasts = tmp_path / "weather.csv"
    with forecasts.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["issued_at", "valid_time", "temperature"])
        for issue in range(0, hours, 6):
            error = 0.0
            for lead in range(1, 49):
                error = 0.9 * error + rng.normal(0, 0.15)
                hour = issue + lead
                if hour < hours:
                    out.writerow([iso(START + timedelta(hours=issue, minutes=20)),
                                  iso(START + timedelta(hours=hour)),
                                  f"{temperature[hour] + error * np.sqrt(lead):.3f}"])
    return data, forecasts


def mae_of(text: str, model: str) -> float:
    lines = text.splitlines()
    column = next(line.split() for line in lines if line.startswith("model")).index("MAE")
    return float(next(line.split() for line in lines if line.split()[:1] == [model])[column])


def test_forecasts_as_issued_improve_the_backtest_and_are_read_before_each_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, forecasts = write_files(tmp_path)
    base = ["backtest", "--csv", str(data), "--time-col", "time", "--target-col", "load",
            "--test-start", iso(START + timedelta(days=DAYS - 14)), "--model", "default"]
    assert main(base) == 0
    without = capsys.readouterr()
    assert main([*base, "--weather-forecasts", str(forecasts)]) == 0
    with_weather = capsys.readouterr()
    assert "temperature as issued" in with_weather.err, with_weather.err
    # The temperature drives the load and only the forecasts carry it ahead of time.
    assert mae_of(with_weather.out, "default") < 0.8 * mae_of(without.out, "default"), (
        without.out, with_weather.out)


def test_bad_forecast_files_are_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, forecasts = write_files(tmp_path)
    base = ["backtest", "--csv", str(data), "--time-col", "time", "--target-col", "load"]
    clash = tmp_path / "clash.csv"
    clash.write_text("issued_at,valid_time,load\n2025-01-01T00:00Z,2025-01-01T01:00Z,1\n")
    assert main([*base, "--weather-forecasts", str(clash)]) == 2
    assert "rename" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("issued,valid_time,temperature\n")
    assert main([*base, "--weather-forecasts", str(bad)]) == 2
    assert "needs columns issued_at" in capsys.readouterr().err
    half = tmp_path / "half.csv"
    half.write_text("issued_at,valid_time,temperature\n2025-01-01T00:00Z,2025-01-01T01:30Z,1\n")
    assert main([*base, "--weather-forecasts", str(half)]) == 2
    assert "half.csv:2: valid_time 2025-01-01T01:30Z is not the start" in capsys.readouterr().err
    twice = tmp_path / "twice.csv"
    twice.write_text("issued_at,valid_time,temperature\n2025-01-01T00:00Z,2025-01-01T01:00Z,1\n"
                     "2025-01-01T00:00Z,2025-01-01T01:00Z,2\n")
    assert main([*base, "--weather-forecasts", str(twice)]) == 2
    assert "twice" in capsys.readouterr().err
    series = read_issued_csv(forecasts)["temperature"]
    assert len(series) == len(set(zip(series.issued_at.tolist(), series.valid_time.tolist(),
                                      strict=True)))
