"""Keyset paging of readings over fake streams, and the connection pool over fake connections."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from energy_pipeline.api.params import Common, ReadingsQuery
from energy_pipeline.api.pool import ConnectionPool, Deadline, QueryTimeout
from energy_pipeline.api.queries import collect_readings
from energy_pipeline.contracts import SENSOR_NAMES

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

    def rows_of(self, sensor: str, device: str, after: datetime | None,
                n: int) -> list[tuple[datetime, float]]:
        self.row_calls.append(n)
        found = [ts for ts in DATA.get((sensor, device), [])
                 if WINDOW[0] <= ts < WINDOW[1] and (after is None or ts > after)]
        return [(ts, 1.0) for ts in found[:n]]


def expected(sensors: tuple[str, ...], devices: tuple[str, ...] | None) -> list[tuple]:
    out = []
    for sensor in sensors:
        names = devices if devices is not None else sorted(d for s, d in DATA if s == sensor)
        for device in names:
            out += [(sensor, device, ts, 1.0) for ts in DATA.get((sensor, device), [])
                    if WINDOW[0] <= ts < WINDOW[1]]
    return out


def walk(limit: int, sensors: tuple[str, ...] = SENSOR_NAMES,
         devices: tuple[str, ...] | None = None) -> tuple[list[list[tuple]], FakeDb]:
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


# ---- pool ----------------------------------------------------------------------------------


class FakeCursor:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, args: Any = None) -> None:
        self.conn.executed.append(sql)
        if self.conn.fail_next is not None:
            error, self.conn.fail_next = self.conn.fail_next, None
            if isinstance(error, psycopg2.OperationalError) and \
                    not isinstance(error, psycopg2.errors.QueryCanceled):
                self.conn.closed = 2  # what psycopg2 does when the server went away
            raise error


class FakeConn:
    opened = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        FakeConn.opened += 1
        self.kwargs = kwargs
        self.closed = 0
        self.executed: list[str] = []
        self.session: dict[str, Any] = {}
        self.fail_next: Exception | None = None
        self.rollbacks = 0

    def set_session(self, **kwargs: Any) -> None:
        self.session = kwargs

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        if self.closed:
            raise psycopg2.InterfaceError("connection already closed")
        self.rollbacks += 1

    def close(self) -> None:
        self.closed = 1


@pytest.fixture
def pool() -> Any:
    FakeConn.opened = 0
    p = ConnectionPool("postgresql://x/y", 2, 1234, application_name="t", connect=FakeConn)
    yield p
    p.close()


def use(conn: Any) -> Any:
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    return conn


def test_connections_are_configured_reused_and_rolled_back(pool: ConnectionPool) -> None:
    first = pool.call(use)
    assert first.session == {"isolation_level": 2, "readonly": True}
    assert first.executed[:2] == ["SET statement_timeout = %s", "SET TIME ZONE 'UTC'"]
    assert first.kwargs["application_name"] == "t" and first.kwargs["keepalives"] == 1
    assert pool.call(use) is first and first.rollbacks == 2
    assert FakeConn.opened == 1 and pool.stats() == (0, 1)


def test_a_dead_reused_connection_is_replaced_once(pool: ConnectionPool) -> None:
    first = pool.call(use)
    first.fail_next = psycopg2.OperationalError("server closed the connection unexpectedly")
    second = pool.call(use)
    assert second is not first and first.closed and FakeConn.opened == 2
    assert pool.stats() == (0, 1)


def test_a_fresh_connection_failing_is_not_retried(pool: ConnectionPool) -> None:
    def fail(conn: Any) -> None:
        conn.fail_next = psycopg2.OperationalError("boom")
        use(conn)

    with pytest.raises(psycopg2.OperationalError):
        pool.call(fail)
    assert FakeConn.opened == 1 and pool.stats() == (0, 0)


def test_statement_timeout_is_a_query_timeout_and_keeps_the_connection(
    pool: ConnectionPool,
) -> None:
    def slow(conn: Any) -> None:
        conn.fail_next = psycopg2.errors.QueryCanceled("canceling statement due to timeout")
        use(conn)

    with pytest.raises(QueryTimeout, match="statement_timeout=1234ms"):
        pool.call(slow)
    assert pool.stats() == (0, 1) and FakeConn.opened == 1


def test_closed_pool_refuses_and_closes_idle(pool: ConnectionPool) -> None:
    conn = pool.call(use)
    pool.close()
    assert conn.closed
    with pytest.raises(RuntimeError, match="closed"):
        pool.call(use)
