"""Weather forecasts as a live model input (issue #20): what the request carries, what the
model does without it, and how its absence is reported."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from energy_operator.status import (
    MISSING_INPUT_SITES_SHOWN,
    Observed,
    TopicsObserved,
    build_status,
    missing_inputs_status,
)
from energy_pipeline.forecasting.csvio import read_hourly_csv, read_issued_csv
from energy_pipeline.forecasting.features import FeatureMatrix
from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.forecasting.issued import IssuedSeries
from energy_pipeline.forecasting.models import DefaultModel, DefaultParams
from energy_pipeline.forecasting.window import with_issued
from energy_pipeline.inference.convert import proto_to_issued, weather_to_proto

from .test_backtest_weather_forecasts import write_files

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def test_a_weather_forecast_crosses_the_wire_as_issued() -> None:
    rows = [
        (T0 + timedelta(minutes=20), T0 + timedelta(hours=h), 10.0 + h, None if h == 2 else 60.0)
        for h in range(1, 4)
    ] + [(T0 + timedelta(hours=6, minutes=20), T0 + timedelta(hours=7), 11.5, 55.0)]
    series = proto_to_issued(weather_to_proto(rows))
    assert set(series) == {"temperature", "humidity"}
    temperature = series["temperature"]
    assert temperature.issued_at.tolist() == [
        np.datetime64("2025-03-01T00:20:00").astype(object)] * 3 + [
        np.datetime64("2025-03-01T06:20:00").astype(object)]
    assert temperature.values.tolist() == [11.0, 12.0, 13.0, 11.5]
    # A variable not forecast for an hour is no value, not 0.
    assert len(series["humidity"]) == 3
    assert proto_to_issued([]) == {}
    # Only temperature forecast: no humidity series at all.
    only = proto_to_issued(weather_to_proto([(T0, T0 + timedelta(hours=1), 3.0, None)]))
    assert set(only) == {"temperature"}


def frame(hours: int) -> HourlyFrame:
    times = np.datetime64("2025-03-01T00", "h") + np.arange(hours)
    return HourlyFrame(times=times, target=np.ones(hours))


def issued(issue: str, first: str, hours: int) -> IssuedSeries:
    valid = np.datetime64(first, "h") + np.arange(hours)
    return IssuedSeries(np.full(hours, np.datetime64(issue, "s")), valid, np.arange(hours) + 5.0)


def test_the_model_input_is_missing_only_when_no_issue_before_the_origin_reaches_a_target(
) -> None:
    f = frame(48)
    origin, stop = 24, 48
    # The model reads no issued covariate: nothing can be missing.
    assert with_issued(f, (), {}, origin, stop) == (f, ())
    # None sent: both variables are held empty, and the input is missing.
    view, missing = with_issued(f, ("temperature", "humidity"), {}, origin, stop)
    assert missing == ("weather_forecast",)
    assert {k: len(v) for k, v in view.issued.items()} == {"temperature": 0, "humidity": 0}
    # An issue that ends before the origin, or one made at the origin, does not count.
    early = issued("2025-03-01T00:10", "2025-03-01T01", 20)
    assert with_issued(f, ("temperature",), {"temperature": early}, origin, stop)[1] == (
        "weather_forecast",)
    late = issued("2025-03-02T00:00", "2025-03-02T00", 24)
    assert with_issued(f, ("temperature",), {"temperature": late}, origin, stop)[1] == (
        "weather_forecast",)
    # One made a second before the origin for the last target hour counts.
    last = issued("2025-03-01T23:59:59", "2025-03-02T23", 1)
    assert with_issued(f, ("temperature",), {"temperature": last}, origin, stop)[1] == ()


def test_hidden_forecasts_in_training_make_a_model_that_copes_without_them(
    tmp_path: Path,
) -> None:
    """Trained with weather forecasts and asked without one, the model forecasts about as
    well as a model that never had weather; trained without hiding any, it does far worse
    (it sends the missing values down branches that never saw one)."""
    data, forecasts = write_files(tmp_path)
    plain = read_hourly_csv(data, "time", "load", [], [])
    weather = read_issued_csv(forecasts)
    with_weather = dataclasses.replace(plain, issued=weather)
    split = len(plain) - 14 * 24
    none = {k: v.before(np.datetime64("1971-01-01")) for k, v in weather.items()}

    def mae(model: DefaultModel, issued: dict[str, IssuedSeries]) -> float:
        f = dataclasses.replace(plain, issued=issued) if model.future else plain
        errors = []
        for origin in range(split, len(plain) - 24, 24):
            view = f.visible_at(origin, 24).extended_to(origin + 24)
            forecast = model.predict(view, origin, np.arange(1, 25))
            errors.append(np.abs(forecast.p50 - plain.target[origin:origin + 24]))
        return float(np.mean(errors))

    blind = DefaultModel(params=DefaultParams())
    blind.fit(plain.slice(0, split), 24)
    models = {}
    for share in (0.0, DefaultParams().issued_dropout):
        model = DefaultModel(future=("temperature",), params=DefaultParams(issued_dropout=share))
        model.fit(with_weather.slice(0, split), 24)
        models[share] = model
    reference = mae(blind, {})
    hidden = models[DefaultParams().issued_dropout]
    assert mae(hidden, none) < 1.1 * reference
    assert mae(models[0.0], none) > 1.2 * reference
    # With the forecasts, hiding some in training costs little.
    assert mae(hidden, weather) < 1.1 * mae(models[0.0], weather) < 0.7 * reference


def test_the_hidden_share_blanks_whole_origins_and_only_the_weather_columns() -> None:
    model = DefaultModel(past=("avg_temperature",), future=("temperature",),
                         params=DefaultParams(issued_dropout=0.3))
    f = HourlyFrame(times=np.datetime64("2025-03-01T00", "h") + np.arange(400),
                    target=np.ones(400), past={"avg_temperature": np.ones(400)},
                    issued={"temperature": issued("2025-02-28T00", "2025-03-01T00", 400)})
    names = ("avg_temperature_last", "temperature_at_target", "temperature_mean24_to_target",
             "apparent_temperature_at_target", "hour_sin")
    origin = np.repeat(np.arange(400), 2)
    matrix = FeatureMatrix(names, np.ones((len(origin), len(names))),
                           ("level",) * len(names))
    values = model._drop_issued(f, matrix, origin)
    blank = np.isnan(values)
    assert not blank[:, [0, 4]].any()
    rows = blank[:, 1]
    assert (blank[:, 1:4] == rows[:, None]).all()
    # Both rows of an origin alike, and about the share asked for.
    assert (rows[0::2] == rows[1::2]).all()
    assert 0.2 < rows.mean() < 0.4
    # Without issued covariates in the frame, nothing is hidden.
    plain = dataclasses.replace(f, issued={})
    known = DefaultModel(past=("avg_temperature",), params=DefaultParams(issued_dropout=0.3))
    assert not np.isnan(known._drop_issued(plain, matrix, origin)).any()


def observed(missing: dict[str, list[str]] | None) -> Observed:
    return Observed(generation=1, paused=False, workloads={},
                    topics=TopicsObserved((), "Ready"), schema_version=7, schema_latest=7,
                    missing_inputs=missing)


def test_the_status_names_the_missing_input_and_its_sites() -> None:
    sites = [f"site-{i:02d}" for i in range(12)]
    assert missing_inputs_status({"weather_forecast": sites}) == [
        {"input": "weather_forecast", "sites": 12,
         "siteNames": sites[:MISSING_INPUT_SITES_SHOWN]}]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    status = build_status(observed({"weather_forecast": ["b"]}), "p", {}, now)
    assert status["missingInputs"] == [
        {"input": "weather_forecast", "sites": 1, "siteNames": ["b"]}]
    # Unknown (database unreachable): the last seen stays; known and empty: it goes.
    assert build_status(observed(None), "p", status, now)["missingInputs"] == \
        status["missingInputs"]
    assert "missingInputs" not in build_status(observed({}), "p", status, now)
