"""Forecasting from a window of hourly_features rows (the inference service's API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from energy_harness.synthetic import synthetic_building
from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.forecasting.models import DefaultModel, DefaultParams, load_model
from energy_pipeline.forecasting.rows import COVARIATE_COLUMNS, HourlyRow
from energy_pipeline.forecasting.window import forecast_window, frame_from_rows, train_on_rows

pytestmark = pytest.mark.unit

FAST = DefaultParams(num_boost_round=25, early_stopping_rounds=5, max_rows=6000, num_threads=1)


def rows_of(frame: HourlyFrame) -> list[HourlyRow]:
    return [
        HourlyRow(
            hour=t.astype("datetime64[s]").astype(datetime).replace(tzinfo=UTC),
            avg_temperature=float(frame.past["avg_temperature"][i]),
            avg_humidity=float(frame.past["avg_humidity"][i]),
            avg_squarefootage=float(frame.past["avg_squarefootage"][i]),
            avg_renewableenergy=float(frame.past["avg_renewableenergy"][i]),
            avg_energyconsumption=float(frame.target[i]),
            n_readings=20,
        )
        for i, t in enumerate(frame.times)
    ]


@pytest.fixture(scope="module")
def history() -> list[HourlyRow]:
    return rows_of(synthetic_building(24 * 40, seed=11))


@pytest.fixture(scope="module")
def model(history: list[HourlyRow]) -> DefaultModel:
    return train_on_rows(history[: 24 * 33], max_horizon=168, params=FAST)


def test_rows_become_a_gap_free_frame() -> None:
    frame = synthetic_building(5)
    rows = rows_of(frame)
    shuffled = [rows[3], rows[0], rows[4]]  # unsorted, hours 1-2 missing
    built = frame_from_rows(shuffled)
    assert len(built) == 5
    np.testing.assert_array_equal(built.target[[1, 2]], [np.nan, np.nan])
    assert built.target[3] == rows[3].avg_energyconsumption
    assert set(built.past) == set(COVARIATE_COLUMNS)


def test_an_hour_without_readings_is_unknown() -> None:
    rows = rows_of(synthetic_building(3))
    empty = HourlyRow(**{**rows[1].__dict__, "n_readings": 0})
    assert np.isnan(frame_from_rows([rows[0], empty, rows[2]]).target[1])


def test_from_mapping_takes_db_rows_with_nulls() -> None:
    row = HourlyRow.from_mapping(
        {
            "hour": datetime(2025, 1, 1, 13, tzinfo=UTC),
            "avg_temperature": 20.5,
            "avg_humidity": None,
            "avg_squarefootage": 1500,
            "avg_renewableenergy": 6,
            "avg_energyconsumption": 60.25,
            "n_readings": 20,
        }
    )
    assert np.isnan(row.avg_humidity)
    assert row.avg_energyconsumption == 60.25


def test_forecast_starts_the_hour_after_the_window(
    model: DefaultModel, history: list[HourlyRow]
) -> None:
    window = history[24 * 20 : 24 * 36]
    result = forecast_window(model, window, horizons=[24, 1, 2, 168])
    last_hour = window[-1].hour
    assert result.origin == np.datetime64(last_hour.replace(tzinfo=None) + timedelta(hours=1), "h")
    assert [p.horizon for p in result.points] == [1, 2, 24, 168]
    assert result.points[0].target_time == result.origin
    assert result.points[-1].target_time == result.origin + np.timedelta64(167, "h")
    assert result.method == "model"
    assert all(p.p10 <= p.p50 <= p.p90 for p in result.points)


def test_a_restored_model_gives_the_same_forecast(
    model: DefaultModel, history: list[HourlyRow]
) -> None:
    window = history[24 * 20 : 24 * 36]
    a = forecast_window(model, window, horizons=range(1, 25))
    b = forecast_window(load_model(model.to_text()), window, horizons=range(1, 25))
    assert a == b


def test_a_short_window_falls_back(model: DefaultModel, history: list[HourlyRow]) -> None:
    result = forecast_window(model, history[-30:], horizons=range(1, 25))
    assert result.method == "fallback:naive24"
    assert all(np.isfinite(p.p50) for p in result.points)


def test_horizons_outside_1_to_168_are_a_bad_request(
    model: DefaultModel, history: list[HourlyRow]
) -> None:
    for bad in ([0], [169], []):
        with pytest.raises(ValueError, match=r"1\.\.168"):
            forecast_window(model, history[-200:], horizons=bad)


def test_forecast_tolerates_missing_recent_hours(
    model: DefaultModel, history: list[HourlyRow]
) -> None:
    window = history[24 * 20 : 24 * 36]
    gappy = window[:-5] + window[-3:]  # two hours lost in the middle of the last day
    result = forecast_window(model, gappy, horizons=range(1, 25))
    assert result.method == "model"
    assert all(np.isfinite(p.p50) for p in result.points)
