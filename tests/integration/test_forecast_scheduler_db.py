"""The forecast scheduler against a real PostgreSQL and a real inference process.

Driven step by step (no thread, no Kafka): watermarks from observed readings, closing,
the persisted backlog while inference is down, catching up when it is back, idle streams,
and two workers draining one backlog.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import psycopg2.extras
import pytest
from energy_harness.localstack.process import free_port
from energy_harness.localstack.workers import WorkerProcess
from energy_harness.pki import grpc_tls_env
from energy_harness.synthetic import synthetic_building
from energy_pipeline.core.contracts import Reading
from energy_pipeline.dataplane.forecast_scheduler import ForecastScheduler, ForecastSettings
from energy_pipeline.forecasting.hourly_db import read_window, write_hourly_frame
from energy_pipeline.forecasting.models import load_model
from energy_pipeline.forecasting.train import TrainSettings, train_site
from energy_pipeline.forecasting.window import forecast_window

pytestmark = pytest.mark.integration

START = datetime(2025, 1, 6, tzinfo=UTC)
FAST = json.dumps({"num_boost_round": 30, "early_stopping_rounds": 5, "max_rows": 8000})


def hour(n: int) -> datetime:
    return START + timedelta(hours=n)


@pytest.fixture
def db(database: str) -> Iterator[str]:
    url = database
    with psycopg2.connect(url) as conn:
        write_hourly_frame(conn, "site-a", synthetic_building(24 * 30, seed=9))
    conn.close()
    settings = TrainSettings(database_url=url, train_backtest_days=5, train_model_params=FAST)
    conn = psycopg2.connect(url)
    try:
        assert train_site(conn, "site-a", settings) is not None
    finally:
        conn.close()
    yield url


def readings(stream_device: str, hours: range) -> list[Reading]:
    return [
        Reading("site-a", "energyconsumption", stream_device, hour(h) + timedelta(minutes=m), 1.0)
        for h in hours
        for m in (0, 30)
    ]


def query(url: str, sql: str, *args: object) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        rows = cur.fetchall() if cur.description else []
    conn.close()
    return rows


def backlog(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM forecast_backlog")[0][0])


def origins(url: str) -> dict[datetime, int]:
    rows = query(url, "SELECT issued_at, count(*) FROM forecasts GROUP BY 1")
    return {issued.astimezone(UTC): n for issued, n in rows}


def drain_all(url: str, *schedulers: ForecastScheduler, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while backlog(url) and time.monotonic() < deadline:
        for scheduler in schedulers:
            scheduler.step()
        time.sleep(0.05)
    assert backlog(url) == 0, query(url, "SELECT * FROM forecast_backlog LIMIT 3")


def test_backlog_persists_while_inference_is_down_and_drains_when_it_returns(
    db: str, tmp_path: Path
) -> None:
    port = free_port()
    # Mutual TLS, as deployed: the scheduler's client presents ingest's certificate.
    tls = grpc_tls_env(tmp_path / "grpc-tls")
    settings = ForecastSettings(
        inference_target=f"127.0.0.1:{port}", forecast_horizons=24, forecast_stream_idle_s=300,
        grpc_tls_cert_file=tls["ingest"]["GRPC_TLS_CERT_FILE"],
        grpc_tls_key_file=tls["ingest"]["GRPC_TLS_KEY_FILE"],
        grpc_tls_ca_file=tls["ingest"]["GRPC_TLS_CA_FILE"],
    )
    first = ForecastScheduler(settings, db, close_every_s=0)
    second = ForecastScheduler(settings, db, close_every_s=0)

    # Device 0 is at hour 100, device 1 only at hour 50: the site waits for device 1.
    first.observe(readings("0", range(0, 101)))
    first.observe(readings("1", range(0, 51)))
    first.step()
    # The watermark is 50:30; hour H closes once H + 1 h + 120 s <= 50:30: hours 0..49.
    closed = [hour(h) for h in range(0, 50)]
    [(closed_through, watermark)] = query(
        db, "SELECT closed_through, watermark FROM forecast_sites WHERE site_id = 'site-a'"
    )
    assert watermark == hour(50) + timedelta(minutes=30)
    assert closed_through == closed[-1]
    assert backlog(db) == len(closed)

    # Nobody is listening on the port: the service-wide failure leaves everything owed.
    result = first.drain()
    assert result.claimed > 0 and result.service_errors == result.claimed and result.stored == 0
    assert backlog(db) == len(closed) and origins(db) == {}
    assert first.update_backlog_gauge() == len(closed)

    # Inference comes up: everything owed is forecast, once, for every closed hour.
    env = {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "DATABASE_URL": db, "GRPC_PORT": str(port), "MODEL_REFRESH_S": "0.5",
        **tls["inference"],
    }
    worker = WorkerProcess("inference", ["inference"], env, tmp_path / "logs").start()
    try:
        worker.wait_ready(30)
        drain_all(db, first)
        stored = origins(db)
        assert stored == {h + timedelta(hours=1): 24 for h in closed}

        # A replay of old readings changes nothing.
        first.observe(readings("1", range(0, 10)))
        first.step()
        assert backlog(db) == 0 and origins(db) == stored

        # Device 1 goes silent: once idle it no longer holds the site back, and two
        # workers drain the new hours between them without doing any twice.
        query(
            db,
            """UPDATE forecast_watermarks SET advanced_at = now() - interval '1 hour'
               WHERE stream = 'energyconsumption/1' RETURNING 1""",
        )
        first.close_hours()
        newly = [hour(h) for h in range(50, 100)]
        assert query(db, "SELECT closed_through FROM forecast_sites") == [(newly[-1],)]
        drain_all(db, first, second)
        assert origins(db) == {h + timedelta(hours=1): 24 for h in closed + newly}
        requests = worker.metric("energy_inference_requests_total", {"code": "OK"})
        assert requests == len(closed + newly)

        # What was stored is what the registry's model says offline for the same window:
        # early origins (short window: the documented fallback) and later ones (the model).
        [(version, artifact, mae)] = query(
            db, "SELECT version, artifact, (metrics->>'mae')::float FROM models WHERE promoted"
        )
        model = load_model(artifact)
        for origin in (hour(20), hour(100)):
            conn = psycopg2.connect(db)
            try:
                window = read_window(conn, "site-a", origin, 336)
            finally:
                conn.close()
            offline = forecast_window(model, window, range(1, 25))
            rows = query(
                db,
                """SELECT horizon, p50, model_version FROM forecasts
                   WHERE site_id = 'site-a' AND issued_at = %s ORDER BY horizon""",
                origin,
            )
            assert {r[2] for r in rows} == {version}
            for (horizon, p50, _), point in zip(rows, offline.points, strict=True):
                assert horizon == point.horizon
                assert abs(p50 - point.p50) <= 1e-9 * max(1.0, abs(p50)) < mae
    finally:
        worker.stop()
        first.client.close()
        second.client.close()


# -- the order history arrives in ---------------------------------------------------------


def ingest_hours(
    url: str, scheduler: ForecastScheduler, site: str, hours: range, close: bool = True
) -> None:
    """What ingest does for a batch: commit the readings' hourly features, then report them
    to the scheduler, whose next round closes what they allow."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            """INSERT INTO hourly_features (site_id, hour, sum_energyconsumption,
                                            n_energyconsumption) VALUES %s
               ON CONFLICT (site_id, hour) DO UPDATE SET
                   sum_energyconsumption = hourly_features.sum_energyconsumption + 2,
                   n_energyconsumption = hourly_features.n_energyconsumption + 2""",
            [(site, hour(h), 2.0, 2) for h in hours],
        )
    conn.close()
    scheduler.observe(
        Reading(site, "energyconsumption", device, hour(h) + timedelta(minutes=m), 1.0)
        for device in ("0", "1") for h in hours for m in (0, 30)
    )
    if close:
        scheduler.step()


def owed_hours(url: str, site: str) -> set[datetime]:
    """Closed hours owed a forecast (origin - 1 h), whether forecast yet or not."""
    rows = query(url, "SELECT origin FROM forecast_backlog WHERE site_id = %s", site)
    return {origin.astimezone(UTC) - timedelta(hours=1) for (origin,) in rows}


def test_the_owed_hours_do_not_depend_on_the_order_history_arrives_in(database: str) -> None:
    """`simulate --duration 2h` and then a backfill of older days must owe the backfilled
    hours as if the backfill had come first; before, the site "started" with the recent
    hours and no forecast was ever owed for the history behind them."""
    settings = ForecastSettings(inference_target=f"127.0.0.1:{free_port()}", grpc_tls=False)
    scheduler = ForecastScheduler(settings, database, close_every_s=0)
    backfill = [range(start, start + 25) for start in range(0, 100, 25)]  # hours 0..99
    recent = range(100, 130)
    try:
        # In time order: the backfill (in batches, as ingest commits it), then recent hours.
        for batch in [*backfill, recent]:
            ingest_hours(database, scheduler, "site-in-order", batch)
        # Recent hours first, then the same backfill.
        for batch in [recent, *backfill]:
            ingest_hours(database, scheduler, "site-backfilled", batch)
        in_order = owed_hours(database, "site-in-order")
        # The watermark is 129:30 for both: hours up to 128 are closed, from hour 0.
        assert in_order == {hour(h) for h in range(0, 129)}
        assert owed_hours(database, "site-backfilled") == in_order
        [(first,)] = query(database, "SELECT min(first_ts) FROM forecast_watermarks "
                                     "WHERE site_id = 'site-backfilled'")
        assert first == hour(0)
        # Late hours wait for the rest of their readings (FORECAST_LATENESS_S on the clock);
        # the hours closed by the watermark are due at once.
        [(late_due, on_time_due)] = query(
            database,
            """SELECT bool_and(next_attempt_at > now()) FILTER (WHERE origin <= %s),
                      bool_and(next_attempt_at <= now()) FILTER (WHERE origin > %s)
               FROM forecast_backlog WHERE site_id = 'site-backfilled'""",
            hour(100), hour(100),
        )
        assert late_due and on_time_due

        # Readings already owed (a replay after an ingest restart) owe nothing new.
        before = backlog(database)
        ingest_hours(database, scheduler, "site-backfilled", range(90, 110))
        assert backlog(database) == before
    finally:
        scheduler.client.close()

    # A worker stopping right after late readings (no round left to close them) owes their
    # hours on its way out: nobody else knows they were late.
    last = ForecastScheduler(settings, database, close_every_s=0)
    for batch in [recent, *backfill[:-1]]:
        ingest_hours(database, last, "site-stopping", batch)
    ingest_hours(database, last, "site-stopping", backfill[-1], close=False)
    last._stopping.set()
    last._run()  # what stop() runs after the last round
    assert owed_hours(database, "site-stopping") == in_order
