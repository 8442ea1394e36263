"""The API's SQL, each page fetched on one connection (called in a query thread).

Every statement is an index range scan on a primary key, bounded by the page size:
- sites: a loose index scan ("skip scan" by recursive CTE) over hourly_features' key, so
  listing sites costs one index descent per site, not a scan of every hour;
- readings: key (site_id, sensor, device_id, ts). A page walks the streams (sensor, device)
  of the site in key order and reads each one's [from, to) range, resuming after the
  cursor. One query over all streams would make PostgreSQL walk every stream's whole
  history outside the window, since ts is the last key column;
- hourly: key (site_id, hour); forecasts: key (site_id, issued_at, target_time);
- models: index (site_id, created_at DESC), ties broken by version (the primary key).
Each page fetches limit + 1 rows: the extra row says whether a next page exists, so the
last page never carries a `next` link to an empty page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from energy_pipeline.api.params import (
    ForecastsQuery,
    HourlyQuery,
    ModelsQuery,
    ReadingsQuery,
    SitesQuery,
)
from energy_pipeline.api.pool import Connection, Deadline
from energy_pipeline.api.spec import HOURLY_TABLE
from energy_pipeline.core.contracts import SENSOR_NAMES

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    next_key: tuple[Any, ...] | None
    # Values of the envelope found by the query (the forecast run's issue time).
    found: dict[str, Any] = field(default_factory=dict)


def _page(rows: list[Row], limit: int, key: Callable[[Row], tuple[Any, ...]]) -> Page:
    if len(rows) > limit:
        return Page(rows[:limit], key(rows[limit - 1]))
    return Page(rows, None)


def _fetch(conn: Connection, sql: str, args: dict[str, Any]) -> list[Row]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


SITES_SQL = """
WITH RECURSIVE sites AS (
    (SELECT site_id FROM hourly_features WHERE site_id > %(after)s ORDER BY site_id LIMIT 1)
    UNION ALL
    SELECT n.site_id FROM sites s CROSS JOIN LATERAL (
        SELECT h.site_id FROM hourly_features h WHERE h.site_id > s.site_id
        ORDER BY h.site_id LIMIT 1
    ) n
)
SELECT s.site_id,
    (SELECT min(h.hour) FROM hourly_features h WHERE h.site_id = s.site_id),
    (SELECT max(h.hour) FROM hourly_features h WHERE h.site_id = s.site_id),
    (SELECT max(f.issued_at) FROM forecasts f WHERE f.site_id = s.site_id)
FROM (SELECT site_id FROM sites LIMIT %(limit)s) s
ORDER BY s.site_id
"""


def fetch_sites(conn: Connection, q: SitesQuery) -> Page:
    # '' sorts before every site id (ids are non-empty).
    rows = _fetch(conn, SITES_SQL, {"after": q.after or "", "limit": q.common.limit + 1})
    return _page(rows, q.common.limit, lambda r: (r[0],))


DEVICES_SQL = """
WITH RECURSIVE devices AS (
    (SELECT device_id FROM readings
     WHERE site_id = %(site)s AND sensor = %(sensor)s AND device_id >= %(start)s
     ORDER BY device_id LIMIT 1)
    UNION ALL
    SELECT n.device_id FROM devices d CROSS JOIN LATERAL (
        SELECT r.device_id FROM readings r
        WHERE r.site_id = %(site)s AND r.sensor = %(sensor)s AND r.device_id > d.device_id
        ORDER BY r.device_id LIMIT 1
    ) n
)
SELECT device_id FROM devices
"""

STREAM_SQL = """
SELECT ts, value FROM readings
WHERE site_id = %(site)s AND sensor = %(sensor)s AND device_id = %(device)s
  AND ts >= %(start)s AND ts < %(end)s{after}
ORDER BY ts
LIMIT %(limit)s
"""

DevicesOf = Callable[[str, str | None], Sequence[str]]
RowsOf = Callable[[str, str, datetime | None, int], Sequence[tuple[datetime, float]]]


def collect_readings(
    q: ReadingsQuery, devices_of: DevicesOf, rows_of: RowsOf, check: Callable[[], None]
) -> Page:
    """One page of readings in (sensor, device, ts) order, resuming after `q.after`.

    `devices_of(sensor, start)`: the site's devices of `sensor` from `start` on (inclusive),
    in the database's order; `rows_of(sensor, device, after_ts, n)`: up to n readings of one
    stream in the window, after `after_ts` if given. Pure, so unit-tested with fakes.
    """
    want = q.common.limit + 1
    out: list[Row] = []
    after = q.after
    first = SENSOR_NAMES.index(after[0]) if after else 0
    for sensor in q.sensors:
        if SENSOR_NAMES.index(sensor) < first:
            continue
        resuming = after is not None and sensor == after[0]
        if q.devices is not None:
            devices: Sequence[str] = q.devices
            if resuming and after is not None and after[1] in devices:
                devices = devices[devices.index(after[1]):]
        else:
            devices = devices_of(sensor, after[1] if resuming and after else None)
        for device in devices:
            check()
            after_ts = after[2] if resuming and after and device == after[1] else None
            for ts, value in rows_of(sensor, device, after_ts, want - len(out)):
                out.append((sensor, device, ts, value))
            if len(out) >= want:
                return _page(out, q.common.limit, lambda r: (r[0], r[1], r[2]))
    return Page(out, None)


def fetch_readings(conn: Connection, q: ReadingsQuery, deadline: Deadline) -> Page:
    def devices_of(sensor: str, start: str | None) -> list[str]:
        rows = _fetch(conn, DEVICES_SQL, {"site": q.site, "sensor": sensor, "start": start or ""})
        return [r[0] for r in rows]

    def rows_of(
        sensor: str, device: str, after_ts: datetime | None, n: int
    ) -> list[tuple[datetime, float]]:
        sql = STREAM_SQL.format(after="\n  AND ts > %(after)s" if after_ts is not None else "")
        args = {"site": q.site, "sensor": sensor, "device": device, "start": q.start,
                "end": q.end, "after": after_ts, "limit": n}
        return [(r[0], r[1]) for r in _fetch(conn, sql, args)]

    return collect_readings(q, devices_of, rows_of, deadline.check)


HOURLY_SQL = """
SELECT {columns} FROM hourly_features
WHERE site_id = %(site)s AND hour > %(start)s - interval '1 hour' AND hour < %(end)s{after}
ORDER BY hour
LIMIT %(limit)s
""".replace("{columns}", ", ".join(HOURLY_TABLE.names))


def fetch_hourly(conn: Connection, q: HourlyQuery) -> Page:
    sql = HOURLY_SQL.format(after="\n  AND hour > %(after)s" if q.after is not None else "")
    args = {"site": q.site, "start": q.start, "end": q.end, "after": q.after,
            "limit": q.common.limit + 1}
    return _page(_fetch(conn, sql, args), q.common.limit, lambda r: (r[0],))


ISSUED_SQL = """
SELECT max(issued_at) FROM forecasts WHERE site_id = %(site)s{by}
"""

FORECASTS_SQL = """
SELECT f.target_time, f.horizon, f.model_version, f.p10, f.p50, f.p90, h.avg_energyconsumption
FROM forecasts f
LEFT JOIN hourly_features h ON h.site_id = f.site_id AND h.hour = f.target_time
WHERE f.site_id = %(site)s AND f.issued_at = %(issued)s{filters}
ORDER BY f.target_time
LIMIT %(limit)s
"""


def fetch_forecasts(conn: Connection, q: ForecastsQuery) -> Page:
    by = "" if q.issued_by is None else " AND issued_at <= %(by)s"
    issued = _fetch(conn, ISSUED_SQL.format(by=by), {"site": q.site, "by": q.issued_by})[0][0]
    if issued is None:
        return Page([], None, {"issued_at": None})
    filters = "".join(
        clause for clause, value in (
            ("\n  AND f.target_time >= %(start)s", q.start),
            ("\n  AND f.target_time < %(end)s", q.end),
            ("\n  AND f.target_time > %(after)s", q.after),
        ) if value is not None
    )
    args = {"site": q.site, "issued": issued, "start": q.start, "end": q.end, "after": q.after,
            "limit": q.common.limit + 1}
    page = _page(_fetch(conn, FORECASTS_SQL.format(filters=filters), args), q.common.limit,
                 lambda r: (r[0],))
    return Page(page.rows, page.next_key, {"issued_at": issued})


# The artifact (megabytes of trees) is never read. A version's kind is params.model, which
# `train` has always written (kinds.kind_of: a row without one is a default model).
MODELS_SQL = """
SELECT version, coalesce(params->>'model', 'default'), created_at, trained_on_until, promoted,
       promoted_at, metrics, feature_importances
FROM models
WHERE site_id = %(site)s{filters}
ORDER BY created_at DESC, version DESC
LIMIT %(limit)s
"""


def fetch_models(conn: Connection, q: ModelsQuery) -> Page:
    filters = ""
    if q.promoted is not None:
        filters += "\n  AND promoted" if q.promoted else "\n  AND NOT promoted"
    if q.after is not None:
        filters += "\n  AND (created_at, version) < (%(after_ts)s, %(after_version)s)"
    args = {"site": q.site, "limit": q.common.limit + 1,
            "after_ts": q.after[0] if q.after else None,
            "after_version": q.after[1] if q.after else None}
    return _page(_fetch(conn, MODELS_SQL.format(filters=filters), args), q.common.limit,
                 lambda r: (r[2], r[0]))


# A site exists once it has readings (ingest writes its hourly row in the same statement),
# the same rule GET /sites lists by.
SITE_EXISTS_SQL = """
SELECT EXISTS (SELECT 1 FROM hourly_features WHERE site_id = %(site)s)
"""


def site_exists(conn: Connection, site: str) -> bool:
    return bool(_fetch(conn, SITE_EXISTS_SQL, {"site": site})[0][0])


READY_SQL = """
SELECT to_regclass('readings') IS NOT NULL
   AND to_regclass('hourly_features') IS NOT NULL
   AND to_regclass('forecasts') IS NOT NULL,
       to_regclass('schema_migrations') IS NOT NULL
   AND has_table_privilege('schema_migrations', 'SELECT')
"""


def readiness(conn: Connection) -> tuple[bool, str, int | None]:
    """(ready, detail, schema version): the database answers and has the tables we read."""
    tables, versioned = _fetch(conn, READY_SQL, {})[0]
    version = None
    if versioned:
        version = _fetch(conn, "SELECT max(version) FROM schema_migrations", {})[0][0]
    if not tables:
        return False, "schema not migrated yet (readings, hourly_features or forecasts missing)", \
            version
    return True, "ok", version
