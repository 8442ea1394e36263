"""Simulator -> MQTT -> bridge -> Kafka -> ingest -> PostgreSQL -> train -> inference -> forecasts.

One scenario, all real processes: data arrives while inference is down (ingestion goes on,
forecasts are owed); inference processes start without a model (alive, NOT_SERVING, no
calls); `train` registers a model, both processes serve it round-robin and the backlog
drains; then one process is killed, the other serves alone and is killed too while data
flows, and a restarted process catches up. At the end every closed hour of every site has
its forecast, each equal (within the backtest's error band; in fact exactly) to what the
registered model predicts offline for the same window.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from energy_harness.localstack.process import free_port
from energy_harness.pki import grpc_tls_env
from energy_harness.testing import wait_for
from energy_pipeline.cli import build_parser
from energy_pipeline.forecasting.hourly_db import read_site_weather, read_window
from energy_pipeline.forecasting.models import load_model
from energy_pipeline.forecasting.window import forecast_window
from energy_pipeline.simulation.commands import config_from_args

from .conftest import Pipeline

pytestmark = pytest.mark.e2e

START = datetime(2025, 1, 6, tzinfo=UTC)
SITES, DEVICES = 2, 2
PHASE1_HOURS, PHASE2_HOURS = 18 * 24, 48
HORIZONS = 24  # FORECAST_HORIZONS: a day ahead keeps the test light; 168 works the same
HISTORY = 336
POLL_S = 0.5  # between two checks of a wait, each a query or a /metrics scrape


def simulation(start_hour: int, hours: int) -> list[str]:
    start = (START + timedelta(hours=start_hour)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ["--sites", str(SITES), "--devices", str(DEVICES), "--interval", "1h",
            "--duration", f"{hours}h", "--start", start, "--seed", "5", "--fault-rate", "0"]


def readings_of(sim_args: list[str]) -> int:
    args = build_parser().parse_args(["simulate", *sim_args])
    return config_from_args(args, datetime.now(UTC)).total_readings


def scalar(dsn: str, sql: str, *args: object) -> object:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        value = cur.fetchone()[0]
    conn.close()
    return value


def backlog(dsn: str) -> int:
    return int(scalar(dsn, "SELECT count(*) FROM forecast_backlog"))  # type: ignore[arg-type]


def forecast_origins(dsn: str) -> dict[tuple[str, datetime], int]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT site_id, issued_at, count(*) FROM forecasts GROUP BY 1, 2")
        rows = {(site, issued.astimezone(UTC)): n for site, issued, n in cur.fetchall()}
    conn.close()
    return rows


def owed(last_reading_hour: int) -> dict[tuple[str, datetime], int]:
    """Every closed hour of every site as (site, origin): the hour closes when the watermark
    (the last reading, on the hour) is at least its end plus 120 s of lateness."""
    last_closed = last_reading_hour - 2
    return {
        (f"site-{s}", START + timedelta(hours=h + 1)): HORIZONS
        for s in range(SITES)
        for h in range(last_closed + 1)
    }


class Phases:
    """Seconds per phase, printed as they pass (pytest -s shows them; failures always do)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        print(f"[{now - self.last:6.1f}s] {name}", flush=True)
        self.last = now


def test_forecasts_for_every_closed_hour_survive_inference_outages(pipeline: Pipeline) -> None:
    phase = Phases()
    dsn = pipeline.env["DATABASE_URL"]
    ports = [free_port(), free_port()]
    target = ",".join(f"127.0.0.1:{port}" for port in ports)
    # Mutual TLS as deployed. A list of addresses (pod IPs) names no host: the client checks
    # the server certificate for GRPC_TLS_SERVER_NAME instead (the Service's name on
    # Kubernetes, `localhost` in these certificates).
    tls = grpc_tls_env(pipeline.log_dir.parent / "grpc-tls")
    client_tls = {**tls["ingest"], "GRPC_TLS_SERVER_NAME": "localhost"}
    bridge = pipeline.start("bridge", ["bridge"], MQTT_CLIENT_ID="bridge-forecast")
    bridge.wait_ready()
    ingests = [
        pipeline.start(f"ingest-{i}", ["ingest"], INFERENCE_TARGET=target, **client_tls,
                       FORECAST_HORIZONS=str(HORIZONS), FORECAST_HISTORY_HOURS=str(HISTORY))
        for i in range(2)
    ]
    phase("bridge and ingest up")

    # Phase 1: 18 days of data while no inference process runs. Ingestion is unaffected;
    # the closed hours become owed forecasts.
    phase1 = simulation(0, PHASE1_HOURS)
    simulator = pipeline.start("simulate-1", ["simulate", *phase1, "--client-id", "sim-1"],
                               wait_ready=False)
    assert simulator.wait(timeout=240) == 0
    phase("phase 1 published")
    total = readings_of(phase1)
    wait_for(lambda: scalar(dsn, "SELECT count(*) FROM readings") == total,
             120, "phase 1 readings", POLL_S)
    phase("phase 1 stored")
    expected = owed(PHASE1_HOURS - 1)
    wait_for(lambda: backlog(dsn) == len(expected), 120, "phase 1 hours to be owed", POLL_S)
    wait_for(lambda: max(i.metric("energy_forecast_backlog") for i in ingests) == len(expected),
             120, "the backlog gauge", POLL_S)
    assert sum(i.metric("energy_forecast_rpc_total", {"code": "UNAVAILABLE"}) for i in ingests) > 0
    assert forecast_origins(dsn) == {}
    phase("phase 1 hours owed")

    # Inference processes without a model are alive but NOT_SERVING, and get no calls.
    servers = [
        pipeline.start(f"inference-{i}", ["inference"], GRPC_PORT=str(port), MODEL_REFRESH_S="1",
                       **tls["inference"])
        for i, port in enumerate(ports)
    ]
    time.sleep(3)
    assert backlog(dsn) == len(expected) and forecast_origins(dsn) == {}
    assert all(s.metric("energy_inference_requests_total") == 0 for s in servers)

    # `train` registers and promotes a model per site from the stored hourly features.
    trainer = pipeline.start(
        "train", ["train"], wait_ready=False, TRAIN_BACKTEST_DAYS="3",
        TRAIN_MODEL_PARAMS=json.dumps({"num_boost_round": 80, "max_rows": 20000}),
    )
    assert trainer.wait(timeout=300) == 0, trainer.process.log_tail()  # type: ignore[union-attr]
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT site_id, version, metrics FROM models WHERE promoted ORDER BY 1")
        models = {site: (version, metrics) for site, version, metrics in cur.fetchall()}
    conn.close()
    assert sorted(models) == ["site-0", "site-1"]
    assert all(m["mae"] > 0 and m["backtest_origins"] >= 1 for _, m in models.values())
    phase("trained")

    # Both load it and turn SERVING; ingest balances over both and catches up.
    for server in servers:
        server.wait_ready(60)
    phase("inference up")
    wait_for(lambda: backlog(dsn) == 0, 150, "the backlog to drain", POLL_S)
    phase("backlog drained")
    assert forecast_origins(dsn) == expected
    for server in servers:  # round robin reached both
        assert server.metric("energy_inference_requests_total",
                             {"method": "Forecast", "code": "OK"}) > 0, server.name

    # Phase 2: one server killed before the data comes, the other while it flows.
    servers[0].kill()
    before = len(forecast_origins(dsn))
    phase2 = simulation(PHASE1_HOURS, PHASE2_HOURS)
    simulator = pipeline.start("simulate-2", ["simulate", *phase2, "--rate", "100",
                                              "--client-id", "sim-2"], wait_ready=False)
    wait_for(lambda: len(forecast_origins(dsn)) > before, 120, "forecasts from the survivor",
             POLL_S)
    servers[1].kill()
    assert simulator.wait(timeout=240) == 0
    total += readings_of(phase2)
    wait_for(lambda: scalar(dsn, "SELECT count(*) FROM readings") == total,
             120, "phase 2 readings", POLL_S)
    expected = owed(PHASE1_HOURS + PHASE2_HOURS - 1)
    wait_for(lambda: backlog(dsn) + len(forecast_origins(dsn)) == len(expected),
             120, "phase 2 hours to be owed", POLL_S)
    assert backlog(dsn) > 0  # delayed ...
    time.sleep(1)
    assert all(i.alive() for i in ingests)
    phase("phase 2 stored with inference down")

    # ... never lost: a restarted server (same address) takes the backlog.
    pipeline.start("inference-0-again", ["inference"], GRPC_PORT=str(ports[0]),
                   MODEL_REFRESH_S="1", **tls["inference"]).wait_ready(60)
    wait_for(lambda: backlog(dsn) == 0, 150, "the backlog to drain after the outage", POLL_S)
    phase("backlog drained after the outage")
    assert forecast_origins(dsn) == expected
    wait_for(lambda: max(i.metric("energy_forecast_backlog") for i in ingests) == 0,
             30, "the backlog gauge to fall to 0", POLL_S)

    # Served forecasts equal what the registered model predicts offline for the same window
    # (the acceptance bound is the backtest's MAE; being the same computation, the
    # difference is in fact zero).
    conn = psycopg2.connect(dsn)
    try:
        for site, (version, metrics) in models.items():
            artifact = scalar(dsn, "SELECT artifact FROM models WHERE version = %s", version)
            model = load_model(artifact)  # type: ignore[arg-type]
            # The simulator published weather forecasts: `train` fitted the model with them,
            # and ingest sent each origin the forecast as it stood before it.
            assert model.future == ("temperature", "humidity")  # type: ignore[attr-defined]
            for origin_hour in (24, 200, PHASE1_HOURS - 1, PHASE1_HOURS + 10,
                                PHASE1_HOURS + PHASE2_HOURS - 2):
                origin = START + timedelta(hours=origin_hour)
                weather = read_site_weather(conn, site, origin - timedelta(days=1), origin)
                offline = forecast_window(model, read_window(conn, site, origin, HISTORY),
                                          range(1, HORIZONS + 1), issued=weather)
                with conn.cursor() as cur:
                    cur.execute(
                        """SELECT horizon, p10, p50, p90, model_version FROM forecasts
                           WHERE site_id = %s AND issued_at = %s ORDER BY horizon""",
                        (site, origin),
                    )
                    stored = cur.fetchall()
                assert [row[0] for row in stored] == list(range(1, HORIZONS + 1))
                assert {row[4] for row in stored} == {version}
                for (_, p10, p50, p90, _), point in zip(stored, offline.points, strict=True):
                    assert abs(p50 - point.p50) <= metrics["mae"], (site, origin)
                    assert p50 == pytest.approx(point.p50, rel=1e-9)
                    assert (p10, p90) == pytest.approx((point.p10, point.p90), rel=1e-9)
    finally:
        conn.close()
    phase("offline comparison")
