"""db.connect, every worker's way to connect, as PostgreSQL and the client socket see it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from energy_harness.localstack import PostgresServer
from energy_pipeline.db.connect import LazyConnection, connect, worker_name

pytestmark = pytest.mark.integration


def settings(conn: Any, *names: str) -> tuple[str, ...]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT " + ", ".join("current_setting(%s)" for _ in names), names
        )
        return tuple(cur.fetchone())


def activity(postgres: PostgresServer, pid: int) -> tuple[str, int]:
    """application_name and client port of a backend, as another session sees them."""
    admin = psycopg2.connect(postgres.admin_dsn)
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT application_name, client_port FROM pg_stat_activity WHERE pid = %s",
                        (pid,))
            return cur.fetchone()
    finally:
        admin.close()


def test_name_keepalives_and_statement_timeout_as_the_server_sees_them(
    database: str, postgres: PostgresServer
) -> None:
    conn = connect(database, application_name=worker_name("ingest", "p1"),
                   statement_timeout_ms=1234, readonly=True)
    try:
        assert settings(
            conn, "application_name", "statement_timeout", "default_transaction_read_only",
            "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
        ) == ("energy-pipeline ingest p1", "1234ms", "on", "10", "5", "3")
        app, port = activity(postgres, conn.get_backend_pid())
        assert app == "energy-pipeline ingest p1"
        # The client end of that same TCP connection probes too.
        sock = socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM)  # a dup
        try:
            assert sock.getsockname()[1] == port
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert [sock.getsockopt(socket.IPPROTO_TCP, o) for o in (
                socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)] == [10, 5, 3]
        finally:
            sock.close()
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction), conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE not_allowed (v int)")
        with pytest.raises(psycopg2.errors.QueryCanceled), conn, conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(5)")
    finally:
        conn.close()


def test_defaults_are_writable_without_timeout_and_keep_the_urls_options(database: str) -> None:
    url = f"{database}?options=-c%20search_path%3Dpg_catalog"
    conn = connect(url, application_name=worker_name("train"), autocommit=True)
    try:
        assert conn.autocommit
        assert settings(conn, "application_name", "statement_timeout", "search_path",
                        "default_transaction_read_only", "tcp_keepalives_idle") == (
            "energy-pipeline train", "0", "pg_catalog", "off", "10")
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE writable (v int)")
    finally:
        conn.close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts TCP connections and never answers PostgreSQL's startup packet."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"postgresql://u:p@127.0.0.1:{listener.getsockname()[1]}/db"
    finally:
        stop.set()
        thread.join()
        for sock in accepted:
            sock.close()
        listener.close()


def test_connecting_gives_up_after_the_connect_timeout(silent_server: str) -> None:
    started = time.monotonic()
    with pytest.raises(psycopg2.OperationalError, match="timeout"):
        connect(silent_server, application_name=worker_name("test"), connect_timeout_s=2)
    assert 1.5 < time.monotonic() - started < 10


def test_lazy_connection_reconnects_after_the_server_dropped_it(
    database: str, postgres: PostgresServer
) -> None:
    lazy = LazyConnection(database, application_name=worker_name("ingest-forecasts", "p1"))
    try:
        first = lazy.get()
        assert lazy.get() is first
        assert activity(postgres, first.get_backend_pid())[0] == (
            "energy-pipeline ingest-forecasts p1")
        admin = psycopg2.connect(postgres.admin_dsn)
        try:
            with admin.cursor() as cur:  # as a server restart or a failover would
                cur.execute("SELECT pg_terminate_backend(%s)", (first.get_backend_pid(),))
        finally:
            admin.close()
        with pytest.raises(psycopg2.OperationalError), first.cursor() as cur:
            cur.execute("SELECT 1")
        assert first.closed
        second = lazy.get()
        assert second is not first
        assert settings(second, "application_name", "tcp_keepalives_idle") == (
            "energy-pipeline ingest-forecasts p1", "10")
        lazy.close()
        assert second.closed
        assert lazy.get() is not second
    finally:
        lazy.close()


def test_each_pipelines_schema_holds_its_own_tables_in_one_database(database: str) -> None:
    """DATABASE_SCHEMA: `migrate` creates the schema and migrates into it, every connection
    of the worker resolves table names there, and two schemas of one database stay apart."""
    from energy_pipeline.core.settings import SettingsError, load
    from energy_pipeline.db.connect import DatabaseSettings, schema_of, with_schema
    from energy_pipeline.db.migrate import latest_version, migrate, schema_version

    urls = {}
    for schema in ("alpha", "beta_2"):
        found = load(DatabaseSettings, {"DATABASE_URL": database, "DATABASE_SCHEMA": schema})
        urls[schema] = found.database_dsn()
        assert schema_of(urls[schema]) == schema
        assert schema_version(urls[schema]) == 0
        assert migrate(urls[schema]) == latest_version()
    for schema, url in urls.items():
        conn = connect(url, application_name=worker_name("test"))
        try:
            with conn, conn.cursor() as cur:
                assert settings(conn, "search_path") == (schema,)
                cur.execute("INSERT INTO readings (site_id, sensor, device_id, ts, value) "
                            "VALUES (%s, 'temperature', '1', now(), 20)", (f"site-{schema}",))
        finally:
            conn.close()
    for schema, url in urls.items():
        conn = connect(url, application_name=worker_name("test"))
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT site_id FROM readings")
                assert cur.fetchall() == [(f"site-{schema}",)]
                cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s "
                            "AND tablename = 'readings'", (schema,))
                assert cur.fetchone() == (1,)
        finally:
            conn.close()
    # The fixture's own tables (public) saw none of it.
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM public.readings")
        assert cur.fetchone() == (0,)
    # A name that would need quoting (or inject SQL) is refused with the others at load.
    with pytest.raises(SettingsError, match="DATABASE_SCHEMA"):
        load(DatabaseSettings, {"DATABASE_URL": database, "DATABASE_SCHEMA": "x; DROP"})
    with pytest.raises(ValueError, match="lower-case"):
        with_schema(database, "Alpha")
