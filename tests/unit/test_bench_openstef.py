"""The OpenSTEF peer bench (energy_harness.bench.{datasets,openstef_runner,openstef_peer}):
the eemeter samples read as hourly °C, the runner's protocol equal to our backtest's, and
a runner CSV scored on exactly our points. OpenSTEF itself is not needed here."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from energy_harness.bench import openstef_runner as runner
from energy_harness.bench.datasets import (
    EEMETER_VERSION,
    SAMPLES_DIR,
    align_hourly,
    eemeter_csv,
    parse_meter,
    parse_temperature,
)
from energy_harness.bench.openstef_peer import (
    ensure_openstef_venv,
    find_python312,
    first_origin_index,
    read_forecasts_csv,
    score_peer,
    write_runner_csv,
)
from energy_harness.synthetic import synthetic_building
from energy_pipeline.forecasting.backtest import BacktestConfig, BacktestResult, run_backtest
from energy_pipeline.forecasting.csvio import FORECAST_COLUMNS, read_hourly_csv
from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.forecasting.models import build_model

pytestmark = pytest.mark.unit


def gz(text: str) -> bytes:
    return gzip.compress(text.encode())


# --- eemeter samples -------------------------------------------------------------------


def test_fahrenheit_becomes_celsius_and_offsets_become_utc() -> None:
    times, values = parse_temperature(
        gz("dt,tempF\n2015-11-22T00:00:00-06:00,32\n2015-11-22T01:00:00-06:00,212\n")
    )
    assert times.tolist() == [
        np.datetime64("2015-11-22T06:00:00"),
        np.datetime64("2015-11-22T07:00:00"),
    ]
    np.testing.assert_allclose(values, [0.0, 100.0])


def test_celsius_with_an_index_column_and_naive_times_read_as_utc() -> None:
    times, values = parse_temperature(
        gz(",dt,tempC\n0,2020-04-01 01:00:00,5.5\n1,2020-04-01 02:00:00,\n")
    )
    assert str(times[0]) == "2020-04-01T01:00:00"
    assert values[0] == 5.5 and np.isnan(values[1])


def test_a_temperature_file_without_a_temperature_column_is_refused() -> None:
    with pytest.raises(ValueError, match="tempF or tempC"):
        parse_temperature(gz("dt,wind\n2020-01-01T00:00:00,3\n"))


def test_half_hours_average_into_hours_and_gaps_stay_nan_and_counted() -> None:
    meter = parse_meter(
        gz(
            "start,value\n"
            "2012-10-12 00:00:00,1.0\n2012-10-12 00:30:00,3.0\n"  # hour 0: mean 2
            "2012-10-12 01:00:00,nan\n"  # hour 1: no value
            # hour 2 missing altogether
            "2012-10-12 03:00:00,0\n2012-10-12 03:00:00,4\n"  # a duplicate time: mean 2
            "2012-10-12 04:00:00,5\n"
        )
    )
    temperature = parse_temperature(
        gz("dt,tempF\n" + "".join(f"2012-10-12T0{h}:00:00Z,50\n" for h in range(1, 6)))
    )
    hours, load, temp, quality = align_hourly(meter, temperature)
    # Only the hours both series span: 01:00 .. 04:00.
    assert [str(h) for h in hours] == [f"2012-10-12T0{h}" for h in range(1, 5)]
    np.testing.assert_allclose(load, [np.nan, np.nan, 2.0, 5.0])
    np.testing.assert_allclose(temp, 10.0)
    assert quality["load_missing_hours"] == 2
    assert quality["load_longest_gap_hours"] == 2
    assert quality["meter_duplicate_times"] == 1
    assert quality["meter_sub_hourly"] is True
    assert quality["hours_outside_common_span"] == 2  # meter 00:00 and temperature 05:00


def test_series_that_never_overlap_are_refused() -> None:
    meter = parse_meter(gz("start,value\n2015-01-01T00:00:00Z,1\n"))
    temperature = parse_temperature(gz("dt,tempC\n2016-01-01T00:00:00Z,1\n"))
    with pytest.raises(ValueError, match="do not overlap"):
        align_hourly(meter, temperature)


def fake_wheel(cache: Path) -> Path:
    """An eemeter-shaped wheel: metadata.json naming a meter file and its temperature."""
    folder = cache / "wheels"
    folder.mkdir(parents=True)
    wheel = folder / f"eemeter-{EEMETER_VERSION}-py3-none-any.whl"
    meter = "start,value\n" + "".join(
        f"2015-11-22T{h:02d}:00:00-06:00,{'' if h == 3 else h}\n" for h in range(6)
    )
    temperature = "dt,tempF\n" + "".join(
        f"2015-11-22T{h:02d}:00:00-06:00,{50 + 9 * h}\n" for h in range(6)
    )
    meta = {
        "il-electricity-x-hourly": {
            "meter_data_filename": "m.csv.gz",
            "temperature_filename": "t.csv.gz",
            "freq": "hourly",
            "interpretation": "electricity",
            "unit": "kWh",
        }
    }
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(SAMPLES_DIR + "metadata.json", json.dumps(meta))
        z.writestr(SAMPLES_DIR + "m.csv.gz", gz(meter))
        z.writestr(SAMPLES_DIR + "t.csv.gz", gz(temperature))
    return wheel


def test_eemeter_csv_is_what_our_backtest_reads(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path)
    path, meta = eemeter_csv("il-electricity-x-hourly", cache=tmp_path)
    frame = read_hourly_csv(path, "time", "load", future_covariates=["temperature"])
    assert str(frame.times[0]) == "2015-11-22T06" and len(frame) == 6
    np.testing.assert_allclose(frame.target, [0, 1, 2, np.nan, 4, 5])
    np.testing.assert_allclose(
        frame.future["temperature"],
        [10.0 + 5.0 * h for h in range(6)],  # (50 + 9h - 32) * 5/9
    )
    assert meta["wheel"]["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert meta["wheel"]["version"] == EEMETER_VERSION
    assert meta["load_missing_hours"] == 1 and meta["from"] == "2015-11-22T06:00:00Z"
    assert meta["site"]["country"] == "US"
    assert "simulated" in meta["provenance"]


# --- the runner's protocol is ours -----------------------------------------------------


def our_plan(frame: HourlyFrame, config: BacktestConfig) -> list[tuple[int, bool]]:
    seen: list[tuple[int, bool]] = []

    def progress(_name: str, _done: int, _total: int, origin: np.datetime64, refit: bool) -> None:
        seen.append((frame.index_of(origin), refit))

    run_backtest(frame, "naive168", lambda: build_model("naive168"), config, progress)
    return seen


@pytest.mark.parametrize(
    ("hours", "first", "every", "horizon", "retrain"),
    [(24 * 30, 24 * 20, 24, 24, 168), (24 * 30, 24 * 20 + 5, 24, 24, 72), (500, 400, 7, 12, 10)],
)
def test_runner_origins_and_refits_are_our_backtests(
    hours: int, first: int, every: int, horizon: int, retrain: int
) -> None:
    frame = synthetic_building(hours)
    config = BacktestConfig(horizon=horizon, every=every, retrain_every=retrain, test_start=first)
    protocol = runner.Protocol(horizon, every, retrain)
    assert list(runner.plan(len(frame), first, protocol)) == our_plan(frame, config)


def test_runner_trains_strictly_before_the_origin() -> None:
    assert runner.training_rows(1000, runner.Protocol(train_hours=240)) == (760, 1000)
    assert runner.training_rows(100, runner.Protocol(train_hours=240)) == (0, 100)
    assert runner.training_rows(1000, runner.Protocol(train_hours=0)) == (0, 1000)


def test_runner_rows_carry_our_target_time_convention(tmp_path: Path) -> None:
    frame = synthetic_building(24 * 10)
    config = BacktestConfig(horizon=24, every=24, retrain_every=168, test_start=24 * 8)
    ours = run_backtest(frame, "naive168", lambda: build_model("naive168"), config)
    origin = runner.parse_utc("2025-01-14T00:00:00Z")
    rows = runner.forecast_rows(origin, 24, {q: [1.0] * 24 for q in runner.QUANTILES}, [2.0] * 24)
    assert [r[1] for r in rows] == [f"{t}:00:00Z" for t in ours.target_time[:24].astype(str)]
    assert [r[2] for r in rows] == ours.horizon[:24].tolist()


def test_first_origin_is_a_midnight_and_leaves_half_the_data_for_training() -> None:
    frame = synthetic_building(24 * 84 + 7)  # Taylor's 12 weeks, ending off midnight
    weeks, start = first_origin_index(frame, 13)
    assert weeks == 6
    assert frame.times[start].astype(np.int64) % 24 == 0
    assert start >= len(frame) // 2 - 24
    long = synthetic_building(24 * 400)
    assert first_origin_index(long, 13)[0] == 13


# --- scoring a runner CSV --------------------------------------------------------------


def reference_and_frame() -> tuple[HourlyFrame, BacktestResult]:
    frame = synthetic_building(24 * 28, noise=1.0)
    config = BacktestConfig(horizon=24, every=24, retrain_every=168, test_start=24 * 21)
    return frame, run_backtest(frame, "naive168", lambda: build_model("naive168"), config)


def write_peer_csv(path: Path, ref: BacktestResult, p50: np.ndarray, width: float) -> None:
    """What the runner writes, through its own row writer, one origin at a time."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(runner.FORECAST_COLUMNS)
        for start in range(0, len(ref.origin), 24):
            block = slice(start, start + 24)
            quantiles = {0.1: p50[block] - width, 0.5: p50[block], 0.9: p50[block] + width}
            origin = runner.parse_utc(str(ref.origin[start]) + ":00:00Z")
            writer.writerows(runner.forecast_rows(origin, 24, quantiles, ref.actual[block]))


def test_a_runner_csv_is_scored_on_our_points_against_our_naive(tmp_path: Path) -> None:
    assert runner.FORECAST_COLUMNS == FORECAST_COLUMNS
    _, ref = reference_and_frame()
    p50 = ref.actual + 1.0
    p50[:24] = np.nan  # an origin OpenSTEF could not forecast is left out, not zero
    path = tmp_path / "peer.csv"
    write_peer_csv(path, ref, p50, width=2.0)
    metrics = score_peer(read_forecasts_csv(path), ref)
    naive_mae = np.mean(np.abs(ref.actual[24:] - ref.p50[24:]))
    assert metrics.n == len(ref.origin) - 24
    assert metrics.mae == pytest.approx(1.0)
    assert metrics.mase == pytest.approx(1.0 / naive_mae)
    assert metrics.coverage == 1.0
    # actual = P50 - 1: pinball (0.1 * 1 + 0.5 * 1 + 0.1 * 3) / 3
    assert metrics.pinball == pytest.approx(0.3)


def test_a_runner_csv_one_hour_off_our_origins_is_refused(tmp_path: Path) -> None:
    _, ref = reference_and_frame()
    shifted = BacktestResult(
        **{
            **ref.__dict__,
            "origin": ref.origin + np.timedelta64(1, "h"),
            "target_time": ref.target_time + np.timedelta64(1, "h"),
        }
    )
    path = tmp_path / "peer.csv"
    write_peer_csv(path, shifted, ref.actual, width=1.0)
    with pytest.raises(ValueError, match="row 0"):
        score_peer(read_forecasts_csv(path), ref)


def test_a_runner_csv_of_other_data_or_fewer_origins_is_refused(tmp_path: Path) -> None:
    _, ref = reference_and_frame()
    other = BacktestResult(**{**ref.__dict__, "actual": ref.actual * 2})
    path = tmp_path / "peer.csv"
    write_peer_csv(path, other, ref.actual, width=1.0)
    with pytest.raises(ValueError, match="actuals differ"):
        score_peer(read_forecasts_csv(path), ref)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-24]) + "\n")
    with pytest.raises(ValueError, match="we made"):
        score_peer(read_forecasts_csv(path), ref)


def test_runner_input_is_our_hourly_grid_with_nan_empty(tmp_path: Path) -> None:
    frame, _ = reference_and_frame()
    target = frame.target.copy()
    target[5] = np.nan
    frame = HourlyFrame(frame.times, target, future={"temperature": frame.past["avg_temperature"]})
    path = tmp_path / "in.csv"
    write_runner_csv(path, frame, "temperature")
    back = read_hourly_csv(path, "time", "load", future_covariates=["temperature"])
    np.testing.assert_array_equal(back.times, frame.times)
    np.testing.assert_array_equal(back.target, frame.target)  # bit-exact, NaN where NaN
    np.testing.assert_array_equal(back.future["temperature"], frame.future["temperature"])


# --- the venv ----------------------------------------------------------------------------


def test_a_venv_that_cannot_be_made_stops_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"cannot make the OpenSTEF venv at .*python -m venv"):
        ensure_openstef_venv(tmp_path / "venv", base_python="/bin/false")


def test_no_python_312_stops_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shim = tmp_path / "bin" / "python3.12"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\nexit 127\n")  # like a pyenv shim with 3.12 not selected
    shim.chmod(0o755)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setenv("PATH", str(shim.parent))
    with pytest.raises(SystemExit, match=r"needs Python 3\.12"):
        find_python312()
