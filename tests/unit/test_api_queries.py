"""Keyset paging of readings over in-memory streams (the pure paging logic; the queries and
the connection pool run against real PostgreSQL in tests/integration)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from energy_pipeline.api.params import Common, ReadingsQuery
from energy_pipeline.api.pool import Deadline, QueryTimeout
from energy_pipeline.api.queries import collect_readings
from energy_pipeline.core.contracts import SENSOR_NAMES

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 1, tzinfo=UTC)
# Uneven streams: some devices missing for some sensors, one stream empty in the window.
DATA: dict[tuple[str, str], list[datetime]] = {
    ("temperature", "0"): [T0 + timedelta(minutes=i) for i in range(7)],
    ("temperature", "1"): [T0 + timedelta(minutes=i) for i in range(3)],
    ("humidity", "1"): [T0 + timedelta(minutes=i) for i in range(5)],
    ("humidity", "2"): [T0 - timedelta(days=1)],  # outside the window
    ("energyconsumption", "0"): [T0 + timedelta(minutes=i) for i in range(4)],
}
WINDOW = (T0, T0 + timedelta(hours=1))


class FakeDb:
    def __init__(self) -> None:
        self.row_calls: list[int] = []

    def devices_of(self, sensor: str, start: str | None) -> list[str]:
        return sorted(d for s, d in DATA if s == sensor and d >= (start or ""))

    def rows_of(
        self, sensor: str, device: str, after: datetime | None, n: int
    ) -> list[tuple[datetime, float]]:
        self.row_calls.append(n)
        found = [
            ts
            for ts in DATA.get((sensor, device), [])
            if WINDOW[0] <= ts < WINDOW[1] and (after is None or ts > after)
        ]
        return [(ts, 1.0) for ts in found[:n]]


def expected(sensors: tuple[str, ...], devices: tuple[str, ...] | None) -> list[tuple]:
    out = []
    for sensor in sensors:
        names = devices if devices is not None else sorted(d for s, d in DATA if s == sensor)
        for device in names:
            out += [
                (sensor, device, ts, 1.0)
                for ts in DATA.get((sensor, device), [])
                if WINDOW[0] <= ts < WINDOW[1]
            ]
    return out


def walk(
    limit: int, sensors: tuple[str, ...] = SENSOR_NAMES, devices: tuple[str, ...] | None = None
) -> tuple[list[list[tuple]], FakeDb]:
    db, pages, after = FakeDb(), [], None
    for _ in range(100):
        q = ReadingsQuery("s", sensors, devices, *WINDOW, Common(limit, None), after)
        page = collect_readings(q, db.devices_of, db.rows_of, lambda: None)
        pages.append(page.rows)
        if page.next_key is None:
            return pages, db
        assert page.next_key == page.rows[-1][:3]
        after = page.next_key
    raise AssertionError("did not end")


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 7, 18, 19, 100])
def test_pages_cover_every_row_once_in_key_order(limit: int) -> None:
    pages, db = walk(limit)
    rows = list(itertools.chain.from_iterable(pages))
    assert rows == expected(SENSOR_NAMES, None) and len(rows) == 19
    assert all(len(p) == limit for p in pages[:-1]) and 0 < len(pages[-1]) <= limit
    # A page never asks a stream for more than it can use (limit + 1 to see if more exist).
    assert max(db.row_calls) <= limit + 1


def test_no_empty_last_page_when_rows_divide_evenly() -> None:
    pages, _ = walk(19)
    assert [len(p) for p in pages] == [19]


@pytest.mark.parametrize("limit", [1, 2, 4, 100])
def test_explicit_devices_in_their_given_order(limit: int) -> None:
    sensors, devices = ("temperature", "humidity"), ("1", "0", "9")
    pages, _ = walk(limit, sensors, devices)
    assert list(itertools.chain.from_iterable(pages)) == expected(sensors, devices)


def test_deadline_is_checked_per_stream() -> None:
    q = ReadingsQuery("s", SENSOR_NAMES, None, *WINDOW, Common(100, None), None)
    calls = []
    collect_readings(q, FakeDb().devices_of, FakeDb().rows_of, lambda: calls.append(1))
    assert len(calls) == len(DATA)
    with pytest.raises(QueryTimeout, match="budget"):
        deadline = Deadline(0)
        collect_readings(q, FakeDb().devices_of, FakeDb().rows_of, deadline.check)
