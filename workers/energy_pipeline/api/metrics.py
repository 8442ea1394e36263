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
