"""The ingest write path: a batch of readings into `readings` and `hourly_features`.

Idempotent: a redelivered reading is neither stored twice nor counted twice. Two paths, one
result:

- fast (the usual case, no reading of the batch is stored yet): inside a savepoint, COPY the
  batch straight into `readings`, then add the batch's per-(site, hour) sums, computed here,
  to `hourly_features` in one upsert. The primary key makes the COPY fail on any reading
  that is already stored or that the batch holds twice.
- exact (after such a failure: redelivery after a crash or a rebalance): roll back to the
  savepoint, COPY into a temporary staging table, insert what is new into `readings`
  (ON CONFLICT DO NOTHING) and add exactly those new rows to the hourly sums.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg2.errors
import psycopg2.extras

from energy_pipeline.core.contracts import SENSOR_NAMES, WEATHER_VARIABLES, Reading, WeatherForecast

_COLUMNS = "site_id, sensor, device_id, ts, value"

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    site_id text, sensor text, device_id text, ts timestamptz, value double precision
) ON COMMIT DELETE ROWS
"""

_SUM_COLUMNS = ", ".join(f"sum_{s}, n_{s}" for s in SENSOR_NAMES)
_AGGREGATES = ",\n        ".join(
    f"coalesce(sum(value) FILTER (WHERE sensor = '{s}'), 0) AS sum_{s}, "
    f"count(*) FILTER (WHERE sensor = '{s}') AS n_{s}"
    for s in SENSOR_NAMES
)
_ADD_UP = ",\n        ".join(
    f"sum_{s} = hourly_features.sum_{s} + EXCLUDED.sum_{s}, "
    f"n_{s} = hourly_features.n_{s} + EXCLUDED.n_{s}"
    for s in SENSOR_NAMES
)

_MERGE = f"""
WITH new_rows AS (
    INSERT INTO readings ({_COLUMNS})
    SELECT {_COLUMNS} FROM staging_readings
    ON CONFLICT DO NOTHING
    RETURNING site_id, sensor, ts, value
), per_hour AS (
    SELECT site_id, date_trunc('hour', ts, 'UTC') AS hour, count(*) AS n,
        {_AGGREGATES}
    FROM new_rows
    GROUP BY 1, 2
), added AS (
    -- Ordered so concurrent ingest workers lock hourly rows in the same order: no deadlocks.
    INSERT INTO hourly_features (site_id, hour, {_SUM_COLUMNS})
    SELECT site_id, hour, {_SUM_COLUMNS}
    FROM (SELECT * FROM per_hour ORDER BY site_id, hour) ordered
    ON CONFLICT (site_id, hour) DO UPDATE SET
        {_ADD_UP},
        updated_at = now()
    RETURNING 1
)
-- Data-modifying CTEs always run to completion, whether or not this SELECT reads them.
SELECT site_id, hour, n FROM per_hour ORDER BY site_id, hour
"""

# The fast path's sums: one row per (site, hour), locked in (site, hour) order as above.
_ADD_HOURS = f"""
INSERT INTO hourly_features (site_id, hour, {_SUM_COLUMNS})
SELECT site_id, hour, {_SUM_COLUMNS}
FROM (VALUES {{rows}}) AS v (site_id, hour, {_SUM_COLUMNS})
ORDER BY site_id, hour
ON CONFLICT (site_id, hour) DO UPDATE SET
    {_ADD_UP},
    updated_at = now()
"""
_HOUR_ROW = (
    "(%s, %s::timestamptz, " + ", ".join(["%s::float8, %s::bigint"] * len(SENSOR_NAMES)) + ")"
)
_SENSOR_INDEX = {s: i for i, s in enumerate(SENSOR_NAMES)}


@dataclass(frozen=True)
class WriteResult:
    received: int
    inserted: int
    # (site, hour) pairs that gained readings, with how many each, in (site, hour) order.
    hours: tuple[tuple[str, datetime, int], ...]

    @property
    def duplicates(self) -> int:
        return self.received - self.inserted


def _ts_text(ts: datetime) -> str:
    """The timestamp for COPY, in UTC with an explicit offset."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)  # as format_ts does (a naive value counts as local time)
    return ts.isoformat()


@dataclass(frozen=True)
class PreparedBatch:
    """A batch ready for the database: what prepare() can do without it."""

    received: int
    # The readings in COPY text format.
    copy_data: bytes
    # The fast path's hourly upsert: its parameters, and its (site, hour, n) in order.
    hour_params: tuple[object, ...]
    hours: tuple[tuple[str, datetime, int], ...]


def prepare(readings: Sequence[Reading]) -> PreparedBatch:
    """COPY text and per-(site, hour) sums of a batch, in one pass over it."""
    # Ids are validated against [A-Za-z0-9_.-], so no COPY escaping is needed.
    lines = []
    append = lines.append
    sensor_index = _SENSOR_INDEX
    # (site, "YYYY-MM-DDTHH" in UTC) -> per sensor: [sum, count]
    sums: dict[tuple[str, str], list[list[float]]] = {}
    # Timestamps repeat (a device's sensors report together) and formatting is the costly
    # part; equal instants have the same UTC text whatever their offsets.
    texts: dict[datetime, str] = {}
    for r in readings:
        ts = r.ts
        text = texts.get(ts)
        if text is None:
            text = texts[ts] = ts.isoformat() if ts.tzinfo is UTC else _ts_text(ts)
        value = r.value
        append(f"{r.site}\t{r.sensor}\t{r.device}\t{text}\t{value!r}\n")
        key = (r.site, text[:13])
        per_sensor = sums.get(key)
        if per_sensor is None:
            per_sensor = sums[key] = [[0.0, 0] for _ in SENSOR_NAMES]
        cell = per_sensor[sensor_index[r.sensor]]
        cell[0] += value
        cell[1] += 1
    params: list[object] = []
    hours = []
    for site, hour_text in sorted(sums):
        hour = datetime.fromisoformat(hour_text + ":00:00+00:00")
        per_sensor = sums[(site, hour_text)]
        params += (site, hour)
        for total, n in per_sensor:
            params += (total, n)
        hours.append((site, hour, sum(int(n) for _, n in per_sensor)))
    return PreparedBatch(len(readings), "".join(lines).encode(), tuple(params), tuple(hours))


def _copy(cur, table: str, batch: PreparedBatch) -> None:  # noqa: ANN001
    cur.copy_expert(f"COPY {table} ({_COLUMNS}) FROM STDIN", io.BytesIO(batch.copy_data), 1 << 20)


def _write_fast(cur, batch: PreparedBatch) -> WriteResult | None:  # noqa: ANN001
    """COPY straight into `readings`; None (rolled back) if any reading is already there."""
    cur.execute("SAVEPOINT ingest_fast")
    try:
        _copy(cur, "readings", batch)
    except psycopg2.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT ingest_fast")
        return None
    cur.execute("RELEASE SAVEPOINT ingest_fast")
    cur.execute(
        _ADD_HOURS.format(rows=", ".join([_HOUR_ROW] * len(batch.hours))), batch.hour_params
    )
    return WriteResult(batch.received, batch.received, batch.hours)


def _write_exact(cur, batch: PreparedBatch) -> WriteResult:  # noqa: ANN001
    """Stores and counts only the readings that are new."""
    cur.execute(_STAGING)
    _copy(cur, "staging_readings", batch)
    cur.execute(_MERGE)
    hours = tuple((site, hour, int(n)) for site, hour, n in cur.fetchall())
    cur.execute("TRUNCATE staging_readings")
    return WriteResult(batch.received, sum(n for _, _, n in hours), hours)


def write_prepared(conn, batch: PreparedBatch, fast: bool = True) -> WriteResult:  # noqa: ANN001
    """Write one prepared batch in the caller's transaction; the caller commits.

    `fast=False` goes straight to the exact path (for a batch known to hold duplicates).
    """
    if not batch.received:
        return WriteResult(0, 0, ())
    with conn.cursor() as cur:
        if fast:
            result = _write_fast(cur, batch)
            if result is not None:
                return result
        return _write_exact(cur, batch)


def write_readings(conn, readings: Sequence[Reading], fast: bool = True) -> WriteResult:  # noqa: ANN001
    """Write one batch in the caller's transaction; the caller commits."""
    return write_prepared(conn, prepare(readings), fast)


@dataclass(frozen=True)
class Gap:
    """Offsets first..last of one partition that were gone before ingest could store them."""

    topic: str
    partition: int
    first: int
    last: int

    @property
    def records(self) -> int:
        return self.last - self.first + 1


def record_offsets(conn, consumer_group: str, offsets: Sequence[tuple[str, int, int]]  # noqa: ANN001
                   ) -> None:
    """Record, in the caller's transaction, that this database holds each (topic, partition)
    up to the offset before `next_offset`. Never moves backwards: an old owner of a
    partition finishing its last batch after a rebalance does not undo the new owner's."""
    if not offsets:
        return
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO ingest_offsets (consumer_group, topic, partition, next_offset)
               VALUES (%s, %s, %s, %s)
               ON CONFLICT (consumer_group, topic, partition) DO UPDATE
               SET next_offset = GREATEST(ingest_offsets.next_offset, EXCLUDED.next_offset),
                   updated_at = now()""",
            [(consumer_group, topic, partition, offset) for topic, partition, offset in offsets],
        )


def stored_offsets(conn, consumer_group: str) -> dict[tuple[str, int], int]:  # noqa: ANN001
    """Per (topic, partition), one past the last offset this database holds for the group."""
    with conn.cursor() as cur:
        cur.execute("SELECT topic, partition, next_offset FROM ingest_offsets "
                    "WHERE consumer_group = %s", (consumer_group,))
        return {(topic, partition): offset for topic, partition, offset in cur.fetchall()}


def record_gaps(conn, consumer_group: str, gaps: Sequence[Gap]) -> None:  # noqa: ANN001
    """Record `gaps` in the caller's transaction (a replay of the batch records nothing new)."""
    if not gaps:
        return
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO ingest_lost_records
                   (consumer_group, topic, partition, first_offset, last_offset, records)
               VALUES (%s, %s, %s, %s, %s, %s)
               ON CONFLICT DO NOTHING""",
            [(consumer_group, g.topic, g.partition, g.first, g.last, g.records) for g in gaps],
        )


_WEATHER_COLUMNS = ("site_id", "valid_time", "issued_at", "source", *WEATHER_VARIABLES)


def write_weather(conn, forecasts: Sequence[WeatherForecast]) -> int:  # noqa: ANN001
    """Store forecast weather in the caller's transaction, one row per issue and hour; returns
    the rows that are new. A record replayed from Kafka, or an issue its source sent again,
    changes nothing (ON CONFLICT DO NOTHING: what was forecast stays as first received)."""
    rows = [
        (f.site, p.valid_time, f.issued_at, f.source,
         *(dict(p.values).get(name) for name in WEATHER_VARIABLES))
        for f in forecasts for p in f.points
    ]
    if not rows:
        return 0
    with conn.cursor() as cur:
        new = psycopg2.extras.execute_values(
            cur,
            f"INSERT INTO weather_forecasts ({', '.join(_WEATHER_COLUMNS)}) VALUES %s "
            "ON CONFLICT DO NOTHING RETURNING 1",
            rows, page_size=1000, fetch=True,
        )
    return len(new)
