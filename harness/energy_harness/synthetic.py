"""A synthetic building: hourly sensor averages with the structure real sites show.

Used by unit tests (small, deterministic data with a known answer) and by the benchmark's
training-time measurement (one year of hourly rows). Consumption follows an occupancy
schedule (weekdays 8-18 h), heating and cooling load driven by outdoor temperature, a slow
drift and noise; temperature and humidity have seasonal and daily cycles; renewable
output follows daylight.
"""

from __future__ import annotations

import numpy as np
from energy_pipeline.forecasting.frame import HourlyFrame

PAST_COLUMNS = ("avg_temperature", "avg_humidity", "avg_squarefootage", "avg_renewableenergy")


def synthetic_building(
    hours: int, start: str = "2025-01-06T00:00", seed: int = 0, noise: float = 2.0
) -> HourlyFrame:
    """`hours` hourly rows from `start` (a Monday by default), sensors as past covariates."""
    rng = np.random.default_rng(seed)
    times = np.datetime64(start, "h") + np.arange(hours).astype("timedelta64[h]")
    hour = times.astype(np.int64) % 24
    day = (times.astype("datetime64[D]").astype(np.int64) + 3) % 7
    day_of_year = (times - times.astype("datetime64[Y]")).astype("timedelta64[D]").astype(int)
    season = np.cos(2 * np.pi * (day_of_year - 200) / 365.25)
    # Weather wanders around its seasonal/daily cycle (a slow AR(1)), as real weather does.
    wander = np.zeros(hours)
    shocks = rng.normal(0, 0.35, hours)
    for i in range(1, hours):
        wander[i] = 0.97 * wander[i - 1] + shocks[i]
    temperature = 12 + 9 * season + 4 * np.sin(2 * np.pi * (hour - 9) / 24) + wander
    humidity = np.clip(60 - 1.5 * (temperature - 12) + rng.normal(0, 3, hours), 15, 100)
    daylight = np.clip(np.sin(np.pi * (hour - 6) / 12), 0, None) * (0.6 + 0.4 * season)
    renewable = 6 * daylight * rng.uniform(0.5, 1.0, hours)
    occupied = (day < 5) & (hour >= 8) & (hour < 18)
    hvac = 1.8 * np.maximum(16 - temperature, 0) + 2.5 * np.maximum(temperature - 22, 0)
    drift = 5 * np.sin(2 * np.pi * np.arange(hours) / (24 * 90))
    consumption = 40 + 25 * occupied + hvac + drift - 0.5 * renewable
    consumption = consumption + rng.normal(0, noise, hours)
    return HourlyFrame(
        times=times,
        target=consumption,
        past={
            "avg_temperature": temperature,
            "avg_humidity": humidity,
            "avg_squarefootage": np.full(hours, 1500.0),
            "avg_renewableenergy": renewable,
        },
    )
