"""A documented synthetic model of building sensors; pure and reproducible from a seed.

Per site (all parameters drawn from the seed):
- outdoor temperature: annual cycle (coldest mid-January) + daily cycle (warmest 15:00)
  + an hourly AR(1) weather anomaly (phi 0.95, sd 0.6 degC), shared by the site's devices;
- relative humidity: falls 1.5 %/degC above the site's mean temperature, 15..100 %;
- square footage: the site's floor area, as the original dataset carried it per device;
- renewable energy: a PV array, output proportional to the sine of the solar elevation
  (latitude, day of year, hour) and reduced by an AR(1) cloud cover, kWh per interval;
- energy consumption: base load per ft2 + heating/cooling proportional to |T - 18 degC|
  + occupancy load on weekdays 08-18 (lower on Saturdays), kWh per interval;
- every device adds its own noise; with probability `fault_rate` per reading a device
  reports a fault (stuck at its previous value, or a spike within physical bounds).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from energy_pipeline.core.contracts import (
    SENSOR_NAMES,
    SENSORS,
    Reading,
    WeatherForecast,
    WeatherPoint,
)


@dataclass(frozen=True)
class SimulationConfig:
    sites: int = 4
    devices: int = 4
    sensors: tuple[str, ...] = SENSOR_NAMES
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    interval: timedelta = timedelta(minutes=5)
    steps: int = 576  # 2 days at 5-minute intervals
    seed: int = 42
    fault_rate: float = 0.0
    site_prefix: str = "site-"

    def site_ids(self) -> list[str]:
        return [f"{self.site_prefix}{i}" for i in range(self.sites)]

    @property
    def readings_per_step(self) -> int:
        return self.sites * len(self.sensors) * self.devices

    @property
    def total_readings(self) -> int:
        return self.readings_per_step * self.steps


@dataclass
class SiteProfile:
    floor_area: float
    latitude: float
    pv_kw: float
    mean_temp: float
    base_w_per_ft2: float
    hvac_w_per_ft2_per_deg: float
    occupancy_w_per_ft2: float
    rng: np.random.Generator
    anomaly: float = 0.0
    cloud: float = 0.3
    last_hour: int | None = field(default=None)

    @classmethod
    def draw(cls, seed: int, site_index: int) -> SiteProfile:
        rng = np.random.default_rng([seed, site_index, 0])
        return cls(
            floor_area=float(rng.uniform(20_000, 200_000)),
            latitude=float(rng.uniform(45.0, 55.0)),
            pv_kw=float(rng.uniform(20, 200)),
            mean_temp=float(rng.uniform(8.0, 14.0)),
            base_w_per_ft2=float(rng.uniform(0.3, 0.6)),
            hvac_w_per_ft2_per_deg=float(rng.uniform(0.03, 0.08)),
            occupancy_w_per_ft2=float(rng.uniform(0.5, 1.2)),
            rng=np.random.default_rng([seed, site_index, 1]),
        )

    def advance_weather(self, hour_index: int) -> None:
        """Weather moves once per hour, so every device of the site sees the same weather."""
        if self.last_hour == hour_index:
            return
        steps = 1 if self.last_hour is None else hour_index - self.last_hour
        for _ in range(max(steps, 1)):
            self.anomaly = 0.95 * self.anomaly + float(self.rng.normal(0, 0.6))
            self.cloud = min(
                1.0, max(0.0, 0.9 * self.cloud + 0.1 * 0.35 + float(self.rng.normal(0, 0.08)))
            )
        self.last_hour = hour_index


def outdoor_temperature(site: SiteProfile, ts: datetime) -> float:
    day = ts.timetuple().tm_yday
    hour = ts.hour + ts.minute / 60
    annual = -8.0 * math.cos(2 * math.pi * (day - 15) / 365.25)
    daily = 4.0 * math.cos(2 * math.pi * (hour - 15) / 24)
    return site.mean_temp + annual + daily + site.anomaly


def solar_elevation_sine(latitude: float, ts: datetime) -> float:
    day = ts.timetuple().tm_yday
    declination = math.radians(23.44) * math.sin(2 * math.pi * (284 + day) / 365)
    hour_angle = math.radians(15 * (ts.hour + ts.minute / 60 - 12))
    lat = math.radians(latitude)
    return math.sin(lat) * math.sin(declination) + math.cos(lat) * math.cos(declination) * math.cos(
        hour_angle
    )


def occupancy(ts: datetime) -> float:
    hour = ts.hour + ts.minute / 60
    weekday = ts.weekday()
    if weekday == 6:
        return 0.05
    peak = 1.0 if weekday < 5 else 0.3
    if 8 <= hour < 18:
        return peak
    if 7 <= hour < 8 or 18 <= hour < 20:
        return peak * 0.4
    return 0.05


def relative_humidity(site: SiteProfile, temperature: float) -> float:
    return min(100.0, max(15.0, 70.0 - 1.5 * (temperature - site.mean_temp)))


def true_value(sensor: str, site: SiteProfile, ts: datetime, interval_h: float) -> float:
    temp = outdoor_temperature(site, ts)
    if sensor == "temperature":
        return temp
    if sensor == "humidity":
        return relative_humidity(site, temp)
    if sensor == "squarefootage":
        return site.floor_area
    if sensor == "renewableenergy":
        sun = max(0.0, solar_elevation_sine(site.latitude, ts))
        return site.pv_kw * sun * (1.0 - 0.7 * site.cloud) * interval_h
    if sensor == "energyconsumption":
        watts_per_ft2 = (
            site.base_w_per_ft2
            + site.hvac_w_per_ft2_per_deg * abs(temp - 18.0)
            + site.occupancy_w_per_ft2 * occupancy(ts)
        )
        return watts_per_ft2 * site.floor_area / 1000.0 * interval_h
    raise ValueError(f"unknown sensor {sensor}")


_NOISE_SD = {
    "temperature": 0.2,
    "humidity": 1.0,
    "squarefootage": 0.05,
    "renewableenergy": 0.01,
    "energyconsumption": 0.02,
}


def generate(config: SimulationConfig) -> Iterator[Reading]:
    """All readings in time order (then site, sensor, device), the same for the same config."""
    sites = [SiteProfile.draw(config.seed, i) for i in range(config.sites)]
    site_ids = config.site_ids()
    device_rngs = {
        (si, sensor, d): np.random.default_rng([config.seed, si, 2 + SENSOR_NAMES.index(sensor), d])
        for si in range(config.sites)
        for sensor in config.sensors
        for d in range(config.devices)
    }
    last: dict[tuple[int, str, int], float] = {}
    seq: dict[tuple[int, str, int], int] = {}
    interval_h = config.interval.total_seconds() / 3600
    for step in range(config.steps):
        ts = config.start + step * config.interval
        hour_index = int((ts - config.start).total_seconds() // 3600)
        for si, site in enumerate(sites):
            site.advance_weather(hour_index)
            for sensor in config.sensors:
                base = true_value(sensor, site, ts, interval_h)
                spec = SENSORS[sensor]
                for d in range(config.devices):
                    key = (si, sensor, d)
                    rng = device_rngs[key]
                    scale = _NOISE_SD[sensor] * (
                        abs(base) if sensor in {"energyconsumption", "renewableenergy"} else 1.0
                    )
                    value = base + float(rng.normal(0, scale))
                    if config.fault_rate and rng.random() < config.fault_rate:
                        value = last.get(key, value) if rng.random() < 0.5 else value * 3
                    value = round(min(spec.maximum, max(spec.minimum, value)), 4)
                    last[key] = value
                    seq[key] = seq.get(key, -1) + 1
                    yield Reading(site_ids[si], sensor, str(d), ts, value, seq[key])


# Forecast weather (issue #20): what a weather service would have said about the site's
# coming hours. The error of a temperature forecast grows with its lead time (roughly 0.6 degC
# an hour ahead, 1.3 a day ahead, 2.6 a week ahead, in line with published verification of
# numerical weather prediction) and is smooth across neighbouring hours (AR(1) in the lead
# time, phi 0.9), as a forecast that misses a front misses it for hours.
WEATHER_SOURCE = "simulator"
FORECAST_ERROR_PHI = 0.9


def forecast_error_sd(lead_hours: int) -> float:
    """The standard deviation of the simulated temperature forecast's error, in degC."""
    return 0.5 + 0.8 * math.sqrt(lead_hours / 24)


def forecast_weather(
    site: SiteProfile, site_id: str, start: datetime, hour_index: int, hours: int,
    error_rng: np.random.Generator, error_scale: float = 1.0,
) -> WeatherForecast:
    """The forecast issued at hour `hour_index` after `start` (the site's weather advanced to
    it) for the next `hours` hours: the site's own future weather, run ahead on a copy so the
    simulation itself is untouched, plus the lead-time error drawn from `error_rng`."""
    issued_at = start + timedelta(hours=hour_index)
    ahead = copy.deepcopy(site)
    z = float(error_rng.normal())
    points = []
    for lead in range(1, hours + 1):
        ahead.advance_weather(hour_index + lead)
        if lead > 1:
            innovation = math.sqrt(1 - FORECAST_ERROR_PHI**2) * float(error_rng.normal())
            z = FORECAST_ERROR_PHI * z + innovation
        valid_time = issued_at + timedelta(hours=lead)
        temperature = outdoor_temperature(ahead, valid_time)
        temperature += error_scale * forecast_error_sd(lead) * z
        # Humidity as the site's sensors would see it at that forecast temperature.
        humidity = relative_humidity(site, temperature)
        points.append(WeatherPoint(valid_time, (("temperature", round(temperature, 2)),
                                                ("humidity", round(humidity, 1)))))
    return WeatherForecast(site_id, WEATHER_SOURCE, issued_at, tuple(points))


# A run's forecasts are issued as a weather service issues its runs: at the UTC hours that are
# multiples of FORECAST_EVERY_HOURS, each for the next FORECAST_HOURS hours, hourly.
FORECAST_EVERY_HOURS = 6
FORECAST_HOURS = 48
# The error's random stream per site: apart from the sites' ([seed, site, 0..1]) and the
# devices' ([seed, site, 2.., device]) streams, and from those with trailing zeros too.
_FORECAST_STREAM = 1000


def _first_hour(config: SimulationConfig) -> datetime:
    """The first UTC hour at or after the run's start."""
    hour = config.start.replace(minute=0, second=0, microsecond=0)
    return hour if hour >= config.start else hour + timedelta(hours=1)


def forecast_issue_times(config: SimulationConfig,
                         every_hours: int = FORECAST_EVERY_HOURS) -> Iterator[datetime]:
    """When the run issues forecasts: each UTC hour divisible by `every_hours` within its
    window (without end for an endless --realtime run)."""
    first = _first_hour(config)
    span_h = config.steps * config.interval.total_seconds() / 3600
    offset_h = (first - config.start).total_seconds() / 3600
    hour = -first.hour % every_hours
    while offset_h + hour < span_h:
        yield first + timedelta(hours=hour)
        hour += every_hours


def forecast_issues(
    config: SimulationConfig, every_hours: int = FORECAST_EVERY_HOURS,
    hours: int = FORECAST_HOURS, error_scale: float = 1.0,
) -> Iterator[WeatherForecast]:
    """The forecasts a run issues (`forecast_issue_times`, then site order), each from the
    weather its readings (`generate`) follow.

    The weather moves at the hours counted from the run's start; counted from its first UTC
    hour instead, a whole hour k after it has weather hour k too, so `forecast_weather`
    forecasts UTC hours from exactly the weather the readings of those hours have."""
    first = _first_hour(config)
    sites = [SiteProfile.draw(config.seed, i) for i in range(config.sites)]
    errors = [np.random.default_rng([config.seed, i, _FORECAST_STREAM])
              for i in range(config.sites)]
    site_ids = config.site_ids()
    for site in sites:
        site.advance_weather(0)  # the first step, as `generate` takes it at the first reading
    for issued_at in forecast_issue_times(config, every_hours):
        hour_index = int((issued_at - first) / timedelta(hours=1))
        for si, site in enumerate(sites):
            site.advance_weather(hour_index)
            yield forecast_weather(site, site_ids[si], first, hour_index, hours, errors[si],
                                   error_scale)
