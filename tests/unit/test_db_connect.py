"""db.connect: the names and DSNs it builds (its connections: tests/integration)."""

from __future__ import annotations

import pytest
from energy_pipeline.db.connect import dsn, worker_name
from psycopg2.extensions import parse_dsn

pytestmark = pytest.mark.unit


def test_worker_names_fit_the_servers_limit() -> None:
    assert worker_name("api") == "energy-pipeline api"
    assert worker_name("api", "") == "energy-pipeline api"
    assert worker_name("ingest", "prod") == "energy-pipeline ingest prod"
    long = worker_name("api", "x" * 100)
    assert long.startswith("energy-pipeline api xxx") and len(long.encode()) == 63


def test_the_urls_own_settings_are_kept_and_ours_come_last() -> None:
    url = "postgresql://u:p@db.example:5433/energy?options=-c%20search_path%3Dx&sslmode=require"
    params = parse_dsn(dsn(url, application_name="a", statement_timeout_ms=250, readonly=True))
    assert params["options"] == (
        "-c search_path=x -c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5"
        " -c tcp_keepalives_count=3 -c statement_timeout=250 -c default_transaction_read_only=on"
    )
    assert {k: params[k] for k in ("host", "port", "dbname", "sslmode", "application_name",
                                   "connect_timeout", "keepalives")} == {
        "host": "db.example", "port": "5433", "dbname": "energy", "sslmode": "require",
        "application_name": "a", "connect_timeout": "5", "keepalives": "1",
    }
