"""What `simulate` publishes as forecast weather (issue #20): an issue per site every 6 h of
simulated time, at UTC hours, in the bridge's contract, from the weather the simulator's own
readings follow, with an error that grows with the lead time."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from energy_pipeline.core.contracts import WeatherForecast
from energy_pipeline.core.settings import load
from energy_pipeline.core.validation import parse_weather_mqtt
from energy_pipeline.simulation.commands import (
    SimulatorSettings,
    Tally,
    future_forecasts,
    future_warning,
    simulated,
)
from energy_pipeline.simulation.publisher import outgoing
from energy_pipeline.simulation.signals import (
    FORECAST_HOURS,
    SimulationConfig,
    forecast_error_sd,
    forecast_issue_times,
    forecast_issues,
    generate,
)

from .test_simulation_window import window  # now: 2026-12-01T20:30Z

pytestmark = pytest.mark.unit

# Not on an hour: the simulated weather moves at hours counted from the start, the forecasts
# are for UTC hours.
START = datetime(2025, 1, 1, 3, 35, tzinfo=UTC)
ROOT = "plant/north"


def config(days: int, devices: int = 8, **extra: object) -> SimulationConfig:
    return SimulationConfig(sites=2, devices=devices, start=START, steps=days * 24 * 12,
                            fault_rate=0.0, sensors=("temperature", "humidity"), **extra)


def site_means(cfg: SimulationConfig, sensor: str) -> dict[tuple[str, datetime], float]:
    """The mean over a site's devices of its readings of `sensor` at each time."""
    values: dict[tuple[str, datetime], list[float]] = defaultdict(list)
    for r in generate(cfg):
        if r.sensor == sensor:
            values[(r.site, r.ts)].append(r.value)
    return {key: float(np.mean(v)) for key, v in values.items()}


def published_forecasts(cfg: SimulationConfig, fmt: str = "single"
                        ) -> list[tuple[str, bytes, datetime]]:
    return [(m.topic, m.payload, m.time) for m in outgoing(simulated(cfg, True), fmt, ROOT)
            if m.forecast]


def test_a_run_issues_every_six_utc_hours_for_the_next_48_hours() -> None:
    cfg = config(days=2)
    times = list(forecast_issue_times(cfg))
    assert times == [datetime(2025, 1, 1, 6, tzinfo=UTC) + timedelta(hours=6 * i)
                     for i in range(8)]
    forecasts = list(forecast_issues(cfg))
    assert [(f.issued_at, f.site) for f in forecasts] == [
        (t, s) for t in times for s in ("site-0", "site-1")]
    for f in forecasts:
        assert f.source == "simulator"
        valid = [p.valid_time for p in f.points]
        assert valid == [f.issued_at + timedelta(hours=h) for h in range(1, FORECAST_HOURS + 1)]
        assert all(dict(p.values).keys() == {"temperature", "humidity"} for p in f.points)
    # A window on whole hours issues at its first hour when that is an issue hour.
    aligned = SimulationConfig(start=datetime(2025, 1, 1, tzinfo=UTC), steps=12)
    assert list(forecast_issue_times(aligned)) == [datetime(2025, 1, 1, tzinfo=UTC)]


@pytest.mark.parametrize("fmt", ["single", "combined"])
def test_every_published_forecast_passes_the_bridge_and_precedes_its_hours(fmt: str) -> None:
    cfg = config(days=2, devices=2)
    forecasts = list(forecast_issues(cfg))
    published = published_forecasts(cfg, fmt)
    assert len(published) == len(forecasts) == 16
    for (topic, payload, time), forecast in zip(published, forecasts, strict=True):
        assert topic == f"{ROOT}/{forecast.site}/weather_forecast/simulator"
        assert time == forecast.issued_at
        # As the bridge parses it the moment it is issued.
        parsed = parse_weather_mqtt(topic, payload, forecast.issued_at, root=ROOT)
        assert parsed == forecast
        assert isinstance(parsed, WeatherForecast)
        assert all(p.valid_time > parsed.issued_at for p in parsed.points)


def test_messages_go_out_in_time_order_each_forecast_after_its_hours_readings() -> None:
    cfg = config(days=1, devices=1)
    messages = list(outgoing(simulated(cfg, True), "single", ROOT))
    times = [m.time for m in messages]
    assert times == sorted(times)
    first = next(i for i, m in enumerate(messages) if m.forecast)
    assert messages[first - 1].time == messages[first].time and not messages[first - 1].forecast
    # Turned off, the readings alone, unchanged.
    readings = list(outgoing(simulated(cfg, False), "single", ROOT))
    assert readings == [m for m in messages if not m.forecast]


def test_forecasts_are_of_the_weather_the_published_readings_have() -> None:
    """Without the error, each forecast hour is what the site's sensors then read."""
    cfg = config(days=3)
    temperature, humidity = site_means(cfg, "temperature"), site_means(cfg, "humidity")
    checked = 0
    for forecast in forecast_issues(cfg, error_scale=0.0):
        for point in forecast.points:
            key = (forecast.site, point.valid_time)
            if key not in temperature:
                continue  # after the run's end
            values = dict(point.values)
            # 8 devices with noise 0.2 degC and 1 %: the mean is within a few tenths.
            assert values["temperature"] == pytest.approx(temperature[key], abs=0.35), key
            assert values["humidity"] == pytest.approx(humidity[key], abs=1.5), key
            checked += 1
    assert checked > 300


def test_the_published_error_grows_with_the_lead_time() -> None:
    """Against the readings: fails for a simulator that sent the true weather (an error of
    the devices' noise at every lead) or one that did not grow with the lead."""
    cfg = config(days=60, devices=4)
    temperature = site_means(cfg, "temperature")
    errors: dict[int, list[float]] = defaultdict(list)
    for forecast in forecast_issues(cfg):
        for lead, point in enumerate(forecast.points, start=1):
            key = (forecast.site, point.valid_time)
            if key in temperature:
                errors[lead].append(dict(point.values)["temperature"] - temperature[key])
    rmse = {lead: float(np.sqrt(np.mean(np.square(e)))) for lead, e in errors.items()}
    assert min(len(e) for e in errors.values()) > 400
    for lead in (1, 24, 48):
        assert rmse[lead] == pytest.approx(forecast_error_sd(lead), rel=0.2), (lead, rmse[lead])
    assert rmse[1] < rmse[12] < rmse[24] < rmse[48]
    assert rmse[48] > 2 * rmse[1]


def test_a_setting_turns_the_forecasts_off() -> None:
    assert load(SimulatorSettings, {}).simulator_weather_forecasts is True
    assert load(SimulatorSettings, {"SIMULATOR_WEATHER_FORECASTS": "false"}
                ).simulator_weather_forecasts is False
    cfg = config(days=1, devices=1)
    assert not any(isinstance(item, WeatherForecast) for item in simulated(cfg, False))


def test_forecasts_past_the_bridges_future_limit_are_announced_and_counted_apart() -> None:
    # Tomorrow 00:00 to 12:00: issues at 00, 06 (12 is the end), all ahead of the bridge.
    w = window("--duration", "12h", "--start", "2026-12-02T00:00:00Z", "--sites", "2")
    assert future_forecasts(w) == (4, 4)
    line = future_warning(w, "single", forecasts=future_forecasts(w))
    assert "and 4 of 4 weather forecasts are more than 300 s ahead of now" in line
    assert "weather" not in future_warning(w, "single")
    # A window ending at now has none ahead.
    assert future_forecasts(window("--duration", "2d"))[0] == 0

    tally = Tally(w.latest)
    for message in outgoing(simulated(w.config, True), "single"):
        tally.add(message)
    assert (tally.forecasts, tally.forecasts_future) == (4, 4)
    assert tally.readings == tally.future == w.config.total_readings
    # --realtime publishes nothing before its time: nothing counts as future.
    assert window("--realtime", "--duration", "1h").latest is None
