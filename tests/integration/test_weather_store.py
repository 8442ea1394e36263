"""Forecast weather in PostgreSQL (issue #20): every issue stored once with its issue time,
and read back as each origin would have known it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg2
import pytest
from energy_pipeline.core.contracts import WeatherForecast, WeatherPoint
from energy_pipeline.db.writer import write_weather
from energy_pipeline.forecasting.hourly_db import read_site_weather
from psycopg2.extensions import connection as Connection

pytestmark = pytest.mark.integration

START = datetime(2025, 3, 1, tzinfo=UTC)


def issue(site: str, source: str, at_hour: int, hours: int, base: float) -> WeatherForecast:
    issued = START + timedelta(hours=at_hour, minutes=10)
    return WeatherForecast(site, source, issued, tuple(
        WeatherPoint(START + timedelta(hours=at_hour + lead),
                     (("temperature", base + lead),) if lead % 5 else
                     (("temperature", base + lead), ("humidity", 50.0)))
        for lead in range(1, hours + 1)))


@pytest.fixture
def conn(database: str) -> Iterator[Connection]:
    connection = psycopg2.connect(database)
    try:
        yield connection
    finally:
        connection.close()


def test_each_issue_is_stored_once_and_read_as_of_the_origin(conn: Connection) -> None:
    first, second = issue("w-1", "met", 0, 48, 0.0), issue("w-1", "met", 6, 48, 100.0)
    other_site = issue("w-2", "met", 0, 48, 500.0)
    assert write_weather(conn, [first, second, other_site]) == 3 * 48
    # Kafka redelivers a record; the source sends an issue again with other values.
    changed = WeatherForecast("w-1", "met", first.issued_at, tuple(
        WeatherPoint(p.valid_time, (("temperature", -99.0),)) for p in first.points))
    assert write_weather(conn, [first, changed]) == 0
    conn.commit()

    until = START + timedelta(days=3)
    series = read_site_weather(conn, "w-1", START, until)
    assert sorted(series) == ["humidity", "temperature"]
    temperature = series["temperature"]
    assert len(temperature) == 2 * 48
    # Hour 10 at an origin of 06:00 (before the second issue at 06:10): the first issue.
    hour = np.datetime64("2025-03-01T10", "h")
    value, issued = temperature.as_of(np.array([np.datetime64("2025-03-01T06:00", "s")]),
                                      np.array([hour]))
    assert value[0] == 10.0 and issued[0] == np.datetime64("2025-03-01T00:10", "s")
    value, _ = temperature.as_of(np.array([np.datetime64("2025-03-01T07:00", "s")]),
                                 np.array([hour]))
    assert value[0] == 104.0  # the second issue, 4 h ahead
    # Humidity only where an issue forecast it (every fifth lead).
    assert len(series["humidity"]) == 2 * (48 // 5)
    # An issue made after `until` is not read, as a model there could not hold it.
    early = read_site_weather(conn, "w-1", START, START + timedelta(hours=6))
    assert len(early["temperature"]) == 48
    assert read_site_weather(conn, "nowhere", START, until) == {}
