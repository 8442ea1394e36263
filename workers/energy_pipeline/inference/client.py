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
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Sequence
from datetime import datetime

import grpc

from energy_pipeline.forecasting.rows import HourlyRow
from energy_pipeline.inference.convert import rows_to_proto, timestamp
from energy_pipeline.proto import forecaster_pb2 as pb
from energy_pipeline.proto import forecaster_pb2_grpc as pb_grpc

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
    site_id: str, rows: Sequence[HourlyRow], horizons: Sequence[int], origin: datetime | None
) -> pb.ForecastRequest:
    request = pb.ForecastRequest(
        site_id=site_id, window=rows_to_proto(rows), horizons=[int(h) for h in horizons]
    )
    if origin is not None:
        request.origin.CopyFrom(timestamp(origin))
    return request


class ForecasterClient:
    """One channel to all endpoints; thread-safe, calls may run concurrently."""

    def __init__(self, target: str) -> None:
        self.target = channel_target(target)
        self.channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.ForecasterStub(self.channel)

    def forecast_future(
        self, request: pb.ForecastRequest, timeout_s: float
    ) -> grpc.Future:
        """Start one Forecast call; `.result()` gives the response or raises grpc.RpcError."""
        return self.stub.Forecast.future(request, timeout=timeout_s)

    def forecast(self, request: pb.ForecastRequest, timeout_s: float) -> pb.ForecastResponse:
        return self.stub.Forecast(request, timeout=timeout_s)

    def model_info(self, site_id: str = "", timeout_s: float = 5.0) -> pb.ModelInfo:
        return self.stub.GetModelInfo(pb.GetModelInfoRequest(site_id=site_id), timeout=timeout_s)

    def close(self) -> None:
        self.channel.close()
