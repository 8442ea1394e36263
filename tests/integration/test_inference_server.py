"""`energy-pipeline inference` as a real process over real gRPC, models from a real registry;
mutual TLS with certificates from openssl, refused and renewed."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psycopg2
import pytest
from energy_harness.localstack.process import free_port, wait_until
from energy_harness.localstack.workers import WorkerProcess, energy_pipeline_argv
from energy_harness.pki import TestPki, project_secret
from energy_harness.synthetic import synthetic_building
from energy_pipeline.forecasting.hourly_db import read_window, write_hourly_frame
from energy_pipeline.forecasting.models import load_model
from energy_pipeline.forecasting.train import TrainSettings, train_site
from energy_pipeline.forecasting.window import forecast_window
from energy_pipeline.inference.client import ForecasterClient, forecast_request
from energy_pipeline.inference.tls import CertFiles
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
        # Serving, health and hot swaps; mutual TLS has its own tests below.
        "GRPC_TLS": "false",
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
    client = ForecasterClient(f"127.0.0.1:{port}", None)
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
    watchers = [ForecasterClient(f"127.0.0.1:{port}", None) for _ in range(3)]

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



def test_serves_the_reports_seed_model_from_the_registry(
    db: str, inference: tuple[WorkerProcess, int], tmp_path: Path
) -> None:
    """A pipeline switched to seed models (FORECAST_MODEL=seed for train): the seed model is
    trained on the stored hourly_features, promoted, loaded from its LightGBM text export
    and served over gRPC with P10 = P50 = P90, as the recipe has no band."""
    worker, port = inference
    settings = TrainSettings(database_url=db, train_backtest_days=7, forecast_model="seed")
    conn = psycopg2.connect(db)
    try:
        result = train_site(conn, "site-a", settings)
    finally:
        conn.close()
    assert result is not None and result.record.promoted and result.record.kind == "seed"
    wait_until(lambda: worker.ready()[0], timeout=30, what="the seed model loaded",
               process=worker.process)

    rows = window(db)
    client = ForecasterClient(f"127.0.0.1:{port}", None)
    try:
        response = client.forecast(forecast_request("site-a", rows, HORIZONS, ORIGIN), 5)
        info = client.model_info("site-a")
    finally:
        client.close()
    assert response.model_version == result.record.version and response.method == "model"
    p10, p50, p90 = (np.array([getattr(p, q) for p in response.points])
                     for q in ("p10", "p50", "p90"))
    np.testing.assert_array_equal(p10, p50)
    np.testing.assert_array_equal(p90, p50)
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT artifact FROM models WHERE version = %s", (result.record.version,))
        model = load_model(cur.fetchone()[0])
    conn.close()
    assert model.kind == "seed" and len(model.boosters) == 7  # type: ignore[attr-defined]
    offline = forecast_window(model, rows, HORIZONS)
    np.testing.assert_allclose(p50, [p.p50 for p in offline.points], rtol=1e-12)
    # Measured consumption of the synthetic building is tens of kWh: a real forecast.
    assert np.all(np.isfinite(p50)) and 10 < p50.mean() < 200
    assert info.metrics["mase"] > 0 and info.version == result.record.version
    split = result.record.metrics["report_split"]
    assert info.metrics["report_split.test_rmse"] == pytest.approx(split["test_rmse"])
    assert info.metrics["report_split.test_rmse_smoothed"] == pytest.approx(
        split["test_rmse_smoothed"])
    assert worker.metric("energy_inference_model_info",
                         {"site_id": "site-a", "kind": "seed"}) == 1
    # This inference process was started for the default kind (FORECAST_MODEL unset): it
    # serves what is promoted, and says that it is of another kind.
    log = (tmp_path / "logs" / "inference.log").read_text()
    assert "serving models of another kind than FORECAST_MODEL" in log
    assert '"sites": {"site-a": "seed"}' in log


# -- mutual TLS ---------------------------------------------------------------------------

# The name the operator puts in a pipeline's server certificate (render.inference_target).
SERVICE_NAME = "ep-inference.ns.svc.cluster.local"


@dataclass
class TlsSetup:
    pki: TestPki
    worker: WorkerProcess
    port: int
    version: str
    server_mount: Path
    client_mount: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_files(self) -> CertFiles:
        return CertFiles(*(str(self.client_mount / k) for k in ("tls.crt", "tls.key", "ca.crt")))

    def forecasts_ok(self) -> float:
        return self.worker.metric(
            "energy_inference_requests_total", {"method": "Forecast", "code": "OK"}
        )


def secret_files(pki: TestPki, name: str, ca: str = "ca") -> dict[str, bytes]:
    """A Secret's keys as the operator writes them (cert-manager's layout)."""
    return {"tls.crt": (pki.dir / f"{name}.crt").read_bytes(),
            "tls.key": (pki.dir / f"{name}.key").read_bytes(),
            "ca.crt": (pki.dir / f"{ca}.crt").read_bytes()}


def issue_server(pki: TestPki, name: str) -> None:
    pki.issue(name, issuer="ca", dns_names=("localhost", SERVICE_NAME), ips=("127.0.0.1",),
              server=True)


@pytest.fixture
def tls(db: str, tmp_path: Path) -> Iterator[TlsSetup]:
    pki = TestPki(tmp_path / "pki")
    pki.ca("ca")
    pki.ca("other-ca")
    issue_server(pki, "server")
    pki.issue("client", issuer="ca", client=True)
    pki.issue("stranger", issuer="other-ca", client=True)  # a valid cert, from another CA
    server_mount, client_mount = tmp_path / "server-secret", tmp_path / "client-secret"
    project_secret(server_mount, secret_files(pki, "server"))
    project_secret(client_mount, secret_files(pki, "client"))
    version = train(db)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "DATABASE_URL": db, "GRPC_PORT": str(port), "MODEL_REFRESH_S": "0.5",
        "PIPELINE_NAME": "test",
        # GRPC_TLS is not set: mutual TLS is the default.
        "GRPC_TLS_CERT_FILE": str(server_mount / "tls.crt"),
        "GRPC_TLS_KEY_FILE": str(server_mount / "tls.key"),
        "GRPC_TLS_CA_FILE": str(server_mount / "ca.crt"),
    }
    worker = WorkerProcess("inference", ["inference"], env, tmp_path / "logs").start()
    try:
        worker.wait_ready(30)
        yield TlsSetup(pki, worker, port, version, server_mount, client_mount)
    finally:
        worker.stop(timeout=30)


def refusal(
    target: str, credentials: grpc.ChannelCredentials | None, request: Any
) -> grpc.RpcError:
    channel = (grpc.secure_channel(target, credentials) if credentials is not None
               else grpc.insecure_channel(target))
    try:
        with pytest.raises(grpc.RpcError) as error:
            ForecasterStub(channel).Forecast(request, timeout=5)
        return error.value
    finally:
        channel.close()


def s_client(setup: TlsSetup, *cert: str) -> subprocess.CompletedProcess[str]:
    """`openssl s_client`, optionally with a client certificate. TLS 1.2: there the server
    checks the client's certificate before its Finished message, so a refusal is a failed
    handshake on the client's side too (with TLS 1.3 the client finishes first)."""
    cert_args: list[str] = []
    if cert:
        cert_args = ["-cert", str(setup.pki.dir / f"{cert[0]}.crt"),
                     "-key", str(setup.pki.dir / f"{cert[0]}.key")]
    return subprocess.run(
        ["openssl", "s_client", "-connect", setup.target, "-servername", "localhost",
         "-CAfile", str(setup.pki.dir / "ca.crt"), "-verify_return_error", "-alpn", "h2",
         "-tls1_2", *cert_args],
        input="", capture_output=True, text=True, errors="replace", timeout=30,
    )


def server_log(setup: TlsSetup) -> str:
    assert setup.worker.process is not None
    return setup.worker.process.log_path.read_text(errors="replace")


def test_mutual_tls_refuses_clients_without_a_certificate_of_its_ca(
    db: str, tls: TlsSetup
) -> None:
    request = forecast_request("site-a", window(db), HORIZONS, ORIGIN)
    ca = (tls.pki.dir / "ca.crt").read_bytes()

    # The client with the certificate of the pipeline's CA is served.
    client = ForecasterClient(tls.target, tls.client_files())
    try:
        assert client.forecast(request, 5).model_version == tls.version
    finally:
        client.close()
    served = tls.forecasts_ok()
    assert served == 1

    # Refused in the TLS handshake, before any RPC: no certificate, one from another CA,
    # no TLS at all. The handler never runs (the request counter does not move).
    stranger = grpc.ssl_channel_credentials(
        ca, (tls.pki.dir / "stranger.key").read_bytes(), (tls.pki.dir / "stranger.crt").read_bytes()
    )
    # With TLS 1.3 the client's side of the handshake is complete before the server has
    # checked its certificate: the client sees the connection closed, not the reason (the
    # alerts below name it).
    refused = {
        what: refusal(tls.target, credentials, request)
        for what, credentials in (("no certificate", grpc.ssl_channel_credentials(ca)),
                                  ("another CA", stranger), ("plaintext", None))
    }
    closed = (f"failed to connect to all addresses; last error: UNAVAILABLE: "
              f"ipv4:127.0.0.1:{tls.port}: Socket closed")
    assert {what: (e.code(), e.details()) for what, e in refused.items()} == {
        what: (grpc.StatusCode.UNAVAILABLE, closed) for what in refused}
    assert tls.forecasts_ok() == served

    # The same, seen by a client nobody here wrote: the server ends the handshake (closing
    # the connection; gRPC sends no alert) and logs why.
    refusals = {
        None: "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "stranger": "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate",
    }
    for cert, reason in refusals.items():
        before = server_log(tls).count(reason)
        result = s_client(tls, *([cert] if cert else []))
        assert result.returncode == 1, result.stdout + result.stderr
        # s_client accepted the server's certificate; the server refused the client's.
        assert "Verify return code: 0 (ok)" in result.stdout
        assert result.stderr.strip().splitlines()[-1].endswith(
            "SSL routines:ssl3_read_n:unexpected eof while reading:"
            "../ssl/record/rec_layer_s3.c:318:"), result.stderr
        wait_until(lambda r=reason, b=before: server_log(tls).count(r) == b + 1, timeout=10,
                   what=f"the server's log of {reason}")
        assert "Handshake failed with error SSL_ERROR_SSL: " in server_log(tls)
    # With the pipeline's client certificate the handshake completes.
    good = s_client(tls, "client")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Verify return code: 0 (ok)" in good.stdout and "ALPN protocol: h2" in good.stdout
    assert "error:" not in good.stderr, good.stderr
    assert tls.forecasts_ok() == served


def test_the_server_name_is_checked_for_the_service_name_and_for_pod_addresses(
    db: str, tls: TlsSetup
) -> None:
    request = forecast_request("site-a", window(db), HORIZONS, ORIGIN)
    # A list of pod addresses carries no name: the Service's name is checked instead.
    pods = f"127.0.0.1:{tls.port},127.0.0.1:{tls.port}"
    client = ForecasterClient(pods, tls.client_files(), server_name=SERVICE_NAME)
    try:
        assert client.forecast(request, 5).model_version == tls.version
    finally:
        client.close()
    # A name the certificate does not carry is refused by the client.
    wrong = ForecasterClient(tls.target, tls.client_files(), server_name="elsewhere.example")
    try:
        with pytest.raises(grpc.RpcError) as error:
            wrong.forecast(request, 5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (error.value.details() or "").endswith(
            f"ipv4:127.0.0.1:{tls.port}: Custom verification check failed with error: "
            "UNAUTHENTICATED: Hostname Verification Check failed."), error.value.details()
    finally:
        wrong.close()


def presented_certificate(setup: TlsSetup) -> bytes:
    """The DER certificate the server presents to a new connection (Python's ssl module)."""
    context = ssl.create_default_context(cafile=str(setup.pki.dir / "ca.crt"))
    context.load_cert_chain(setup.client_mount / "tls.crt", setup.client_mount / "tls.key")
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", setup.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_certificate_renewal_mid_stream_loses_no_forecast(db: str, tls: TlsSetup) -> None:
    """Both Secrets are renewed (new keys, same CA) while ingest-like traffic runs: batches of
    concurrent Forecast calls, as the scheduler sends them. Every call is answered."""
    request = forecast_request("site-a", window(db), HORIZONS, ORIGIN)
    old_serial = tls.pki.serial(tls.pki.dir / "server.crt")
    assert tls.pki.serial(presented_certificate(tls)) == old_serial
    client = ForecasterClient(tls.target, tls.client_files(), reload_s=0.2)
    old_client = client.certificate_fingerprint
    sent: list[int] = []
    answered: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            calls = [client.forecast_future(request, 10) for _ in range(4)]
            sent.append(len(calls))
            for call in calls:
                try:
                    answered.append(call.result().model_version)
                except grpc.RpcError as exc:
                    errors.append(f"{exc.code()}: {exc.details()}")

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        wait_until(lambda: len(answered) >= 40, timeout=60, what="traffic before renewal")
        issue_server(tls.pki, "server-2")
        tls.pki.issue("client-2", issuer="ca", client=True)
        project_secret(tls.server_mount, secret_files(tls.pki, "server-2"))
        project_secret(tls.client_mount, secret_files(tls.pki, "client-2"))
        before = len(answered)
        # The client took the new certificate on a new channel, the old one is retired.
        wait_until(lambda: client.certificate_fingerprint != old_client and client.renewals == 1,
                   timeout=30, what="the client's channel renewal")
        wait_until(lambda: len(answered) >= before + 40, timeout=60, what="traffic after")
    finally:
        stop.set()
        thread.join(60)
    new_serial = tls.pki.serial(tls.pki.dir / "server-2.crt")
    assert new_serial != old_serial
    # A new connection is served the renewed certificate (no restart: same process).
    assert tls.pki.serial(presented_certificate(tls)) == new_serial
    assert tls.worker.metric(
        "energy_grpc_tls_reloads_total", {"side": "server", "result": "ok"}) == 1
    assert errors == []
    assert len(answered) == sum(sent)
    assert set(answered) == {tls.version}
    # Exactly the calls sent were computed by the server: none lost, none doubled by a retry.
    assert tls.forecasts_ok() == sum(sent)
    client.close()


def test_a_half_renewed_secret_is_not_used_until_it_is_consistent(db: str, tls: TlsSetup) -> None:
    """A new certificate with the old key (a writer that replaced one file, then the other)
    is refused; the server keeps presenting the previous pair until both match."""
    old_serial = tls.pki.serial(tls.pki.dir / "server.crt")
    issue_server(tls.pki, "server-2")
    files = secret_files(tls.pki, "server-2")
    old_key = secret_files(tls.pki, "server")["tls.key"]
    project_secret(tls.server_mount, {**files, "tls.key": old_key})
    assert tls.pki.serial(presented_certificate(tls)) == old_serial
    assert tls.worker.metric(
        "energy_grpc_tls_reloads_total", {"side": "server", "result": "refused"}) == 1
    project_secret(tls.server_mount, files)
    new_serial = tls.pki.serial(tls.pki.dir / "server-2.crt")
    assert tls.pki.serial(presented_certificate(tls)) == new_serial


def test_inference_with_unusable_certificate_files_stops_with_one_line(
    db: str, tmp_path: Path
) -> None:
    pki = TestPki(tmp_path / "pki")
    pki.ca("ca")
    issue_server(pki, "server")
    pki.issue("other", issuer="ca", server=True)
    base = {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "DATABASE_URL": db, "GRPC_PORT": str(free_port()), "HTTP_PORT": str(free_port()),
    }
    files = {"GRPC_TLS_CERT_FILE": str(pki.dir / "server.crt"),
             "GRPC_TLS_KEY_FILE": str(pki.dir / "other.key"),
             "GRPC_TLS_CA_FILE": str(pki.dir / "ca.crt")}
    cases = [
        ({}, "energy-pipeline inference: error: invalid settings: GRPC_TLS_CERT_FILE is "
             "required while GRPC_TLS is true (GRPC_TLS=false for plaintext); GRPC_TLS_KEY_FILE "
             "is required while GRPC_TLS is true (GRPC_TLS=false for plaintext); "
             "GRPC_TLS_CA_FILE is required while GRPC_TLS is true (GRPC_TLS=false for "
             "plaintext); set them in the environment (`energy-pipeline inference --help` "
             "lists them)"),
        (files, f"energy-pipeline inference: error: GRPC_TLS_CERT_FILE {pki.dir}/server.crt "
                f"with GRPC_TLS_KEY_FILE {pki.dir}/other.key: KEY_VALUES_MISMATCH; point "
                "GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE and GRPC_TLS_CA_FILE at PEM files "
                "(GRPC_TLS=false for plaintext)"),
        ({**files, "GRPC_TLS_CA_FILE": str(tmp_path / "missing.crt")},
         f"energy-pipeline inference: error: GRPC_TLS_CA_FILE {tmp_path}/missing.crt: No such "
         "file or directory; point GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE and GRPC_TLS_CA_FILE "
         "at PEM files (GRPC_TLS=false for plaintext)"),
    ]
    for extra, line in cases:
        result = subprocess.run(energy_pipeline_argv(["inference"]), env={**base, **extra},
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1] == line


def test_the_operators_certificates_work_between_real_workers(db: str, tmp_path: Path) -> None:
    """What the operator issues (energy_operator.certificates, made with `cryptography`) is
    what gRPC's TLS stack accepts: the inference process serves with the server Secret, the
    client presents the client Secret and checks the Service's name."""
    from energy_operator import certificates, crd

    spec = crd.with_defaults({"mqtt": {"host": "m"}, "kafka": {"bootstrapServers": "k:1"},
                              "database": {"urlSecret": {"name": "pg"}},
                              "inference": {"tls": {"enabled": True}}})
    ca = certificates.new_ca("ns/ep gRPC CA", datetime.now(UTC))
    mounts = {}
    for side in ("server", "client"):
        secret = certificates.issue_for("ep", "ns", spec, side, ca, datetime.now(UTC))
        mounts[side] = tmp_path / side
        project_secret(mounts[side], {k: v.encode() for k, v in
                                      certificates.secret_data(secret).items()})
    assert certificates.server_names("ep", "ns")[-1] == SERVICE_NAME
    version = train(db)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "DATABASE_URL": db, "GRPC_PORT": str(port), "MODEL_REFRESH_S": "0.5",
        **{var: str(mounts["server"] / key) for var, key in certificates.TLS_FILES.items()},
    }
    worker = WorkerProcess("inference", ["inference"], env, tmp_path / "logs").start()
    client = ForecasterClient(
        f"127.0.0.1:{port}",
        CertFiles(*(str(mounts["client"] / k) for k in ("tls.crt", "tls.key", "ca.crt"))),
        server_name=SERVICE_NAME,
    )
    try:
        worker.wait_ready(30)
        request = forecast_request("site-a", window(db), HORIZONS, ORIGIN)
        assert client.forecast(request, 5).model_version == version
    finally:
        client.close()
        worker.stop(timeout=30)
