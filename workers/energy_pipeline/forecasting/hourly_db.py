"""hourly_features in and out for forecasting: a site's closed hours, and writing a frame.

`write_hourly_frame` stores an `HourlyFrame` as one reading per sensor and hour (sum =
value, n = 1), which is what benchmarks and tests use to put a known series in place of
ingested data.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import psycopg2.extensions
import psycopg2.extras

from energy_pipeline.core.contracts import WEATHER_VARIABLES
from energy_pipeline.forecasting.frame import HourlyFrame, to_datetime64
from energy_pipeline.forecasting.issued import IssuedSeries
from energy_pipeline.forecasting.rows import COVARIATE_COLUMNS, TARGET_COLUMN, HourlyRow

_SITE_ROWS = """
WITH bounds AS (
    SELECT coalesce(
        (SELECT closed_through + interval '1 hour' FROM forecast_sites WHERE site_id = %(site)s),
        (SELECT max(hour) FROM hourly_features WHERE site_id = %(site)s)
    ) AS until
)
SELECT hour, avg_temperature, avg_humidity, avg_squarefootage, avg_renewableenergy,
       avg_energyconsumption, n_readings, bounds.until
FROM hourly_features, bounds
WHERE site_id = %(site)s AND hour < bounds.until
  AND hour >= bounds.until - %(days)s * interval '1 day'
ORDER BY hour
"""


def read_site_rows(
    conn: psycopg2.extensions.connection, site_id: str, history_days: int
) -> tuple[list[HourlyRow], datetime | None]:
    """The site's closed hours of the last `history_days` days, and where they end.

    Closed: up to the forecasting watermark's last closed hour when ingest keeps one,
    else all but the newest hour, which may still be filling.
    """
    with conn.cursor() as cur:
        cur.execute(_SITE_ROWS, {"site": site_id, "days": history_days})
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    until = rows[-1]["until"] if rows else None
    return [HourlyRow.from_mapping(r) for r in rows], until


def read_window(
    conn: psycopg2.extensions.connection, site_id: str, origin: datetime, hours: int
) -> list[HourlyRow]:
    """The `hours` hours of hourly_features before `origin`: what ingest sends to inference."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT hour, avg_temperature, avg_humidity, avg_squarefootage,
                      avg_renewableenergy, avg_energyconsumption, n_readings
               FROM hourly_features
               WHERE site_id = %s AND hour >= %s - %s * interval '1 hour' AND hour < %s
               ORDER BY hour""",
            (site_id, origin, hours, origin),
        )
        names = [d.name for d in cur.description]
        return [HourlyRow.from_mapping(dict(zip(names, r, strict=True))) for r in cur.fetchall()]


def all_sites(conn: psycopg2.extensions.connection) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT site_id FROM hourly_features GROUP BY site_id ORDER BY site_id")
        return [site for (site,) in cur.fetchall()]


_SENSOR_OF = {
    "avg_temperature": "temperature",
    "avg_humidity": "humidity",
    "avg_squarefootage": "squarefootage",
    "avg_renewableenergy": "renewableenergy",
    TARGET_COLUMN: "energyconsumption",
}


def write_hourly_frame(
    conn: psycopg2.extensions.connection, site_id: str, frame: HourlyFrame
) -> int:
    """Insert (or replace) the frame's hours for `site_id`, in the caller's transaction."""
    columns = [TARGET_COLUMN, *COVARIATE_COLUMNS]
    series = {TARGET_COLUMN: frame.target, **{c: frame.past[c] for c in COVARIATE_COLUMNS}}
    rows = []
    for i, t in enumerate(frame.times):
        hour = datetime.fromtimestamp(int(np.datetime64(t, "s").astype(np.int64)), UTC)
        values: list[object] = [site_id, hour]
        for column in columns:
            value = float(series[column][i])
            known = not math.isnan(value)
            values += [value if known else 0.0, 1 if known else 0]
        rows.append(tuple(values))
    names = ", ".join(f"sum_{_SENSOR_OF[c]}, n_{_SENSOR_OF[c]}" for c in columns)
    updates = ", ".join(
        f"sum_{_SENSOR_OF[c]} = EXCLUDED.sum_{_SENSOR_OF[c]}, "
        f"n_{_SENSOR_OF[c]} = EXCLUDED.n_{_SENSOR_OF[c]}"
        for c in columns
    )
    with conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            f"""INSERT INTO hourly_features (site_id, hour, {names}) VALUES %s
                ON CONFLICT (site_id, hour) DO UPDATE SET {updates}""",
            rows,
            page_size=2000,
        )
    return len(rows)


# Every source's issues count alike: at an origin the newest issue before it wins, whoever
# made it. An issue made later than `until` is left out, as a model there could not hold it.
_WEATHER = f"""
SELECT issued_at, valid_time, {", ".join(WEATHER_VARIABLES)}
FROM weather_forecasts
WHERE site_id = %(site)s AND valid_time >= %(since)s AND issued_at < %(until)s
ORDER BY valid_time, issued_at, source
"""


def read_site_weather(
    conn: psycopg2.extensions.connection, site_id: str, since: datetime, until: datetime
) -> dict[str, IssuedSeries]:
    """The site's forecast weather for hours from `since`, as issued before `until`: one
    `IssuedSeries` per variable (empty when none was ever received)."""
    with conn.cursor() as cur:
        cur.execute(_WEATHER, {"site": site_id, "since": since, "until": until})
        rows = cur.fetchall()
    if not rows:
        return {}
    issued = np.array([to_datetime64(r[0]) for r in rows], dtype="datetime64[s]")
    valid = np.array([to_datetime64(r[1]) for r in rows], dtype="datetime64[s]")
    # Two sources issuing at the same second for the same hour: the first (by source name
    # order in the table's key) is kept, as the newest-before-origin rule cannot tell them
    # apart.
    keep = np.ones(len(rows), dtype=bool)
    keep[1:] = (valid[1:] != valid[:-1]) | (issued[1:] != issued[:-1])
    series = {}
    for j, name in enumerate(WEATHER_VARIABLES, start=2):
        values = np.array([np.nan if r[j] is None else r[j] for r in rows], dtype=np.float64)
        if not np.isnan(values[keep]).all():
            series[name] = IssuedSeries(issued[keep], valid[keep], values[keep])
    return series
