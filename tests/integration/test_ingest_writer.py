"""The ingest write path against PostgreSQL: every reading stored once, counted once.

write_readings COPYs a batch straight into `readings` (the fast path) and falls back to the
exact staging merge when any reading of the batch is already stored or in it twice; either
way `hourly_features` must equal a recomputation from `readings`.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import psycopg2
import pytest
from energy_pipeline.core.contracts import SENSOR_NAMES, Reading
from energy_pipeline.db import writer
from energy_pipeline.db.writer import WriteResult, write_readings
from psycopg2.extensions import connection as Connection

pytestmark = pytest.mark.integration

START = datetime(2025, 1, 1, tzinfo=UTC)


def batch(count: int, offset: int = 0, site_count: int = 3) -> list[Reading]:
    """Distinct readings spread over sites, sensors and a few hours."""
    rng = random.Random(offset)
    out = []
    for i in range(offset, offset + count):
        sensor = SENSOR_NAMES[i % len(SENSOR_NAMES)]
        ts = START + timedelta(seconds=7 * (i // len(SENSOR_NAMES)), microseconds=i % 3 * 1000)
        out.append(
            Reading(f"site-{i % site_count}", sensor, str(i % 4), ts, round(rng.uniform(0, 60), 3))
        )
    return out


@pytest.fixture
def conn(database: str) -> Iterator[Connection]:
    connection = psycopg2.connect(database)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often each path ran."""
    calls = {"fast": 0, "exact": 0}
    for name, function in (("fast", writer._write_fast), ("exact", writer._write_exact)):

        def counted(*args: object, _name: str = name, _function: object = function) -> object:
            calls[_name] += 1
            return _function(*args)  # type: ignore[operator]

        monkeypatch.setattr(writer, f"_write_{name}", counted)
    return calls


def write(conn: Connection, readings: list[Reading]) -> WriteResult:
    with conn:
        return write_readings(conn, readings)


def stored(conn: Connection) -> list[tuple[object, ...]]:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT site_id, sensor, device_id, ts, value FROM readings")
        return cur.fetchall()


def assert_hourly_features_match_readings(conn: Connection) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(
            """SELECT site_id, date_trunc('hour', ts, 'UTC'), sensor, sum(value), count(*)
               FROM readings GROUP BY 1, 2, 3"""
        )
        recomputed = {(s, h, sensor): (total, n) for s, h, sensor, total, n in cur.fetchall()}
        columns = ", ".join(f"sum_{s}, n_{s}" for s in SENSOR_NAMES)
        cur.execute(f"SELECT site_id, hour, {columns}, n_readings FROM hourly_features")
        rows = cur.fetchall()
    assert {(r[0], r[1]) for r in rows} == {(s, h) for s, h, _ in recomputed}
    for site, hour, *values, n_readings in rows:
        assert n_readings == sum(recomputed.get((site, hour, s), (0, 0))[1] for s in SENSOR_NAMES)
        for i, sensor in enumerate(SENSOR_NAMES):
            total, n = values[2 * i : 2 * i + 2]
            want_total, want_n = recomputed.get((site, hour, sensor), (0.0, 0))
            assert n == want_n, (site, hour, sensor)
            assert math.isclose(total, want_total, rel_tol=1e-9, abs_tol=1e-9), (site, hour, sensor)


def expected_hours(readings: list[Reading]) -> list[tuple[str, datetime, int]]:
    counts: dict[tuple[str, datetime], int] = {}
    for r in readings:
        key = (r.site, r.ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0))
        counts[key] = counts.get(key, 0) + 1
    return [(site, hour, n) for (site, hour), n in sorted(counts.items())]


def test_a_new_batch_is_copied_straight_in(conn: Connection, paths: dict[str, int]) -> None:
    readings = batch(3000)
    result = write(conn, readings)
    assert paths == {"fast": 1, "exact": 0}
    assert (result.received, result.inserted, result.duplicates) == (3000, 3000, 0)
    assert list(result.hours) == expected_hours(readings)
    assert sorted(stored(conn)) == sorted(
        (r.site, r.sensor, r.device, r.ts, r.value) for r in readings
    )
    assert_hourly_features_match_readings(conn)
    # Another new batch adds to the same hours.
    more = batch(2000, offset=3000)
    assert write(conn, more).inserted == 2000
    assert paths == {"fast": 2, "exact": 0}
    assert len(stored(conn)) == 5000
    assert_hourly_features_match_readings(conn)


def test_a_redelivered_batch_is_neither_stored_nor_counted_again(
    conn: Connection, paths: dict[str, int]
) -> None:
    readings = batch(2000)
    write(conn, readings)
    again = write(conn, readings)
    assert paths == {"fast": 2, "exact": 1}
    assert (again.received, again.inserted, again.duplicates, again.hours) == (2000, 0, 2000, ())
    assert len(stored(conn)) == 2000
    assert_hourly_features_match_readings(conn)


def test_a_partly_redelivered_batch_adds_only_what_is_new(
    conn: Connection, paths: dict[str, int]
) -> None:
    old = batch(1500)
    write(conn, old)
    new = batch(1000, offset=1500)
    # New readings first: the COPY has stored them in its savepoint before it meets an old
    # one, and the rollback must leave nothing of them behind.
    result = write(conn, new + old[-500:])
    assert paths == {"fast": 2, "exact": 1}
    assert (result.received, result.inserted, result.duplicates) == (1500, 1000, 500)
    assert list(result.hours) == expected_hours(new)
    assert len(stored(conn)) == 2500
    assert_hourly_features_match_readings(conn)
    # The transaction goes on normally after a fallback, and the next batch is fast again.
    assert write(conn, batch(100, offset=5000)).inserted == 100
    assert paths == {"fast": 3, "exact": 1}
    assert_hourly_features_match_readings(conn)


def test_a_reading_twice_in_one_batch_is_stored_once(
    conn: Connection, paths: dict[str, int]
) -> None:
    readings = batch(1000)
    result = write(conn, [*readings[:600], readings[10], *readings[600:]])
    assert paths == {"fast": 1, "exact": 1}
    assert (result.received, result.inserted, result.duplicates) == (1001, 1000, 1)
    assert list(result.hours) == expected_hours(readings)
    assert len(stored(conn)) == 1000
    assert_hourly_features_match_readings(conn)


def test_fast_false_goes_straight_to_the_exact_path(
    conn: Connection, paths: dict[str, int]
) -> None:
    result = write_readings(conn, batch(10), fast=False)
    conn.commit()
    assert paths == {"fast": 0, "exact": 1}
    assert result.inserted == 10
    assert write_readings(conn, []) == WriteResult(0, 0, ())


def test_hours_are_utc_hours_whatever_the_offset(conn: Connection) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    readings = [
        # 05:15 and 05:59:59.999999 UTC: one hour; 06:00 UTC the next.
        Reading("s", "temperature", "0", datetime(2025, 1, 1, 10, 45, tzinfo=india), 1.0),
        Reading("s", "temperature", "1", datetime(2025, 1, 1, 5, 59, 59, 999999, tzinfo=UTC), 2.0),
        Reading("s", "humidity", "0", datetime(2025, 1, 1, 11, 30, tzinfo=india), 3.0),
        # The same instant as the first, with another offset.
        Reading("s", "humidity", "1", datetime(2025, 1, 1, 5, 15, tzinfo=UTC), 4.0),
    ]
    result = write(conn, readings)
    assert list(result.hours) == [
        ("s", datetime(2025, 1, 1, 5, tzinfo=UTC), 3),
        ("s", datetime(2025, 1, 1, 6, tzinfo=UTC), 1),
    ]
    stored_ts = sorted(row[3] for row in stored(conn))
    assert stored_ts == sorted(r.ts for r in readings)
    assert stored_ts[0].astimezone(UTC).microsecond == 0
    assert max(stored_ts).astimezone(UTC) == datetime(2025, 1, 1, 6, tzinfo=UTC)
    assert_hourly_features_match_readings(conn)


def test_concurrent_writers_of_overlapping_batches_store_everything_once(database: str) -> None:
    """Two ingest workers after a rebalance: the old owner's batch and the new owner's replay
    of it, written at the same time."""
    readings = batch(6000)
    chunks = [readings[i : i + 1000] for i in range(0, 6000, 1000)]
    plans = [chunks, [chunks[i] for i in (1, 0, 3, 2, 5, 4)]]
    inserted = [0, 0]
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        connection = psycopg2.connect(database)
        try:
            for chunk in plans[index]:
                while True:  # as ingest does: retry the batch on any database error
                    try:
                        with connection:
                            inserted[index] += write_readings(connection, chunk).inserted
                        break
                    except psycopg2.errors.DeadlockDetected:
                        continue
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures
    assert sum(inserted) == 6000
    connection = psycopg2.connect(database)
    try:
        assert len(stored(connection)) == 6000
        assert_hourly_features_match_readings(connection)
    finally:
        connection.close()
