"""aiohttp applications: the read API, and the small ops app (/healthz, /readyz, /metrics)
served on HTTP_PORT like every other worker, so probes and scraping look the same for all.

Request flow: on data routes, the bearer token (401) and the client's rate (429) first, so a
client without a token learns nothing else; then parse and validate parameters (400),
negotiate the format (406), then one call into a query thread for the page (and, only when
the page is empty, whether the site exists at all: 404). Every error is an RFC 9457 problem
document, whatever format was asked for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import psycopg2
import psycopg2.errors
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from energy_pipeline.api import metrics
from energy_pipeline.api.auth import (
    ANONYMOUS,
    RateLimiter,
    Refusal,
    Tokens,
    bearer_token,
    retry_after,
)
from energy_pipeline.api.paging import encode_cursor, iso, page_link
from energy_pipeline.api.params import (
    BadRequest,
    check_site,
    parse_forecasts,
    parse_hourly,
    parse_models,
    parse_readings,
    parse_sites,
)
from energy_pipeline.api.pool import ConnectionPool, Deadline, PoolTimeout, QueryTimeout
from energy_pipeline.api.queries import (
    Page,
    fetch_forecasts,
    fetch_hourly,
    fetch_models,
    fetch_readings,
    fetch_sites,
    site_exists,
)
from energy_pipeline.api.queries import readiness as schema_ready
from energy_pipeline.api.render import NotAcceptable, csv_page, json_page, negotiate, problem
from energy_pipeline.api.settings import ApiSettings
from energy_pipeline.api.spec import (
    API_PREFIX,
    CSV_TYPE,
    JSON_TYPE,
    PROBLEM_TYPE,
    Route,
    openapi_document,
    routes,
)
from energy_pipeline.core.contracts import SENSORS
from energy_pipeline.core.readiness import Prober, Readiness, Unready, track_ready
from energy_pipeline.db.connect import worker_name
from energy_pipeline.db.probe import DatabaseCheck

log = logging.getLogger("energy_pipeline.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Pages bigger than this are rendered off the event loop, so probes stay prompt.
RENDER_OFFLOAD_ROWS = 500
# Only the first /readyz waits, at most this long, for the first database check: after that
# it answers from the last check at once.
READY_TIMEOUT_S = 2.5
QUIET_ROUTES = {"/healthz", "/readyz", "/metrics"}


class ApiError(Exception):
    def __init__(self, status: int, title: str, detail: str,
                 errors: Sequence[Mapping[str, str]] = (),
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.errors = tuple(errors)
        self.headers = dict(headers or {})


def _version() -> str:
    try:
        return metadata.version("energy-pipeline")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class ApiState:
    settings: ApiSettings
    pool: ConnectionPool
    routes: dict[str, Route] = field(init=False)
    openapi: bytes = field(init=False)
    draining: bool = False
    # Readiness: the database answers and has the tables we read. Checked every few seconds
    # on a connection of its own (started by `serve`), not in /readyz and not through the
    # pool: a probe never waits behind slow queries, and a busy pool is not an outage.
    readiness: Readiness = field(init=False)
    probe: Prober = field(init=False)
    schema_version: int | None = None
    # The clients that may read (None: API_AUTH=none, every request is ANONYMOUS).
    tokens: Tokens | None = None
    limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.routes = {r.name: r for r in routes(self.settings.page_sizes)}
        self.limiter = RateLimiter(self.settings.api_rate_limit, self.settings.api_rate_burst)
        document = openapi_document(self.settings.page_sizes, _version())
        self.openapi = json.dumps(document, indent=1).encode()
        self.readiness = Readiness("api").add("database")
        check = DatabaseCheck(
            self.settings.database_dsn(),
            application_name=worker_name("api-ready", self.settings.pipeline_name),
            query=self._check_schema,
        )
        self.probe = Prober(self.readiness, {"database": check})
        track_ready("api", self.ready)

    def _check_schema(self, conn: Any) -> None:
        ok, detail, self.schema_version = schema_ready(conn)
        if not ok:
            raise Unready(detail)

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "shutting down"
        return self.readiness.check()


STATE = web.AppKey("state", ApiState)
# The client a data request was authenticated as (for the request's log line).
CLIENT = web.RequestKey("client", str)


# ---- helpers -----------------------------------------------------------------------------


def _not_found_site(site: str) -> ApiError:
    shown = site[:80]
    return ApiError(404, "Not Found", f"no site {shown!r} (GET {API_PREFIX}/sites lists them)",
                    [{"parameter": "site", "in": "path", "message": f"no site {shown!r}"}])


async def _query(state: ApiState, work: Callable[[Any], Any]) -> Any:
    try:
        return await state.pool.run(work)
    except QueryTimeout as exc:
        metrics.DB_ERRORS.labels("timeout").inc()
        raise ApiError(503, "Service Unavailable",
                       f"{exc}; narrow the time window or lower limit") from exc
    except PoolTimeout as exc:
        metrics.DB_ERRORS.labels("busy").inc()
        raise ApiError(503, "Service Unavailable", str(exc)) from exc
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn) as exc:
        # UndefinedColumn: a newer API than the schema (models.feature_importances, 5).
        metrics.DB_ERRORS.labels("schema").inc()
        raise ApiError(503, "Service Unavailable", "database schema not migrated yet") from exc
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        metrics.DB_ERRORS.labels("unavailable").inc()
        log.warning("database unavailable", extra={"error": str(exc).strip()[:500]})
        raise ApiError(503, "Service Unavailable", "database unavailable") from exc


async def _render(
    request: web.Request, route: Route, fmt: str, page: Page, envelope: dict[str, Any],
    link_params: list[tuple[str, str]], name: str,
) -> web.Response:
    assert route.table is not None
    table = route.table
    next_link = None
    if page.next_key is not None:
        cursor = encode_cursor(name, page.next_key)
        next_link = page_link(request.path, [*link_params, ("cursor", cursor)])

    def body() -> bytes:
        if fmt == "csv":
            return csv_page(table, page.rows, envelope)
        return json_page(table, page.rows, envelope, next_link)

    if len(page.rows) > RENDER_OFFLOAD_ROWS:
        data = await asyncio.get_running_loop().run_in_executor(None, body)
    else:
        data = body()
    request["rows"] = len(page.rows)
    metrics.ROWS.labels(route.path).inc(len(page.rows))
    headers = {"Vary": "Accept"}
    if next_link:
        headers["Link"] = f'<{next_link}>; rel="next"'
    if fmt == "csv":
        site = envelope.get("site") or "sites"
        headers["Content-Disposition"] = f'attachment; filename="{site}-{name}.csv"'
        response = web.Response(body=data, content_type=CSV_TYPE, charset="utf-8",
                                headers=headers)
    else:
        response = web.Response(body=data, content_type=JSON_TYPE, headers=headers)
    if len(data) > 1024:
        response.enable_compression()  # gzip/deflate only if the client's Accept-Encoding says
    return response


def _site(request: web.Request) -> str:
    site = request.match_info["site"]
    if not check_site(site):
        raise _not_found_site(site)
    return site


async def _site_page(state: ApiState, site: str, fetch: Callable[[Any], Page]) -> Page:
    """`fetch(conn)`'s page of a site's rows; 404 when it is empty because there is no such
    site (asked only then, on the same connection)."""

    def work(conn: Any) -> tuple[Page, bool]:
        page = fetch(conn)
        return page, bool(page.rows) or site_exists(conn, site)

    page, exists = await _query(state, work)
    if not exists:
        raise _not_found_site(site)
    return page


# ---- data handlers -----------------------------------------------------------------------


async def list_sites(request: web.Request) -> web.Response:
    state = request.app[STATE]
    route = state.routes["listSites"]
    q = parse_sites(request.query, route.query_params, state.settings.page_sizes)
    fmt = negotiate(q.common.format, request.headers.get("Accept"))
    page = await _query(state, lambda conn: fetch_sites(conn, q))
    return await _render(request, route, fmt, page, {}, list(q.common.echo), "sites")


async def get_readings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    route = state.routes["getReadings"]
    site = _site(request)
    q = parse_readings(site, request.query, route.query_params, state.settings.page_sizes,
                       datetime.now(UTC))
    fmt = negotiate(q.common.format, request.headers.get("Accept"))
    budget = state.settings.api_statement_timeout_ms
    page = await _site_page(state, site, lambda conn: fetch_readings(conn, q, Deadline(budget)))
    envelope = {"site": site, "from": q.start, "to": q.end, "sensors": list(q.sensors),
                "units": {s: SENSORS[s].unit for s in q.sensors}}
    link = [*q.common.echo, ("from", iso(q.start)), ("to", iso(q.end))]
    return await _render(request, route, fmt, page, envelope, link, "readings")


async def get_hourly(request: web.Request) -> web.Response:
    state = request.app[STATE]
    route = state.routes["getHourly"]
    site = _site(request)
    q = parse_hourly(site, request.query, route.query_params, state.settings.page_sizes,
                     datetime.now(UTC))
    fmt = negotiate(q.common.format, request.headers.get("Accept"))
    page = await _site_page(state, site, lambda conn: fetch_hourly(conn, q))
    envelope = {"site": site, "from": q.start, "to": q.end}
    link = [*q.common.echo, ("from", iso(q.start)), ("to", iso(q.end))]
    return await _render(request, route, fmt, page, envelope, link, "hourly")


async def get_forecasts(request: web.Request) -> web.Response:
    state = request.app[STATE]
    route = state.routes["getForecasts"]
    site = _site(request)
    q = parse_forecasts(site, request.query, route.query_params, state.settings.page_sizes,
                        datetime.now(UTC))
    fmt = negotiate(q.common.format, request.headers.get("Accept"))
    page = await _site_page(state, site, lambda conn: fetch_forecasts(conn, q))
    issued = page.found.get("issued_at")
    envelope = {"site": site, "issued_at": issued}
    # Pin the run: a newer run issued while the client pages must not change later pages.
    link = [*q.common.echo, *([("issued", iso(issued))] if issued else [])]
    link += [(k, iso(v)) for k, v in (("from", q.start), ("to", q.end)) if v is not None]
    return await _render(request, route, fmt, page, envelope, link, "forecasts")


async def get_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    route = state.routes["getModels"]
    site = _site(request)
    q = parse_models(site, request.query, route.query_params, state.settings.page_sizes)
    fmt = negotiate(q.common.format, request.headers.get("Accept"))
    page = await _site_page(state, site, lambda conn: fetch_models(conn, q))
    return await _render(request, route, fmt, page, {"site": site}, list(q.common.echo),
                         "models")


# ---- meta handlers -----------------------------------------------------------------------


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[STATE].openapi, content_type=JSON_TYPE)


async def healthz(request: web.Request) -> web.Response:
    # Answering at all proves the event loop runs; the database is readiness' business, so
    # a database outage makes pods unready, never restarts them.
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not state.probe.wait_first_round(0):
        # Just started: one wait for the first check beats answering "no answer yet".
        await asyncio.to_thread(state.probe.wait_first_round, READY_TIMEOUT_S)
    ok, detail = state.ready()
    body = {
        "status": "ready" if ok else "not ready",
        "detail": detail,
        "schema_version": state.schema_version,
    }
    return web.json_response(body, status=200 if ok else 503)


async def get_metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.tokens is not None:
        # Requests check the tokens file as they come; a scrape too, so that the clients'
        # gauge and a broken file show up even while nobody reads.
        state.tokens.refresh()
    in_use, idle = state.pool.stats()
    metrics.DB_CONNECTIONS.labels("in_use").set(in_use)
    metrics.DB_CONNECTIONS.labels("idle").set(idle)
    return web.Response(body=generate_latest(REGISTRY),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


HANDLERS: dict[str, Handler] = {
    "listSites": list_sites,
    "getReadings": get_readings,
    "getHourly": get_hourly,
    "getForecasts": get_forecasts,
    "getModels": get_models,
    "getOpenApi": get_openapi,
    "healthz": healthz,
    "readyz": readyz,
    "metrics": get_metrics,
}
OPS_ROUTES = ("healthz", "readyz", "metrics")


# ---- middleware --------------------------------------------------------------------------


def _problem_response(exc: ApiError) -> web.Response:
    return web.Response(
        body=problem(exc.status, exc.title, exc.detail, exc.errors),
        status=exc.status, content_type=PROBLEM_TYPE, headers=exc.headers,
    )


def _as_api_error(request: web.Request, exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, BadRequest):
        return ApiError(400, "Bad Request", exc.detail, [e.as_dict() for e in exc.errors])
    if isinstance(exc, NotAcceptable):
        return ApiError(406, "Not Acceptable", str(exc),
                        [{"parameter": "Accept", "in": "header", "message": str(exc)}])
    if isinstance(exc, web.HTTPException):
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        if exc.status == 404:
            detail = f"no such path {request.path[:200]!r}; see {API_PREFIX}/openapi.json"
        elif exc.status == 405:
            detail = f"method {request.method} not allowed; this API is read-only (GET)"
        else:
            detail = exc.reason
        return ApiError(exc.status, exc.reason, detail, headers=headers)
    log.exception("unhandled error", extra={"path": request.path}, exc_info=exc)
    return ApiError(500, "Internal Server Error", "unexpected error (logged)")


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Problem documents for every error, plus metrics and one JSON log line per request."""
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    status = 500
    try:
        try:
            response = await handler(request)
        except Exception as exc:
            response = _problem_response(_as_api_error(request, exc))
        status = response.status
        return response
    finally:
        elapsed = time.perf_counter() - started
        metrics.REQUESTS.labels(route, request.method, str(status)).inc()
        metrics.LATENCY.labels(route).observe(elapsed)
        level = logging.DEBUG if route in QUIET_ROUTES and status < 500 else logging.INFO
        log.log(level, "request", extra={
            "method": request.method, "path": request.path_qs[:500], "route": route,
            "status": status, "duration_ms": round(elapsed * 1000, 2),
            "rows": request.get("rows"), "remote": request.remote,
            "client": request.get(CLIENT),
        })


def _authenticate(state: ApiState, request: web.Request) -> str:
    """The client making `request`, or ApiError 401."""
    if state.tokens is None:
        return ANONYMOUS
    token = bearer_token(request.headers)
    if isinstance(token, str):
        client = state.tokens.identify(token)
        if client is not None:
            return client
        token = Refusal("unknown", "the token is not one of a client in the tokens file")
    metrics.AUTH_REFUSED.labels(token.reason).inc()
    raise ApiError(401, "Unauthorized", token.detail,
                   [{"parameter": "Authorization", "in": "header", "message": token.detail}],
                   headers={"WWW-Authenticate": token.challenge})


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No token, no data: data routes need a client's bearer token, within its rate."""
    state = request.app[STATE]
    route = state.routes.get(request.match_info.route.name or "")
    if route is None or route.table is None:  # health, metrics, the OpenAPI document, 404s
        return await handler(request)
    client = _authenticate(state, request)
    request[CLIENT] = client
    wait = state.limiter.take(client)
    if wait > 0:
        metrics.RATE_LIMITED.labels(client).inc()
        raise ApiError(
            429, "Too Many Requests",
            f"client {client!r} exceeded {state.settings.api_rate_limit:g} requests per second "
            f"(burst {state.settings.api_rate_burst}); retry after {retry_after(wait)} s",
            headers={"Retry-After": retry_after(wait)},
        )
    return await handler(request)


def _app(state: ApiState, names: Sequence[str]) -> web.Application:
    # observe outermost: refusals are logged, counted and turned into problem documents too.
    app = web.Application(middlewares=[observe, guard])
    app[STATE] = state
    for name in names:
        # GET only: HEAD would run the query to throw the body away.
        app.router.add_get(state.routes[name].path, HANDLERS[name], name=name, allow_head=False)
    return app


def create_app(state: ApiState) -> web.Application:
    """The read API: every route of the spec table, health and metrics included."""
    return _app(state, list(state.routes))


def create_ops_app(state: ApiState) -> web.Application:
    return _app(state, OPS_ROUTES)
