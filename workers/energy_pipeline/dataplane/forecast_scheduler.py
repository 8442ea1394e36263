"""Forecasts for every closed hour: the scheduler that runs inside each ingest worker.

Watermarks. Ingest reports every committed batch (`observe`); per site and stream (one
sensor of one device, i.e. one ordered Kafka key) the scheduler keeps the newest reading
timestamp and upserts it into `forecast_watermarks`. A site's watermark is the oldest of
its streams' timestamps, counting only streams that advanced in the last
FORECAST_STREAM_IDLE_S seconds of wall-clock time (a dead device must not hold its site
back forever); if none did, the newest. Watermarks come from the data's own timestamps,
so replayed or simulated history closes hours exactly as live data does, and the oldest
stream rules because ingest workers consume different partitions at different speeds.

Closing. Hour H of a site closes when its watermark reaches H + 1 h + FORECAST_LATENESS_S.
In one transaction (serialised across ingest workers by an advisory lock), every newly
closed hour that has data goes into `forecast_backlog` as origin H + 1 h and the site's
`closed_through` moves on. A site seen for the first time owes forecasts from the oldest
reading ingest saw for it (history already in the database when forecasting was turned
on is not owed).

Late readings. What is owed must not depend on the order history arrives in: a site that
first got a few recent hours and then a backfill of older ones (`simulate --duration 2h`,
then `--start now-14d`) owes the backfilled hours as if they had come first. Readings
for hours at or before `closed_through` are late: the hours they fall in (those with data
and no forecast yet) go on the backlog too, due FORECAST_LATENESS_S of wall-clock time
after the first late reading (the watermark is past them already, so the grace that lets
the rest of the hour's readings in is counted on the clock instead), and the stream's
`first_ts` moves back to the oldest reading seen.

Draining. Each worker claims due backlog rows (`FOR UPDATE SKIP LOCKED`, newest first, so
after an outage the current forecast comes first), reads each one's feature window (the
FORECAST_HISTORY_HOURS hours before the origin) from hourly_features and the site's
weather forecast as it stood before the origin from weather_forecasts, calls Forecast for
all of them concurrently (round-robin over the inference endpoints, FORECAST_DEADLINE_MS
each), and in the same transaction stores the returned points (idempotent: primary key
site, issued_at = origin, target_time) and deletes the rows it stored. A crash or an
inference outage therefore delays forecasts but never loses one; the backlog gauge shows
what is owed. Service-wide failures (UNAVAILABLE, DEADLINE_EXCEEDED, ...) pause draining
with a short capped backoff and leave the rows untouched; errors about one request back
that row off on its own, and only requests the service calls invalid are eventually given
up (logged and counted). What a forecast was made without (`missing_inputs`, e.g. no
weather forecast had arrived) is counted and kept per site in forecast_sites, where the
operator reads it for the EnergyPipeline's status.

Nothing here runs on ingest's path to Kafka offsets: `observe` only updates a dict, and
a database or inference problem here never stops ingestion.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg2
import psycopg2.extras
from prometheus_client import Counter, Gauge, Histogram

from energy_pipeline.core.contracts import Reading
from energy_pipeline.core.settings import SettingsError, env
from energy_pipeline.db.connect import LazyConnection, worker_name
from energy_pipeline.forecasting.rows import MAX_HORIZON, HourlyRow
from energy_pipeline.inference.client import ForecasterClient, forecast_request
from energy_pipeline.inference.convert import WeatherRow, datetime_of
from energy_pipeline.inference.tls import GrpcTlsSettings

log = logging.getLogger("energy_pipeline.forecasts")

BACKLOG = Gauge("energy_forecast_backlog", "Forecasts owed: closed hours not yet forecast")
BACKLOG_AGE = Gauge(
    "energy_forecast_backlog_oldest_seconds", "Seconds since the oldest owed forecast was owed"
)
RPCS = Counter("energy_forecast_rpc_total", "Forecast calls to inference, by status", ["code"])
RPC_SECONDS = Histogram(
    "energy_forecast_rpc_seconds",
    "Forecast call time seen by ingest",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
ISSUED = Counter("energy_forecasts_issued_total", "Forecasts stored (one per site and origin)")
CLOSED = Counter("energy_forecast_hours_closed_total", "Closed hours put on the backlog")
ABANDONED = Counter(
    "energy_forecast_abandoned_total", "Owed forecasts given up on, by reason", ["reason"]
)
MISSING_INPUT = Counter(
    "energy_forecasts_missing_input_total",
    "Forecasts stored that were made without an input their model was trained with",
    ["input"],
)
WATERMARK = Gauge(
    "energy_forecast_watermark_timestamp_seconds", "Forecast watermark per site", ["site_id"]
)

HOUR = timedelta(hours=1)
# Closing order across ingest workers; any constant shared by all of them.
_CLOSE_LOCK = 0x66637374  # "fcst"
# Failures that say nothing about the request: pause, retry the same rows later.
SERVICE_WIDE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    }
)
# The service says the request itself can never succeed (the window will not change).
HOPELESS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION})
HOPELESS_ATTEMPTS = 8
MAX_ROW_BACKOFF_S = 600.0
MAX_SERVICE_BACKOFF_S = 5.0


@dataclass(frozen=True, kw_only=True)
class ForecastSettings(GrpcTlsSettings):
    inference_target: str = env(
        "INFERENCE_TARGET", "",
        doc="gRPC target of the inference service (`dns:///host:port`, `host:port`, or a comma "
        "list of host:port); empty disables forecasting",
    )
    forecast_horizons: int = env(
        "FORECAST_HORIZONS", 168, doc="forecast hours 1..N ahead of each closed hour", minimum=1
    )
    forecast_lateness_s: int = env(
        "FORECAST_LATENESS_S", 120,
        doc="an hour closes when the watermark passes its end plus this; an hour that gets "
        "readings after it closed (a backfill) is forecast this long after the first of them",
        minimum=0,
    )
    forecast_history_hours: int = env(
        "FORECAST_HISTORY_HOURS", 336, doc="hours of hourly_features sent with each call",
        minimum=1,
    )
    forecast_deadline_ms: int = env(
        "FORECAST_DEADLINE_MS", 2000, doc="deadline of one Forecast call", minimum=1
    )
    forecast_stream_idle_s: int = env(
        "FORECAST_STREAM_IDLE_S", 300,
        doc="a device stream silent this long stops holding its site's watermark back",
        minimum=1,
    )

    grpc_tls_server_name: str = env(
        "GRPC_TLS_SERVER_NAME", "",
        doc="name the inference certificate must carry when INFERENCE_TARGET does not say it "
        "(a list of pod addresses); empty: the target's host",
    )
    grpc_tls_reload_s: float = env(
        "GRPC_TLS_RELOAD_S", 10.0,
        doc="how often ingest looks for renewed certificate files (a new channel takes over "
        "once ready; calls in flight finish on the old one)", minimum=0.1,
    )

    def __post_init__(self) -> None:
        problems = self.tls_problems() if self.inference_target else []
        if self.forecast_horizons > MAX_HORIZON:
            problems.append(
                f"FORECAST_HORIZONS must be at most {MAX_HORIZON}, got {self.forecast_horizons}"
            )
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))

    def forecaster_client(self) -> ForecasterClient:
        """The client for INFERENCE_TARGET, with TLS as these settings say."""
        return ForecasterClient(
            self.inference_target, self.tls_files(), server_name=self.grpc_tls_server_name,
            reload_s=self.grpc_tls_reload_s,
        )


# -- pure parts ------------------------------------------------------------------------


def floor_hour(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC)
    return ts.replace(minute=0, second=0, microsecond=0)


def last_closed_hour(watermark: datetime, lateness_s: float) -> datetime:
    """The last hour H (its start) with H + 1 h + lateness <= watermark."""
    return floor_hour(watermark - timedelta(seconds=lateness_s) - HOUR)


# (site, sensor, device) -> (oldest, newest) reading timestamp.
Marks = dict[tuple[str, str, str], tuple[datetime, datetime]]


def stream_marks(readings: Iterable[Reading]) -> Marks:
    """(Oldest, newest) timestamp per stream (site, sensor, device) in a batch.

    Runs on ingest's thread for every batch, so it does no more than a dict update.
    """
    marks: Marks = {}
    for r in readings:
        key = (r.site, r.sensor, r.device)
        current = marks.get(key)
        if current is None:
            marks[key] = (r.ts, r.ts)
        elif r.ts < current[0] or r.ts > current[1]:
            marks[key] = (min(current[0], r.ts), max(current[1], r.ts))
    return marks


def merge_marks(into: Marks, marks: Marks) -> None:
    for key, (first, last) in marks.items():
        current = into.get(key)
        into[key] = (first, last) if current is None else (
            min(current[0], first), max(current[1], last)
        )


def merge_oldest(into: dict[str, datetime], marks: Marks) -> None:
    """Per site, the oldest reading timestamp among `marks` (and what `into` had)."""
    for (site, _sensor, _device), (first, _last) in marks.items():
        current = into.get(site)
        if current is None or first < current:
            into[site] = first


def late_hours(
    oldest: datetime | None, closed_through: datetime
) -> tuple[datetime, datetime] | None:
    """The closed hours (first, last) that readings from `oldest` on may have reached late."""
    if oldest is None or floor_hour(oldest) > closed_through:
        return None
    return floor_hour(oldest), closed_through


def row_backoff_s(attempts: int) -> float:
    """Delay before retrying one owed forecast after its `attempts`-th failure."""
    return min(MAX_ROW_BACKOFF_S, 2.0 ** min(attempts, 20))


def service_backoff_s(failures: int) -> float:
    return min(MAX_SERVICE_BACKOFF_S, 0.25 * 2.0 ** min(failures, 10))


# -- SQL -------------------------------------------------------------------------------

_UPSERT_MARKS = """
INSERT INTO forecast_watermarks AS w (site_id, stream, first_ts, max_ts) VALUES %s
ON CONFLICT (site_id, stream) DO UPDATE SET
    first_ts = least(w.first_ts, EXCLUDED.first_ts),
    max_ts = greatest(w.max_ts, EXCLUDED.max_ts),
    -- Only an advancing stream counts as alive: older readings (a backfill) do not.
    advanced_at = CASE WHEN EXCLUDED.max_ts > w.max_ts THEN now() ELSE w.advanced_at END
WHERE EXCLUDED.max_ts > w.max_ts OR EXCLUDED.first_ts < w.first_ts
"""

_SITE_WATERMARKS = """
SELECT m.site_id, m.watermark, m.first_ts, s.closed_through, s.watermark
FROM (
    SELECT site_id, min(first_ts) AS first_ts, coalesce(
        min(max_ts) FILTER (WHERE advanced_at > now() - %(idle)s * interval '1 second'),
        max(max_ts)) AS watermark
    FROM forecast_watermarks GROUP BY site_id
) m LEFT JOIN forecast_sites s USING (site_id)
"""

_ENQUEUE = """
INSERT INTO forecast_backlog (site_id, origin)
SELECT site_id, hour + interval '1 hour' FROM hourly_features
WHERE site_id = %(site)s AND hour > %(after)s AND hour <= %(through)s AND n_readings > 0
ON CONFLICT DO NOTHING
"""

# Hours already closed that got readings: owed unless forecast (or owed) already. The
# forecasts primary key (site_id, issued_at, ...) answers NOT EXISTS from its index.
_ENQUEUE_LATE = """
INSERT INTO forecast_backlog (site_id, origin, next_attempt_at)
SELECT h.site_id, h.hour + interval '1 hour', now() + %(quiet)s * interval '1 second'
FROM hourly_features h
WHERE h.site_id = %(site)s AND h.hour >= %(from)s AND h.hour <= %(through)s
  AND h.n_readings > 0
  AND NOT EXISTS (
      SELECT 1 FROM forecasts f
      WHERE f.site_id = h.site_id AND f.issued_at = h.hour + interval '1 hour'
  )
ON CONFLICT DO NOTHING
"""

_UPSERT_SITE = """
INSERT INTO forecast_sites AS s (site_id, watermark, closed_through) VALUES (%s, %s, %s)
ON CONFLICT (site_id) DO UPDATE SET
    watermark = EXCLUDED.watermark,
    closed_through = greatest(s.closed_through, EXCLUDED.closed_through),
    updated_at = now()
"""

_CLAIM = """
SELECT site_id, origin, attempts FROM forecast_backlog
WHERE next_attempt_at <= now()
ORDER BY origin DESC
LIMIT %s
FOR UPDATE SKIP LOCKED
"""

_WINDOWS = """
SELECT b.site_id, b.origin, h.hour, h.avg_temperature, h.avg_humidity, h.avg_squarefootage,
       h.avg_renewableenergy, h.avg_energyconsumption, h.n_readings
FROM unnest(%(sites)s::text[], %(origins)s::timestamptz[]) AS b(site_id, origin)
JOIN hourly_features h
  ON h.site_id = b.site_id
 AND h.hour >= b.origin - %(hours)s * interval '1 hour'
 AND h.hour < b.origin
ORDER BY b.site_id, b.origin, h.hour
"""

# Per owed forecast, the site's weather forecast as it stood just before the origin: for each
# hour from 23 h before the origin (the model's 24 h means) to the last target, the newest
# issue made before the origin, whoever its source (ties: the first source by name).
_WEATHER = """
SELECT DISTINCT ON (b.site_id, b.origin, w.valid_time)
       b.site_id, b.origin, w.issued_at, w.valid_time, w.temperature, w.humidity
FROM unnest(%(sites)s::text[], %(origins)s::timestamptz[]) AS b(site_id, origin)
JOIN weather_forecasts w
  ON w.site_id = b.site_id
 AND w.valid_time >= b.origin - interval '23 hours'
 AND w.valid_time < b.origin + %(horizon)s * interval '1 hour'
 AND w.issued_at < b.origin
ORDER BY b.site_id, b.origin, w.valid_time, w.issued_at DESC, w.source
"""

# What the site's newest forecast lacked (forecast_sites.missing_inputs); an older origin
# caught up later leaves a newer one's answer alone.
_INPUTS = """
UPDATE forecast_sites s SET missing_inputs = v.missing::text[],
    inputs_origin = v.origin::timestamptz
FROM (VALUES %s) AS v(site_id, origin, missing)
WHERE s.site_id = v.site_id
  AND (s.inputs_origin IS NULL OR s.inputs_origin <= v.origin::timestamptz)
"""

_STORE = """
INSERT INTO forecasts (site_id, issued_at, target_time, horizon, model_version, p10, p50, p90)
VALUES %s ON CONFLICT DO NOTHING
"""

_DONE = """
DELETE FROM forecast_backlog b USING unnest(%s::text[], %s::timestamptz[]) AS d(site_id, origin)
WHERE b.site_id = d.site_id AND b.origin = d.origin
"""

_RETRY_LATER = """
UPDATE forecast_backlog b SET attempts = b.attempts + 1,
    next_attempt_at = now() + v.delay_s * interval '1 second', last_error = v.error
FROM (VALUES %s) AS v(site_id, origin, delay_s, error)
WHERE b.site_id = v.site_id AND b.origin = v.origin::timestamptz
"""

_BACKLOG = """
SELECT count(*), coalesce(extract(epoch FROM now() - min(enqueued_at)), 0) FROM forecast_backlog
"""


@dataclass
class _Call:
    site_id: str
    origin: datetime
    attempts: int
    future: grpc.Future | None = None


@dataclass(frozen=True)
class DrainResult:
    claimed: int = 0
    stored: int = 0
    retry: int = 0
    service_errors: int = 0
    abandoned: int = 0


class ForecastScheduler:
    """Watermarks, closing and draining for one ingest worker; see the module docstring."""

    def __init__(
        self,
        settings: ForecastSettings,
        database_url: str,
        client: ForecasterClient | None = None,
        *,
        application_name: str = worker_name("ingest-forecasts"),
        batch_size: int = 32,
        poll_s: float = 0.5,
        close_every_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.db = LazyConnection(database_url, application_name=application_name)
        self.client = client or settings.forecaster_client()
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.close_every_s = close_every_s
        self.horizons = list(range(1, settings.forecast_horizons + 1))
        self._pending: Marks = {}
        # site -> oldest reading flushed since the last close_hours (late-reading check).
        self._flushed_from: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_close = 0.0
        self._last_gauge = 0.0
        self._service_failures = 0
        self._paused_until = 0.0
        self.last_error: str | None = None

    # -- called by ingest ------------------------------------------------------------

    def observe(self, readings: Iterable[Reading]) -> None:
        """Readings that are committed to the database (never before: they close hours)."""
        marks = stream_marks(readings)
        with self._lock:
            merge_marks(self._pending, marks)

    def start(self) -> ForecastScheduler:
        self._thread = threading.Thread(target=self._run, name="forecast-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the loop --------------------------------------------------------------------

    def _run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                busy = self.step()
                delay = 0.5
                self.last_error = None
            except Exception as exc:  # a database outage must not end the thread
                self.last_error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                log.warning(
                    "forecast scheduling failed; retrying", extra={"error": self.last_error}
                )
                self.db.close()
                busy = False
                self._stopping.wait(delay)
                delay = min(delay * 2, 10.0)
            if not busy:
                self._stopping.wait(self.poll_s)
        try:
            self.flush_watermarks()  # what the last batches advanced
            if self._flushed_from:
                # Late readings are known only here: owe their hours before going.
                self.close_hours()
        except Exception as exc:
            log.warning("final watermark flush failed", extra={"error": str(exc)[:300]})
        self.db.close()
        self.client.close()

    def step(self) -> bool:
        """One round: flush watermarks, close hours, drain one batch. True if it stored any."""
        flushed = self.flush_watermarks()
        now = time.monotonic()
        if flushed or now - self._last_close >= self.close_every_s:
            self.close_hours()
            self._last_close = now
        result = DrainResult()
        if now >= self._paused_until:
            result = self.drain()
        if result.claimed or now - self._last_gauge >= self.close_every_s:
            self.update_backlog_gauge()
            self._last_gauge = now
        return result.stored > 0

    # -- database --------------------------------------------------------------------

    def flush_watermarks(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return False
        try:
            conn = self.db.get()
            with conn, conn.cursor() as cur:
                # Sorted: workers touching the same rows lock them in the same order.
                rows = sorted(
                    (site, f"{sensor}/{device}", first, last)
                    for (site, sensor, device), (first, last) in pending.items()
                )
                psycopg2.extras.execute_values(cur, _UPSERT_MARKS, rows)
        except Exception:
            with self._lock:
                merge_marks(self._pending, pending)
            raise
        with self._lock:
            merge_oldest(self._flushed_from, pending)
        return True

    def close_hours(self) -> int:
        """Put newly closed hours on the backlog; returns how many."""
        lateness = self.settings.forecast_lateness_s
        enqueued = 0
        with self._lock:
            flushed_from, self._flushed_from = self._flushed_from, {}
        try:
            conn = self.db.get()
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_CLOSE_LOCK,))
                cur.execute(_SITE_WATERMARKS, {"idle": self.settings.forecast_stream_idle_s})
                for site, watermark, first_ts, closed_through, last_watermark in cur.fetchall():
                    WATERMARK.labels(site).set(watermark.timestamp())
                    through = last_closed_hour(watermark, lateness)
                    # New site: owed from its oldest reading seen, not for older history.
                    if closed_through is None:
                        after = floor_hour(first_ts) - HOUR
                    else:
                        after = closed_through
                        late = late_hours(flushed_from.get(site), closed_through)
                        if late is not None:
                            cur.execute(_ENQUEUE_LATE, {"site": site, "from": late[0],
                                                        "through": late[1], "quiet": lateness})
                            enqueued += cur.rowcount
                    if through > after:
                        cur.execute(_ENQUEUE, {"site": site, "after": after, "through": through})
                        enqueued += cur.rowcount
                    if through > after or closed_through is None or watermark != last_watermark:
                        cur.execute(_UPSERT_SITE, (site, watermark, max(through, after)))
        except Exception:
            with self._lock:  # checked again on the next round
                for site, oldest in flushed_from.items():
                    current = self._flushed_from.get(site)
                    self._flushed_from[site] = oldest if current is None else min(current, oldest)
            raise
        if enqueued:
            CLOSED.inc(enqueued)
            log.debug("hours closed", extra={"enqueued": enqueued})
        return enqueued

    def update_backlog_gauge(self) -> int:
        conn = self.db.get()
        with conn, conn.cursor() as cur:
            cur.execute(_BACKLOG)
            count, age = cur.fetchone()
        BACKLOG.set(count)
        BACKLOG_AGE.set(float(age))
        return int(count)

    @staticmethod
    def _per_call(
        cur: psycopg2.extensions.cursor, sql: str, calls: Sequence[_Call], **params: Any
    ) -> dict[tuple[str, datetime], list[tuple[Any, ...]]]:
        """Rows of `sql` (site_id, origin, ...) over the calls' (site, origin) pairs, grouped
        by pair; each row without its first two columns."""
        cur.execute(
            sql,
            {"sites": [c.site_id for c in calls], "origins": [c.origin for c in calls], **params},
        )
        grouped: dict[tuple[str, datetime], list[tuple[Any, ...]]] = {}
        for site, origin, *rest in cur.fetchall():
            grouped.setdefault((site, origin), []).append(tuple(rest))
        return grouped

    def _windows(
        self, cur: psycopg2.extensions.cursor, calls: Sequence[_Call]
    ) -> dict[tuple[str, datetime], list[HourlyRow]]:
        rows = self._per_call(cur, _WINDOWS, calls, hours=self.settings.forecast_history_hours)
        return {
            key: [
                HourlyRow.from_mapping(
                    {
                        "hour": hour,
                        "avg_temperature": values[0],
                        "avg_humidity": values[1],
                        "avg_squarefootage": values[2],
                        "avg_renewableenergy": values[3],
                        "avg_energyconsumption": values[4],
                        "n_readings": n,
                    }
                )
                for hour, *values, n in group
            ]
            for key, group in rows.items()
        }

    def _weather(
        self, cur: psycopg2.extensions.cursor, calls: Sequence[_Call]
    ) -> dict[tuple[str, datetime], list[WeatherRow]]:
        rows = self._per_call(cur, _WEATHER, calls, horizon=max(self.horizons))
        return {key: [(i, v, t, h) for i, v, t, h in group] for key, group in rows.items()}

    def drain(self) -> DrainResult:
        """Forecast one batch of due backlog rows, in one transaction."""
        deadline_s = self.settings.forecast_deadline_ms / 1000
        conn = self.db.get()
        stored: list[tuple[Any, ...]] = []
        done: list[_Call] = []
        retry: list[tuple[str, datetime, float, str]] = []
        # Per site, the newest forecast stored and the inputs it lacked.
        inputs: dict[str, tuple[str, datetime, list[str]]] = {}
        service_errors = abandoned = 0
        with conn, conn.cursor() as cur:
            cur.execute(_CLAIM, (self.batch_size,))
            calls = [_Call(site, origin, attempts) for site, origin, attempts in cur.fetchall()]
            if not calls:
                return DrainResult()
            windows = self._windows(cur, calls)
            weather = self._weather(cur, calls)
            for call in calls:
                rows = windows.get((call.site_id, call.origin))
                if not rows:
                    # The hour's features are gone (retention?): nothing can ever be forecast.
                    ABANDONED.labels("no_window").inc()
                    log.error(
                        "owed forecast has no feature window; giving up",
                        extra={"site_id": call.site_id, "origin": call.origin},
                    )
                    done.append(call)
                    abandoned += 1
                    continue
                request = forecast_request(call.site_id, rows, self.horizons, call.origin,
                                           weather.get((call.site_id, call.origin), ()))
                started = time.perf_counter()
                call.future = self.client.forecast_future(request, deadline_s)
                call.future.add_done_callback(
                    lambda _f, s=started: RPC_SECONDS.observe(time.perf_counter() - s)
                )
            for call in calls:
                if call.future is None:
                    continue
                try:
                    response = call.future.result()
                except grpc.RpcError as exc:
                    code = exc.code()
                    RPCS.labels(code.name).inc()
                    detail = f"{code.name}: {exc.details()}"
                    if code in SERVICE_WIDE:
                        service_errors += 1
                        self.last_error = detail
                    elif code in HOPELESS and call.attempts + 1 >= HOPELESS_ATTEMPTS:
                        ABANDONED.labels(code.name.lower()).inc()
                        log.error(
                            "owed forecast rejected by inference; giving up",
                            extra={"site_id": call.site_id, "origin": call.origin,
                                   "error": detail, "attempts": call.attempts + 1},
                        )
                        done.append(call)
                        abandoned += 1
                    else:
                        retry.append(
                            (call.site_id, call.origin, row_backoff_s(call.attempts), detail)
                        )
                    continue
                RPCS.labels(grpc.StatusCode.OK.name).inc()
                done.append(call)
                for name in response.missing_inputs:
                    MISSING_INPUT.labels(name).inc()
                newest = inputs.get(call.site_id)
                if newest is None or newest[1] < call.origin:
                    inputs[call.site_id] = (call.site_id, call.origin,
                                            sorted(response.missing_inputs))
                stored.extend(
                    (
                        call.site_id,
                        call.origin,
                        datetime_of(p.target_time),
                        p.horizon,
                        response.model_version,
                        p.p10,
                        p.p50,
                        p.p90,
                    )
                    for p in response.points
                )
            if stored:
                psycopg2.extras.execute_values(cur, _STORE, stored, page_size=1000)
            if inputs:
                psycopg2.extras.execute_values(cur, _INPUTS, list(inputs.values()))
            if done:
                cur.execute(_DONE, ([c.site_id for c in done], [c.origin for c in done]))
            if retry:
                psycopg2.extras.execute_values(cur, _RETRY_LATER, retry)
        issued = len(done) - abandoned
        ISSUED.inc(issued)
        if service_errors:
            self._service_failures += 1
            pause = service_backoff_s(self._service_failures)
            self._paused_until = time.monotonic() + pause
            log.warning(
                "inference unavailable; forecasts stay owed",
                extra={"failed": service_errors, "stored": issued, "pause_s": pause,
                       "error": self.last_error},
            )
        elif issued:
            self._service_failures = 0
        return DrainResult(
            claimed=len(calls),
            stored=issued,
            retry=len(retry),
            service_errors=service_errors,
            abandoned=abandoned,
        )
