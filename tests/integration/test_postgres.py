"""PostgreSQL from the Debian install, in its own data dir, reached over TCP with a password."""

from __future__ import annotations

import io

import psycopg2
import pytest
from energy_harness.localstack import PostgresServer

pytestmark = pytest.mark.integration


def test_copy_100k_rows_and_count_them(postgres: PostgresServer) -> None:
    rows = io.StringIO("".join(f"{i}\tdevice-{i % 4}\t{i * 0.5}\n" for i in range(100_000)))
    with psycopg2.connect(postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE copy_test (id bigint PRIMARY KEY, device text, value float8)")
        cur.copy_expert("COPY copy_test (id, device, value) FROM STDIN", rows)
    with psycopg2.connect(postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT device), max(id) FROM copy_test")
        assert cur.fetchone() == (100_000, 4, 99_999)
        cur.execute("DROP TABLE copy_test")


def test_password_is_required(postgres: PostgresServer) -> None:
    wrong = postgres.dsn.replace(postgres.password, "not-the-password")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(wrong)


def test_data_survives_a_restart(postgres: PostgresServer) -> None:
    with psycopg2.connect(postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE restart_test (v int)")
        cur.execute("INSERT INTO restart_test VALUES (42)")
    postgres.restart()
    with psycopg2.connect(postgres.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT v FROM restart_test")
        assert cur.fetchall() == [(42,)]
        cur.execute("DROP TABLE restart_test")
