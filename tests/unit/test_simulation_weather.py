"""The simulator's forecast weather (issue #20): the site's own future weather, as the
simulation later produces it, plus an error that grows with the lead time."""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from energy_pipeline.core.validation import parse_weather_mqtt
from energy_pipeline.simulation.signals import (
    SiteProfile,
    forecast_error_sd,
    forecast_weather,
    outdoor_temperature,
)

pytestmark = pytest.mark.unit

START = datetime(2025, 1, 1, tzinfo=UTC)


def site_at(hour: int) -> SiteProfile:
    site = SiteProfile.draw(7, 0)
    for h in range(hour + 1):
        site.advance_weather(h)
    return site


def test_without_error_the_forecast_is_the_weather_that_follows() -> None:
    site = site_at(10)
    before = copy.deepcopy(site)
    forecast = forecast_weather(site, "site-0", START, 10, 48, np.random.default_rng(1),
                                error_scale=0.0)
    assert site.anomaly == before.anomaly and site.last_hour == 10  # the simulation untouched
    assert forecast.issued_at == START + timedelta(hours=10)
    later = copy.deepcopy(site)
    for lead, point in enumerate(forecast.points, start=1):
        later.advance_weather(10 + lead)
        assert point.valid_time == START + timedelta(hours=10 + lead)
        expected = outdoor_temperature(later, point.valid_time)
        assert dict(point.values)["temperature"] == pytest.approx(expected, abs=0.006)


def test_the_error_grows_with_the_lead_time_as_documented() -> None:
    site = site_at(5)
    truth = forecast_weather(site, "site-0", START, 5, 168, np.random.default_rng(0), 0.0)
    rng = np.random.default_rng(3)
    errors = np.array([
        [dict(p.values)["temperature"] - dict(t.values)["temperature"]
         for p, t in zip(forecast_weather(site, "site-0", START, 5, 168, rng).points,
                         truth.points, strict=True)]
        for _ in range(400)])
    rmse = np.sqrt((errors**2).mean(axis=0))
    for lead in (1, 24, 168):
        assert rmse[lead - 1] == pytest.approx(forecast_error_sd(lead), rel=0.15), lead
    assert rmse[0] < rmse[23] < rmse[71] < rmse[167]
    # Smooth across neighbouring hours: a forecast that is too warm stays too warm for a while.
    correlation = np.corrcoef(errors[:, 47], errors[:, 48])[0, 1]
    assert correlation > 0.8
    assert math.isclose(forecast_error_sd(24), 1.3)


def test_the_forecast_passes_the_contract_the_bridge_applies() -> None:
    forecast = forecast_weather(site_at(0), "site-0", START, 0, 16 * 24,
                                np.random.default_rng(2))
    parsed = parse_weather_mqtt("energy/site-0/weather_forecast/simulator",
                                forecast.to_mqtt_payload(), forecast.issued_at)
    assert parsed == forecast
