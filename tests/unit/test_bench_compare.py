"""The issue #20 comparison table (energy_harness.bench.compare): ratio and margin the right
way round, every row present, a peer that cannot run said in its row, and weather forecasts
that err as the simulator's do and are issued before the hours they name."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from energy_harness.bench import compare
from energy_harness.bench.compare import (
    NAIVE,
    OPENSTEF,
    OURS,
    ROWS,
    SEED,
    WEATHER,
    checks,
    ratio,
    render_markdown,
    table_rows,
    weather_forecasts,
    weather_margin,
)
from energy_harness.bench.openstef_peer import Dataset, write_runner_csv
from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.simulation.signals import forecast_error_sd

pytestmark = pytest.mark.unit


def entry(mase: float, mae: float = 1.0, coverage: float = 0.8) -> dict[str, float]:
    return {"mase": mase, "mae": mae, "coverage_p10_p90": coverage}


def result(**rows: dict[str, Any]) -> dict[str, Any]:
    table = {
        OURS: entry(0.60, coverage=0.80),
        WEATHER: entry(0.54, coverage=0.79),
        OPENSTEF: entry(0.80, coverage=0.30),
        NAIVE: entry(1.0, coverage=0.70),
        SEED: entry(0.90, coverage=0.0),
    }
    table.update(rows)
    return {
        "description": "a test series",
        "config": {"origins": 7, "first_origin": "2025-01-01T00:00:00Z",
                   "last_origin": "2025-01-07T00:00:00Z",
                   "history_before_first_origin_hours": 1000},
        "rows": table,
    }


def report(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    for value in results.values():
        value["checks"] = checks(table_rows("x", value))
    return {
        "protocol": "day-ahead",
        "datasets": results,
        "commands": ["make bench-openstef"],
        "uname": "Linux test 1.0 x86_64",
        "machine": {"cores": 2, "load_average_at_start": [0.1, 0.1, 0.1]},
        "training": {"data": "one year", "seconds": [6.0, 5.5], "best_seconds": 5.5,
                     "target_seconds": 10.0},
        "latency_in_process": {"horizons_1_168": {"calls": 200, "p50_ms": 4.1, "p99_ms": 8.3}},
        "serving": {"file": "bench/serving.json", "written": "2026-12-04T03:20:00Z",
                    "final_fit_seconds": 2.9, "rpc_p99_ms": 6.7},
    }


def test_ratio_is_ours_over_the_peers() -> None:
    assert ratio(0.6, 0.8) == pytest.approx(0.75)
    assert ratio(0.8, 0.6) == pytest.approx(4 / 3)
    assert ratio(0.6, None) is None
    assert ratio(None, 0.8) is None
    assert ratio(0.6, math.nan) is None
    assert ratio(0.6, 0.0) is None


def test_weather_margin_is_positive_when_the_forecasts_help() -> None:
    gain = weather_margin(0.60, 0.54)
    assert gain is not None
    assert gain["mase_without"] == 0.60 and gain["mase_with"] == 0.54
    assert gain["relative_gain"] == pytest.approx(0.10)
    worse = weather_margin(0.60, 0.66)
    assert worse is not None and worse["relative_gain"] == pytest.approx(-0.10)
    assert weather_margin(0.60, None) is None
    assert weather_margin(None, 0.5) is None


def test_rows_come_in_order_with_the_ratio_against_openstef() -> None:
    rows = table_rows("x", result())
    assert [r.label for r in rows] == list(ROWS)
    by = {r.label: r for r in rows}
    assert by[OURS].ratio_to_openstef == pytest.approx(0.75)  # 0.60 / 0.80, not 0.80 / 0.60
    assert by[WEATHER].ratio_to_openstef == pytest.approx(0.54 / 0.80)
    assert by[NAIVE].ratio_to_openstef == pytest.approx(1.25)
    assert by[OPENSTEF].ratio_to_openstef is None
    assert checks(rows) == {"mase_ratio_le_0.9": True, "coverage_78_82": True,
                            "weather_forecasts_help": True}


@pytest.mark.parametrize("label", ROWS)
def test_a_missing_row_is_an_error_not_a_blank(label: str) -> None:
    data = result()
    del data["rows"][label]
    with pytest.raises(ValueError, match=label.replace("+", r"\+")):
        table_rows("x", data)


def test_targets_fail_when_missed() -> None:
    rows = table_rows("x", result(**{OURS: entry(0.76, coverage=0.77)}))
    assert checks(rows) == {"mase_ratio_le_0.9": False, "coverage_78_82": False,
                            "weather_forecasts_help": True}


def test_markdown_has_every_row_the_ratio_the_margin_and_the_machine() -> None:
    text = render_markdown(report({"set-a": result(), "set-b": result()}))
    assert text.count("| ours | 0.600 |") == 2
    for label in ROWS:
        assert text.count(f"| {label} |") == 2, label
    assert "| 0.75 |" in text  # ours / OpenSTEF
    assert "0.600 → 0.540 (+10.0 %)" in text
    assert "80.0 %" in text and "30.0 %" in text
    assert "Linux test 1.0 x86_64" in text and "nproc: 2" in text
    assert "make bench-openstef" in text
    assert "mase_ratio_le_0.9: yes" in text
    assert "5.50 s (target < 10 s)" in text
    assert "p50 4.1 ms, p99 8.3 ms over 200 calls" in text
    assert "Forecast RPC p99 6.7 ms" in text and "written 2026-12-04T03:20:00Z" in text


def test_a_peer_that_did_not_run_says_why_in_its_row() -> None:
    not_run = {"not_run": "OpenSTEF 4.7.0 venv could not be made: no Python 3.12"}
    data = result(**{OPENSTEF: not_run})
    rows = table_rows("x", data)
    by = {r.label: r for r in rows}
    assert by[OURS].ratio_to_openstef is None and by[OPENSTEF].mase is None
    assert checks(rows)["mase_ratio_le_0.9"] is None
    text = render_markdown(report({"set-a": data}))
    assert "| OpenSTEF | n/a | n/a | n/a |  |  | OpenSTEF 4.7.0 venv could not be made" in text
    assert "mase_ratio_le_0.9: n/a" in text


# --- simulated weather forecasts --------------------------------------------------------


def series(hours: int) -> tuple[np.ndarray, np.ndarray]:
    times = np.datetime64("2025-01-01T00", "h") + np.arange(hours).astype("timedelta64[h]")
    return times, 10 + 5 * np.sin(np.arange(hours) / 7)


def test_forecasts_are_issued_before_the_hours_they_name_and_not_past_the_data() -> None:
    times, temperature = series(100)
    issued = weather_forecasts(times, temperature, np.random.default_rng(0))
    lead = (issued.valid_time.astype("datetime64[s]") - issued.issued_at).astype(np.int64) // 3600
    assert lead.min() == 1 and lead.max() == 48
    assert issued.valid_time.max() == times[-1]
    assert set((issued.issued_at.astype("datetime64[h]") - times[0]).astype(int)) == set(
        range(0, 100, 6))
    # The first issue covers hours 1..48, the one at 96 only 97..99.
    assert np.sum(issued.issued_at == times[96]) == 3
    exact = weather_forecasts(times, temperature, np.random.default_rng(0), error_scale=0.0)
    index = (exact.valid_time - times[0]).astype(int)
    np.testing.assert_allclose(exact.values, temperature[index])


def test_forecast_error_grows_with_lead_as_the_simulators_does() -> None:
    times, temperature = series(6 * 3000)
    issued = weather_forecasts(times, temperature, np.random.default_rng(1))
    rmse = compare.forecast_error_by_lead(issued, times, temperature)
    assert sorted(rmse) == [1, 6, 12, 24, 48]
    for lead, value in rmse.items():
        assert value == pytest.approx(forecast_error_sd(lead), rel=0.08), lead
    assert rmse[1] < rmse[24] < rmse[48]


def test_one_dataset_with_an_openstef_that_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path on 8 weeks of a load driven by an outdoor temperature that wanders (as
    in test_backtest_weather_forecasts): the OpenSTEF row says why it is empty, every other
    row is scored on the same origins, and the temperature forecasts help."""
    rng = np.random.default_rng(11)
    hours = 24 * 56
    anomaly = np.zeros(hours)
    for i in range(1, hours):
        anomaly[i] = 0.97 * anomaly[i - 1] + rng.normal(0, 1.0)
    t = np.arange(hours)
    temperature = 8 + 5 * np.cos(2 * np.pi * (t % 24 - 15) / 24) + anomaly
    office = (t % 24 >= 8) & (t % 24 < 18)
    load = 100 + 6 * np.abs(temperature - 18) + 20 * office + rng.normal(0, 2, hours)
    times = np.datetime64("2025-01-06T00", "h") + t.astype("timedelta64[h]")
    frame = HourlyFrame(times, load, future={"temperature": temperature})
    path = tmp_path / "load.csv"
    write_runner_csv(path, frame, "temperature")
    data = Dataset(path, "time", "load", "temperature", {}, {"name": "synthetic"})
    monkeypatch.setattr(compare, "load_dataset", lambda name, workdir: data)
    peer = compare.openstef_peer(tmp_path / "venv", 90, base_python="/bin/false")
    assert isinstance(peer, str) and "cannot make the OpenSTEF venv" in peer
    out = compare.bench_dataset("synthetic", 2, peer, 7, tmp_path)
    rows = out["rows"]
    assert set(rows) == set(ROWS)
    assert rows[OPENSTEF]["not_run"].startswith("OpenSTEF 4.7.0 venv could not be made")
    assert out["config"]["origins"] == 14
    assert rows[NAIVE]["mase"] == pytest.approx(1.0)
    assert out["ratio_ours_to_openstef"] is None
    assert out["weather_margin"]["relative_gain"] > 0.3, out["weather_margin"]
    assert out["checks"]["weather_forecasts_help"] is True
    assert out["weather_forecasts"]["rmse_by_lead_degC"][24] == pytest.approx(1.3, rel=0.3)
