"""A Forecaster client that balances round-robin over every inference endpoint.

INFERENCE_TARGET forms:
- a gRPC target URI, e.g. `dns:///ep-inference.ns.svc.cluster.local:50051` (a headless
  Service: DNS returns every pod, round_robin connects to all of them and re-resolves
  when a connection breaks or the server ages it out);
- `host:port`, which gRPC resolves through DNS as above;
- a comma list `10.0.0.1:50051,10.0.0.2:50051` (or host names, resolved once at start),
  turned into a static `ipv4:`/`ipv6:` address list.

Only endpoints that report SERVING on grpc.health.v1 receive calls (client-side health
checking), so replicas that are starting without a model or shutting down are skipped.
Every call carries a deadline. UNAVAILABLE calls are retried by gRPC itself (service
config retry policy), which with round_robin lands on the next endpoint, so one dead pod
costs a retry, not a failure. Reconnect backoff is capped at a few seconds so that
forecasts resume soon after the service returns.

TLS (energy_pipeline.inference.tls): mutual, with the client certificate of
GRPC_TLS_CERT_FILE. The server's certificate must name the host of the target (the
headless Service's DNS name, or 127.0.0.1 locally); for a list of pod addresses,
GRPC_TLS_SERVER_NAME says which name to expect instead. Renewed files are picked up
without a restart and without losing a call (ForecasterClient).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Sequence
from datetime import datetime

import grpc

from energy_pipeline.forecasting.rows import HourlyRow
from energy_pipeline.inference.convert import (
    WeatherRow,
    rows_to_proto,
    timestamp,
    weather_to_proto,
)
from energy_pipeline.inference.tls import (
    CertFiles,
    KeyMaterial,
    Reloader,
    channel_credentials,
    warn_plaintext,
)
from energy_pipeline.proto import forecaster_pb2 as pb
from energy_pipeline.proto import forecaster_pb2_grpc as pb_grpc

log = logging.getLogger("energy_pipeline.inference.client")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Forecaster"].full_name

SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    # Client-side health checking: round_robin uses only endpoints whose grpc.health.v1
    # status is SERVING, so a pod that has no model yet, or is draining, gets no calls.
    "healthCheckConfig": {"serviceName": SERVICE_NAME},
    "methodConfig": [
        {
            "name": [{"service": SERVICE_NAME}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}

CHANNEL_OPTIONS = [
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
    # The default reconnect backoff grows to 120 s; after an outage that would keep
    # forecasts waiting long after the service is back.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 3000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


def _split_host_port(entry: str) -> tuple[str, str]:
    entry = entry.strip()
    if entry.startswith("["):  # [::1]:50051
        host, _, port = entry[1:].partition("]:")
        return host, port
    host, sep, port = entry.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"INFERENCE_TARGET entry {entry!r} must be host:port")
    return host, port


def channel_target(target: str) -> str:
    """The gRPC target for INFERENCE_TARGET (see the module docstring)."""
    target = target.strip()
    if not target:
        raise ValueError("INFERENCE_TARGET is empty")
    if "," not in target or target.startswith(("ipv4:", "ipv6:")):
        return target
    if "://" in target or target.startswith(("dns:", "unix:")):
        raise ValueError(f"INFERENCE_TARGET {target!r}: a comma list takes host:port entries")
    entries = [_split_host_port(e) for e in target.split(",") if e.strip()]
    v4: list[str] = []
    v6: list[str] = []
    for host, port in entries:
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            except OSError as exc:
                raise ValueError(f"INFERENCE_TARGET host {host!r}: {exc}") from exc
            addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        for address in dict.fromkeys(addresses):
            if address.version == 4:
                v4.append(f"{address}:{port}")
            else:
                v6.append(f"[{address}]:{port}")
    if v4 and v6:
        # One static target cannot mix address families; IPv4 is what clusters have.
        v6 = []
    if v4:
        return "ipv4:" + ",".join(v4)
    return "ipv6:" + ",".join(v6)


def forecast_request(
    site_id: str, rows: Sequence[HourlyRow], horizons: Sequence[int], origin: datetime | None,
    weather: Sequence[WeatherRow] = (),
) -> pb.ForecastRequest:
    request = pb.ForecastRequest(
        site_id=site_id, window=rows_to_proto(rows), horizons=[int(h) for h in horizons],
        weather_forecast=weather_to_proto(weather),
    )
    if origin is not None:
        request.origin.CopyFrom(timestamp(origin))
    return request


class _Channel:
    """One channel and the calls running on it, so it is closed only once they are done."""

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None,
                 server_name: str, *, connect: bool = False) -> None:
        options = list(CHANNEL_OPTIONS)
        if credentials is not None and server_name:
            # The name checked against the server certificate's SANs when the target does
            # not carry it (a list of pod addresses).
            options.append(("grpc.ssl_target_name_override", server_name))
        self.channel = (
            grpc.secure_channel(target, credentials, options=options)
            if credentials is not None
            else grpc.insecure_channel(target, options=options)
        )
        self.stub = pb_grpc.ForecasterStub(self.channel)
        self.in_flight = 0
        self.retired = False
        self.closed = False
        self.state: grpc.ChannelConnectivity | None = None
        self.channel.subscribe(self._observe, try_to_connect=connect)

    def _observe(self, state: grpc.ChannelConnectivity) -> None:
        self.state = state

    def close(self) -> None:
        self.closed = True
        self.channel.unsubscribe(self._observe)
        self.channel.close()


class ForecasterClient:
    """One channel to all endpoints; thread-safe, calls may run concurrently.

    `tls` None means plaintext (GRPC_TLS=false), and says so in the log. With TLS, the
    certificate files are looked at every `reload_s`; when they changed, a new channel with
    the new credentials takes over once it has a ready endpoint (or at once if the current
    one has none either), and the old channel is closed when its last call has ended, so a
    renewal costs no call.
    """

    def __init__(self, target: str, tls: CertFiles | None, *, server_name: str = "",
                 reload_s: float = 10.0) -> None:
        self.target = channel_target(target)
        self.server_name = server_name
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._reloader: Reloader | None = None
        self._thread: threading.Thread | None = None
        self.renewals = 0  # channels replaced after a certificate renewal
        if tls is None:
            warn_plaintext("client")
            self._current = _Channel(self.target, None, server_name)
            return
        self._reloader = Reloader(tls, "client")
        self._current = self._open(self._reloader.material)
        self.reload_s = reload_s
        self._thread = threading.Thread(
            target=self._watch, name="grpc-tls-reload", daemon=True
        )
        self._thread.start()

    def _open(self, material: KeyMaterial, *, connect: bool = False) -> _Channel:
        return _Channel(
            self.target, channel_credentials(material), self.server_name, connect=connect
        )

    @property
    def certificate_fingerprint(self) -> str | None:
        """SHA-256 of the client certificate the current channel presents (None: plaintext)."""
        return None if self._reloader is None else self._reloader.material.fingerprint

    @property
    def channel(self) -> grpc.Channel:
        return self._current.channel

    # -- certificate renewal -----------------------------------------------------------

    def _watch(self) -> None:
        pending: _Channel | None = None
        while not self._stopping.wait(self.reload_s):
            assert self._reloader is not None
            try:
                material = self._reloader.changed()
            except Exception:  # never end the watcher: the next look may succeed
                log.exception("looking for renewed gRPC certificate files failed")
                continue
            if material is not None:
                if pending is not None:
                    pending.close()
                # Connected now, so that it has a ready endpoint when it takes over.
                pending = self._open(material, connect=True)
            if pending is not None and (
                pending.state == grpc.ChannelConnectivity.READY
                or self._current.state != grpc.ChannelConnectivity.READY
            ):
                self._switch(pending)
                pending = None
        if pending is not None:
            pending.close()

    def _switch(self, new: _Channel) -> None:
        with self._lock:
            old, self._current = self._current, new
            old.retired = True
            idle = old.in_flight == 0
            old.closed = old.closed or idle
            self.renewals += 1
        log.info("gRPC channel renewed with the new certificate",
                 extra={"target": self.target, "calls_in_flight": old.in_flight})
        if idle:
            old.close()

    def _acquire(self) -> _Channel:
        with self._lock:
            current = self._current
            current.in_flight += 1
            return current

    def _release(self, used: _Channel) -> None:
        with self._lock:
            used.in_flight -= 1
            close = used.retired and used.in_flight == 0 and not used.closed
            if close:
                used.closed = True
        if close:
            used.close()

    # -- calls -------------------------------------------------------------------------

    def forecast_future(
        self, request: pb.ForecastRequest, timeout_s: float
    ) -> grpc.Future:
        """Start one Forecast call; `.result()` gives the response or raises grpc.RpcError."""
        used = self._acquire()
        try:
            call = used.stub.Forecast.future(request, timeout=timeout_s)
        except BaseException:
            self._release(used)
            raise
        call.add_done_callback(lambda _: self._release(used))
        return call

    def forecast(self, request: pb.ForecastRequest, timeout_s: float) -> pb.ForecastResponse:
        used = self._acquire()
        try:
            return used.stub.Forecast(request, timeout=timeout_s)
        finally:
            self._release(used)

    def model_info(self, site_id: str = "", timeout_s: float = 5.0) -> pb.ModelInfo:
        used = self._acquire()
        try:
            return used.stub.GetModelInfo(
                pb.GetModelInfoRequest(site_id=site_id), timeout=timeout_s
            )
        finally:
            self._release(used)

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            current = self._current
        current.close()
