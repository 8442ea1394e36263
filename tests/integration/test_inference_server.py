"""`energy-pipeline inference` as a real process over real gRPC, models from a real registry."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
import psycopg2
import pytest
from energy_harness.localstack.process import free_port, wait_until
from energy_harness.localstack.workers import WorkerProcess
from energy_harness.synthetic import synthetic_building
from energy_pipeline.forecasting.hourly_db import read_window, write_hourly_frame
from energy_pipeline.forecasting.models import load_model
from energy_pipeline.forecasting.train import TrainSettings, train_site
from energy_pipeline.forecasting.window import forecast_window
from energy_pipeline.inference.client import ForecasterClient, forecast_request
from energy_pipeline.proto import forecaster_pb2 as pb
from energy_pipeline.proto.forecaster_pb2_grpc import ForecasterStub
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

pytestmark = pytest.mark.integration

FAST = json.dumps({"num_boost_round": 30, "early_stopping_rounds": 5, "max_rows": 8000})
ORIGIN = datetime(2025, 2, 3, tzinfo=UTC)  # 28 days into the synthetic series
HORIZONS = list(range(1, 169))


@pytest.fixture
def db(database: str) -> Iterator[str]:
    url = database
    with psycopg2.connect(url) as conn:
        write_hourly_frame(conn, "site-a", synthetic_building(24 * 35, seed=5))
    conn.close()
    yield url


def train(url: str, **params: object) -> str:
    overrides = {**json.loads(FAST), **params}
    settings = TrainSettings(
        database_url=url, train_backtest_days=7, train_model_params=json.dumps(overrides)
    )
    conn = psycopg2.connect(url)
    try:
        result = train_site(conn, "site-a", settings, force=True)
    finally:
        conn.close()
    assert result is not None and result.record.promoted
    return result.record.version


@pytest.fixture
def inference(db: str, tmp_path: Path) -> Iterator[tuple[WorkerProcess, int]]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "DATABASE_URL": db,
        "GRPC_PORT": str(port),
        "MODEL_REFRESH_S": "0.5",
        "PIPELINE_NAME": "test",
        # One RPC thread: proves the clients' health Watch streams do not occupy threads.
        "GRPC_MAX_WORKERS": "1",
    }
    worker = WorkerProcess("inference", ["inference"], env, tmp_path / "logs").start()
    try:
        yield worker, port
    finally:
        worker.stop(timeout=30)


def health_status(channel: grpc.Channel, service: str = "energy.v1.Forecaster") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def window(url: str) -> list:
    conn = psycopg2.connect(url)
    try:
        return read_window(conn, "site-a", ORIGIN, 336)
    finally:
        conn.close()


def test_serves_health_reflection_forecasts_and_hot_swaps(
    db: str, inference: tuple[WorkerProcess, int]
) -> None:
    worker, port = inference
    client = ForecasterClient(f"127.0.0.1:{port}")
    # Probes and tools use a plain channel: the client's skips endpoints that are unhealthy.
    direct = grpc.insecure_channel(f"127.0.0.1:{port}")
    rows = window(db)
    request = forecast_request("site-a", rows, HORIZONS, ORIGIN)

    # No promoted model yet: alive, but neither ready nor SERVING. Clients check health,
    # so they do not even send; asked directly, the server says why.
    assert worker.healthy()
    assert worker.ready() == (False, "no promoted model yet")
    assert health_status(direct) == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as unhealthy:
        client.forecast(request, 5)
    assert unhealthy.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as missing:
        ForecasterStub(direct).Forecast(request, timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no promoted model" in (missing.value.details() or "")
    # More clients, each holding a health Watch stream open on the server.
    watchers = [ForecasterClient(f"127.0.0.1:{port}") for _ in range(3)]

    first = train(db)
    wait_until(
        lambda: health_status(direct) == health_pb2.HealthCheckResponse.SERVING,
        timeout=30, what="SERVING after promotion", process=worker.process,
    )
    assert health_status(direct, "") == health_pb2.HealthCheckResponse.SERVING
    assert worker.ready()[0]

    for watcher in watchers:  # every client, not just the first, gets served
        assert watcher.forecast(request, 5).model_version == first

    # Reflection describes the service, so grpcurl-like tools need no .proto file.
    reflection = ProtoReflectionDescriptorDatabase(direct)
    assert {"energy.v1.Forecaster", "grpc.health.v1.Health"} <= set(reflection.get_services())

    # The served forecast is the registry's model applied to the same window, exactly.
    response = client.forecast(request, 5)
    assert response.model_version == first and response.method == "model"
    assert response.issued_at.ToDatetime(tzinfo=UTC) == ORIGIN
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT artifact FROM models WHERE version = %s", (first,))
        offline = forecast_window(load_model(cur.fetchone()[0]), rows, HORIZONS)
    conn.close()
    assert [p.horizon for p in response.points] == HORIZONS
    assert response.points[0].target_time.ToDatetime(tzinfo=UTC) == ORIGIN
    for name in ("p10", "p50", "p90"):
        served = np.array([getattr(p, name) for p in response.points])
        np.testing.assert_allclose(served, [getattr(p, name) for p in offline.points], rtol=1e-12)

    info = client.model_info("site-a")
    assert info.version == first and info.site_id == "site-a"
    assert 0 < info.metrics["mase"] < 1 and info.metrics["backtest_origins"] >= 3
    assert info.trained_on_until.ToDatetime(tzinfo=UTC) == datetime(2025, 2, 9, 23, tzinfo=UTC)

    # Bad requests are the caller's fault, with a message.
    for bad, code in [
        (pb.ForecastRequest(site_id="site-a", window=request.window, horizons=[0]),
         grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ForecastRequest(site_id="site-a", horizons=[1]), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ForecastRequest(site_id="elsewhere", window=request.window, horizons=[1]),
         grpc.StatusCode.NOT_FOUND),
    ]:
        with pytest.raises(grpc.RpcError) as error:
            client.forecast(bad, 5)
        assert error.value.code() == code, error.value.details()

    # Deadlines: a request that cannot finish in time is answered DEADLINE_EXCEEDED (a
    # forecast takes a few ms, so with 1-4 ms budgets many calls, not all, run out).
    outcomes = []
    for budget_ms in [1, 2, 3, 4] * 10:
        try:
            client.forecast(request, budget_ms / 1000)
            outcomes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            outcomes.append(exc.code())
    assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert grpc.StatusCode.DEADLINE_EXCEEDED in outcomes
    wait_until(
        lambda: worker.metric(
            "energy_inference_requests_total", {"method": "Forecast", "code": "DEADLINE_EXCEEDED"}
        ) >= 1,
        timeout=10, what="the server to give up on late requests",
    )

    # Hot swap under load: a newly promoted version takes over without a failed request.
    seen: list[str] = []
    errors: list[grpc.RpcError] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                seen.append(client.forecast(request, 5).model_version)
            except grpc.RpcError as exc:
                errors.append(exc)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        second = train(db, num_leaves=7)
        assert second != first
        wait_until(lambda: seen[-5:] == [second] * 5, timeout=30, what="the new version")
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors[:3]
    assert seen[0] == first and seen.count(first) >= 1
    serving = {"site_id": "site-a", "version": second}
    assert worker.metric("energy_inference_model_info", serving) == 1
    assert worker.metric("energy_inference_model_info", {"version": first}) == 0
    assert worker.metric(
        "energy_inference_requests_total", {"method": "Forecast", "code": "OK"}
    ) >= len(seen)
    assert worker.metric("energy_inference_request_seconds_count", {"method": "Forecast"}) > 0

    for other in (*watchers, client):
        other.close()
    direct.close()
    started = time.monotonic()
    assert worker.stop(timeout=30) == 0
    assert time.monotonic() - started < 15

