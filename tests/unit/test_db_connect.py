"""db.connect: the names and DSNs it builds (its connections: tests/integration)."""

from __future__ import annotations

import psycopg2
import pytest
from energy_pipeline.core.settings import load
from energy_pipeline.db.connect import DatabaseSettings, dsn, unreachable, with_ca, worker_name
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


def test_a_ca_file_makes_connections_verify_full_unless_the_url_says_otherwise() -> None:
    url = "postgresql://u:p@db.example:5432/energy"
    assert with_ca(url, "") == url  # no CA: libpq's defaults
    assert with_ca(url, "/etc/ca dir/ca.crt") == (
        f"{url}?sslmode=verify-full&sslrootcert=/etc/ca%20dir/ca.crt")
    assert parse_dsn(with_ca(url, "/etc/ca dir/ca.crt"))["sslrootcert"] == "/etc/ca dir/ca.crt"
    assert with_ca(f"{url}?application_name=x", "/ca.crt") == (
        f"{url}?application_name=x&sslmode=verify-full&sslrootcert=/ca.crt")
    # The URL's own choices win, one by one.
    assert with_ca(f"{url}?sslmode=require", "/ca.crt") == (
        f"{url}?sslmode=require&sslrootcert=/ca.crt")
    assert with_ca(f"{url}?sslmode=disable&sslrootcert=/mine.crt", "/ca.crt") == (
        f"{url}?sslmode=disable&sslrootcert=/mine.crt")
    # key=value strings stay key=value strings.
    assert parse_dsn(with_ca("host=h dbname=d", "/ca.crt")) == {
        "host": "h", "dbname": "d", "sslmode": "verify-full", "sslrootcert": "/ca.crt"}
    # And every setting of `dsn` still comes on top.
    params = parse_dsn(dsn(with_ca(url, "/ca.crt"), application_name="a"))
    assert (params["sslmode"], params["sslrootcert"], params["application_name"]) == (
        "verify-full", "/ca.crt", "a")


def test_database_settings_apply_the_ca_file() -> None:
    env = {"DATABASE_URL": "postgresql://u:p@h/db"}
    assert load(DatabaseSettings, env).database_dsn() == "postgresql://u:p@h/db"
    assert load(DatabaseSettings, {**env, "DATABASE_CA_FILE": "/ca.crt"}).database_dsn() == (
        "postgresql://u:p@h/db?sslmode=verify-full&sslrootcert=/ca.crt")


@pytest.mark.parametrize(("libpq", "fix"), [
    ('connection to server at "h" (10.0.0.1), port 5432 failed: SSL error: certificate verify '
     "failed", "set DATABASE_CA_FILE to the CA that signed the server's certificate"),
    ('connection to server at "h" (10.0.0.1), port 5432 failed: server does not support SSL, '
     "but SSL was required", "turn TLS on in the server (ssl=on), or name a server that has it"),
    ('connection to server at "h" (10.0.0.1), port 5432 failed: FATAL:  no pg_hba.conf entry '
     'for host "10.0.0.2", user "u", database "db", no encryption',
     "the server accepts TLS connections only: set DATABASE_CA_FILE (sslmode=verify-full)"),
    ('connection to server at "h" (10.0.0.1), port 5432 failed: Connection refused\n\tIs the '
     "server running on that host and accepting TCP/IP connections?",
     "start the server or set DATABASE_URL to a reachable one"),
])
def test_an_unreachable_database_names_its_cause_and_the_fix(libpq: str, fix: str) -> None:
    error = unreachable("postgresql://u:secret@h/db", psycopg2.OperationalError(libpq))
    assert error.fix == fix
    assert "secret" not in str(error) and "\n" not in str(error)
    assert str(error).startswith("cannot connect to PostgreSQL at h:5432 "
                                 "(DATABASE_URL=postgresql://u:***@h/db): ")
