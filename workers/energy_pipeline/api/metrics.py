"""Prometheus metrics of the read API. `route` is the route template, never the raw path,
so label cardinality stays bounded whatever clients request."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "energy_api_requests_total", "HTTP requests answered by the read API",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "energy_api_request_duration_seconds", "Time to answer a request",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ROWS = Counter("energy_api_rows_returned_total", "Rows returned in data pages", ["route"])
DB_ERRORS = Counter(
    "energy_api_db_errors_total", "Requests answered 503 because of the database", ["kind"]
)
DB_CONNECTIONS = Gauge(
    "energy_api_db_connections", "Database connections of the pool", ["state"]
)
AUTH_REFUSED = Counter(
    "energy_api_auth_refused_total",
    "Data requests answered 401: no Authorization header (missing), not `Bearer <token>` "
    "(malformed), or a token of no client in the tokens file (unknown)",
    ["reason"],
)
RATE_LIMITED = Counter(
    "energy_api_rate_limited_total", "Requests answered 429 because the client exceeded its "
    "rate (API_RATE_LIMIT, API_RATE_BURST)", ["client"],
)
CLIENTS = Gauge("energy_api_clients", "Clients in the tokens file as last read")
TOKEN_RELOADS = Counter(
    "energy_api_token_reloads_total",
    "Re-reads of the changed tokens file: ok, or error (the previous clients stay valid)",
    ["result"],
)
