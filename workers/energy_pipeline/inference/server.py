"""`energy-pipeline inference`: the Forecaster gRPC service.

Serves `energy.v1.Forecaster` (proto/energy/v1/forecaster.proto) with the promoted model
of each site, plus the standard `grpc.health.v1` service and server reflection. Health is
NOT_SERVING until the first model is loaded (so no client is routed to a pod that can only
fail) and again from SIGTERM on, while in-flight requests drain.

The main thread polls the registry every MODEL_REFRESH_S seconds and hot-swaps newly
promoted versions (`store.ModelStore`). A promoted version is served whatever its kind
(`default`, or `seed`, the original report's recipe with P10 = P50 = P90): its artifact
says which class reads it. FORECAST_MODEL is the kind the pipeline means to serve; the
sites still served by another kind (until `train` promotes one of the new kind: a forecast
of the old kind beats none meanwhile) are named by a warning whenever the models change,
and every served model shows its kind in energy_inference_model_info.

Deadlines: a request whose deadline has already passed is not computed, and one that
expires while computing is answered with DEADLINE_EXCEEDED instead of a result nobody
waits for.

Mutual TLS (energy_pipeline.inference.tls) unless GRPC_TLS=false: a client must present
a certificate signed by GRPC_TLS_CA_FILE, or its handshake fails. The certificate files
are looked at before every handshake, so a renewed Secret is served without a restart.

Connections are closed by the server after a minute (MAX_CONNECTION_AGE_MS), so clients
balancing round-robin over a headless Service re-resolve its DNS name and spread onto
new pods within about a minute of a scale-up.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import grpc
import psycopg2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Gauge, Histogram

from energy_pipeline.core import metrics as shared_metrics
from energy_pipeline.core.errors import port_in_use
from energy_pipeline.core.logs import configure_logging
from energy_pipeline.core.observability import HealthServer, Heartbeat
from energy_pipeline.core.readiness import (
    NO_ANSWER_YET,
    STALE_AFTER_S,
    Readiness,
    describe,
    track_ready,
)
from energy_pipeline.core.settings import (
    CommonSettings,
    SettingsError,
    env,
    environment_help,
    http_port_field,
    load,
)
from energy_pipeline.db.connect import DatabaseSettings, worker_name
from energy_pipeline.forecasting.kinds import forecast_model_field, model_kind_problems
from energy_pipeline.forecasting.rows import MAX_HORIZON
from energy_pipeline.forecasting.window import forecast_window
from energy_pipeline.inference.convert import (
    forecast_to_proto,
    hour_of,
    proto_to_issued,
    proto_to_rows,
)
from energy_pipeline.inference.store import LoadedModel, ModelStore
from energy_pipeline.inference.tls import GrpcTlsSettings, ServerCertificates, warn_plaintext
from energy_pipeline.proto import forecaster_pb2 as pb
from energy_pipeline.proto import forecaster_pb2_grpc as pb_grpc

log = logging.getLogger("energy_pipeline.inference")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Forecaster"].full_name
# A client re-resolves the headless Service's DNS name when the server ages its connection
# out: this bounds how long a new pod waits for traffic after a scale-up. The grace lets
# calls in flight finish (their deadlines are seconds).
MAX_CONNECTION_AGE_MS = 60_000
MAX_CONNECTION_AGE_GRACE_MS = 30_000

REQUESTS = Counter(
    "energy_inference_requests_total", "Forecaster RPCs handled", ["method", "code"]
)
LATENCY = Histogram(
    "energy_inference_request_seconds",
    "Time to handle one Forecaster RPC",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
MODEL_INFO = Gauge(
    "energy_inference_model_info", "1 for each model being served",
    ["site_id", "version", "kind"],
)
MODELS_LOADED = Gauge("energy_inference_models_loaded", "Promoted models being served")
MODEL_LOADS = Counter(
    "energy_inference_model_loads_total", "Model versions loaded from the registry", ["result"]
)
MODEL_AGE = Gauge(
    "energy_inference_model_refresh_timestamp_seconds",
    "When the registry was last read successfully (Unix time)",
)


@dataclass(frozen=True, kw_only=True)
class InferenceSettings(CommonSettings, DatabaseSettings, GrpcTlsSettings):
    http_port: int = http_port_field(9103)
    grpc_port: int = env("GRPC_PORT", 50051, doc="port of the Forecaster gRPC service", minimum=0)
    model_refresh_s: float = env(
        "MODEL_REFRESH_S", 30.0,
        doc="how often to look for a newly promoted model and hot-swap it", minimum=0.1,
    )
    grpc_max_workers: int = env(
        "GRPC_MAX_WORKERS", 4,
        doc="threads handling RPCs (forecasting holds the GIL much of the time)", minimum=1,
    )
    forecast_model: str = forecast_model_field()

    def __post_init__(self) -> None:
        problems = self.tls_problems() + model_kind_problems(self.forecast_model)
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))


F = TypeVar("F", bound=Callable[..., Any])


def observed(method: str) -> Callable[[F], F]:
    """Count the RPC by status code and time it; turn unexpected errors into INTERNAL."""

    def decorate(handler: F) -> F:
        @wraps(handler)
        def wrapper(self: ForecasterService, request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                return handler(self, request, context)
            except Exception as exc:
                if context.code() is None:  # not an abort() of ours: a bug
                    log.exception("unexpected error", extra={"method": method})
                    context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
                raise
            finally:
                code = context.code() or grpc.StatusCode.OK
                REQUESTS.labels(method, code.name).inc()
                LATENCY.labels(method).observe(time.perf_counter() - started)

        return wrapper  # type: ignore[return-value]

    return decorate


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The registry's metrics as ModelInfo's map of numbers: the backtest's at the top, one
    level of nesting flattened with a dot (`report_split.test_rmse`), null and text left out."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if _number(value):
            out[key] = float(value)
        elif isinstance(value, Mapping):
            out.update({f"{key}.{k}": float(v) for k, v in value.items() if _number(v)})
    return out


def _check_deadline(context: grpc.ServicerContext, stage: str) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline passed {stage}")


class ForecasterService(pb_grpc.ForecasterServicer):
    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def _model(self, site_id: str, context: grpc.ServicerContext) -> LoadedModel:
        model = self.store.get(site_id)
        if model is None:
            # NOT_FOUND, not UNAVAILABLE: another replica has the same registry, so
            # retrying elsewhere cannot help; the caller keeps the work for later.
            context.abort(grpc.StatusCode.NOT_FOUND, f"no promoted model for site {site_id!r}")
        assert model is not None
        return model

    @observed("Forecast")
    def Forecast(
        self, request: pb.ForecastRequest, context: grpc.ServicerContext
    ) -> pb.ForecastResponse:
        _check_deadline(context, "before the request was handled")
        if not request.site_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "site_id is required")
        if not request.window:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "window has no rows")
        horizons = list(request.horizons)
        if not horizons or min(horizons) < 1 or max(horizons) > MAX_HORIZON:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"horizons must be in 1..{MAX_HORIZON}"
            )
        loaded = self._model(request.site_id, context)
        origin = hour_of(request.origin) if request.HasField("origin") else None
        try:
            rows = proto_to_rows(request.window)
            weather = proto_to_issued(request.weather_forecast)
            forecast = forecast_window(loaded.model, rows, horizons, origin, weather)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if any(not math.isfinite(p.p50) for p in forecast.points):
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "window has no known energy consumption to forecast from",
            )
        _check_deadline(context, "while forecasting")
        return forecast_to_proto(request.site_id, loaded.version, forecast)

    @observed("GetModelInfo")
    def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> pb.ModelInfo:
        if request.site_id:
            loaded = self._model(request.site_id, context)
        else:
            newest = self.store.newest()
            if newest is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "no model loaded yet")
            assert newest is not None
            loaded = newest
        info = pb.ModelInfo(
            version=loaded.version,
            site_id=loaded.site_id or "",
            metrics=numeric_metrics(loaded.metrics),
        )
        info.created_at.FromDatetime(loaded.created_at)
        if loaded.trained_on_until is not None:
            info.trained_on_until.FromDatetime(loaded.trained_on_until)
        return info


class InferenceServer:
    """The gRPC server, the health state that follows the model store, and the refresh loop."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.store = ModelStore(
            settings.database_dsn(),
            application_name=worker_name("inference", settings.pipeline_name),
        )
        self.health = health.HealthServicer(
            experimental_non_blocking=True,
            experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1),
        )
        self.server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=settings.grpc_max_workers, thread_name_prefix="rpc"
            ),
            options=[
                # Without this a second server could bind the same port and steal requests.
                ("grpc.so_reuseport", 0),
                ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
                ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
            ],
            # No maximum_concurrent_rpcs: every client keeps a health Watch stream open per
            # connection, which would count against it. Overload is shed instead by the
            # deadline check: a request that waited in the queue past its deadline is
            # answered DEADLINE_EXCEEDED without being computed.
        )
        pb_grpc.add_ForecasterServicer_to_server(ForecasterService(self.store), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        # Client certificates required (mutual TLS) unless GRPC_TLS=false.
        files = settings.tls_files()
        self.certificates = ServerCertificates(files) if files is not None else None
        if self.certificates is None:
            warn_plaintext("server")
        self.port = self._bind(settings.grpc_port)
        self._set_serving(False)
        self.heartbeat = Heartbeat(stale_after=max(120.0, 4 * settings.model_refresh_s))
        self.stopping = threading.Event()
        # The registry is read by every refresh (no check of its own: that is one query
        # every MODEL_REFRESH_S, or every second while no model is loaded), so an answer is
        # stale after a few refreshes. It is optional: see ready().
        self.readiness = Readiness("inference").add(
            "registry",
            required=False,
            stale_after=max(STALE_AFTER_S, 3 * settings.model_refresh_s),
        )

    def _bind(self, port: int) -> int:
        if port:
            # A taken port, found before gRPC's C core writes its own lines about it to stderr.
            try:
                with socket.socket() as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind(("0.0.0.0", port))
            except OSError as exc:
                raise port_in_use("GRPC_PORT", port, exc) from exc
        try:
            bound = self._add_port(f"[::]:{port}")
        except RuntimeError:
            bound = 0
        if not bound:  # no IPv6 in this network namespace
            try:
                bound = self._add_port(f"0.0.0.0:{port}")
            except RuntimeError as exc:  # gRPC says only "Failed to bind"
                raise port_in_use("GRPC_PORT", port) from exc
        return bound

    def _add_port(self, address: str) -> int:
        if self.certificates is None:
            return self.server.add_insecure_port(address)
        return self.server.add_secure_port(address, self.certificates.credentials())

    def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def other_kinds(self) -> dict[str, str]:
        """{site: kind} of the sites served by another kind than FORECAST_MODEL."""
        return {
            site or "*": m.kind
            for site, m in sorted(self.store.models().items(), key=lambda item: item[0] or "")
            if m.kind != self.settings.forecast_model
        }

    def refresh(self) -> None:
        before = {site: (m.version, m.kind) for site, m in self.store.models().items()}
        try:
            result = self.store.refresh()
        except psycopg2.Error as exc:
            # Keep serving what is loaded; the registry being unreachable is not our outage.
            # Logged once per change (and a reminder) by the readiness tracker, not per try.
            self.readiness.failed("registry", describe(exc))
            shared_metrics.ERRORS.labels("inference", type(exc).__name__).inc()
            log.debug("model registry not readable", extra={"error": describe(exc)})
            return
        self.readiness.answered("registry")
        MODEL_AGE.set(time.time())
        MODEL_LOADS.labels("ok").inc(len(result.loaded))
        MODEL_LOADS.labels("failed").inc(len(result.failed))
        after = self.store.models()
        for site, (version, kind) in before.items():
            if site not in after or after[site].version != version:
                MODEL_INFO.remove(site or "", version, kind)
        for site, loaded in after.items():
            MODEL_INFO.labels(site or "", loaded.version, loaded.kind).set(1)
        MODELS_LOADED.set(len(after))
        if result.changed:
            log.info(
                "models swapped",
                extra={
                    "loaded": list(result.loaded),
                    "dropped": list(result.dropped),
                    "serving": {site or "*": m.version for site, m in after.items()},
                    "seconds": round(result.seconds, 3),
                },
            )
            others = self.other_kinds()
            if others:
                log.warning(
                    "serving models of another kind than FORECAST_MODEL until train "
                    "promotes one of it",
                    extra={"forecast_model": self.settings.forecast_model, "sites": others},
                )
        if not self.stopping.is_set():
            self._set_serving(self.store.loaded)

    def ready(self) -> tuple[bool, str]:
        """Ready while a model is loaded, whether or not the registry answers.

        The models are in memory and the registry is only polled for new promotions, so a
        database outage does not stop forecasts: making every replica unready for it would
        turn it into a forecasting outage as well (ingest's scheduler would find no
        endpoint), while nothing newer could be promoted meanwhile anyway. The detail and
        energy_dependency_up{dependency="registry"} say that the models may be stale.
        """
        registry = self.readiness.status().of("registry")
        if not self.store.loaded:
            if registry.up or registry.reason == NO_ANSWER_YET:
                return False, "no promoted model yet"
            return False, f"registry: {registry.reason}"
        detail = f"{len(self.store.models())} model(s) loaded"
        if not registry.up:
            detail += f"; registry: {registry.reason} (serving the models loaded before)"
        return True, detail

    def start(self) -> InferenceServer:
        self.server.start()
        return self

    def serve(self) -> None:
        """Refresh models until asked to stop (main thread), then drain and stop."""
        while not self.stopping.is_set():
            self.refresh()
            self.heartbeat.beat()
            # Without a model, look again soon: there is nothing to serve until then.
            wait = self.settings.model_refresh_s if self.store.loaded else 1.0
            self.stopping.wait(min(wait, self.settings.model_refresh_s))
        self.shutdown()

    def shutdown(self, grace: float = 10.0) -> None:
        # NOT_SERVING first, so balancers stop sending while in-flight requests finish.
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        log.info("stopped")


def run(args: argparse.Namespace) -> int:
    settings = load(InferenceSettings)
    configure_logging("inference", settings.pipeline_name, settings.log_level)
    # The feature code silences numpy's all-NaN warnings (short windows are expected) with
    # warnings.catch_warnings(), which is not thread-safe; with concurrent RPCs they leak
    # to stderr. Silence them process-wide instead.
    warnings.filterwarnings("ignore", message="All-NaN slice encountered", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
    server = InferenceServer(settings)
    track_ready("inference", server.ready)
    signal.signal(signal.SIGTERM, lambda *_: server.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: server.stopping.set())
    server.start()
    http = HealthServer(settings.http_port, server.heartbeat, server.ready).start()
    log.info(
        "inference starting",
        extra={"pid": os.getpid(), "grpc_port": server.port, "http_port": http.port},
    )
    try:
        server.serve()
    finally:
        http.stop()
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "inference",
        help="serve forecasts over gRPC (energy.v1.Forecaster, health, reflection)",
        description=(
            "Serves the promoted model of every site from the `models` table on GRPC_PORT, "
            "hot-swapping newly promoted versions every MODEL_REFRESH_S seconds; metrics "
            "and probes on HTTP_PORT. Runs until SIGTERM or Ctrl-C."
        ),
        epilog=environment_help(InferenceSettings),
    )
    p.set_defaults(func=run)
