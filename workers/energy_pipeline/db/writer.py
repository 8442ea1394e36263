"""The ingest write path: a batch of readings into `readings` and `hourly_features`.

One statement per batch: COPY into a temporary staging table, then insert what is new into
`readings` (ON CONFLICT DO NOTHING) and add exactly those new rows to the hourly sums. A
redelivered reading is neither stored twice nor counted twice, so the write is idempotent.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from energy_pipeline.contracts import SENSOR_NAMES, Reading, format_ts

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
    INSERT INTO readings (site_id, sensor, device_id, ts, value)
    SELECT site_id, sensor, device_id, ts, value FROM staging_readings
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
SELECT site_id, hour, n FROM per_hour
"""


@dataclass(frozen=True)
class WriteResult:
    received: int
    inserted: int
    # (site, hour) pairs that gained readings, with how many each.
    hours: tuple[tuple[str, datetime, int], ...]

    @property
    def duplicates(self) -> int:
        return self.received - self.inserted


def _copy_buffer(readings: Sequence[Reading]) -> io.StringIO:
    # Ids are validated against [A-Za-z0-9_.-], so no COPY escaping is needed.
    return io.StringIO(
        "".join(
            f"{r.site}\t{r.sensor}\t{r.device}\t{format_ts(r.ts)}\t{r.value!r}\n" for r in readings
        )
    )


def write_readings(conn, readings: Sequence[Reading]) -> WriteResult:  # noqa: ANN001
    """Write one batch in the caller's transaction; the caller commits."""
    with conn.cursor() as cur:
        cur.execute(_STAGING)
        cur.copy_expert(
            "COPY staging_readings (site_id, sensor, device_id, ts, value) FROM STDIN",
            _copy_buffer(readings),
        )
        cur.execute(_MERGE)
        hours = tuple((site, hour, int(n)) for site, hour, n in cur.fetchall())
        cur.execute("TRUNCATE staging_readings")
    return WriteResult(len(readings), sum(n for _, _, n in hours), hours)
