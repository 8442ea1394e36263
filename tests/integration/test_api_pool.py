"""The read API's connection pool against real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from energy_harness.localstack import PostgresServer
from energy_pipeline.api.pool import ConnectionPool, QueryTimeout

pytestmark = pytest.mark.integration


class Counting:
    """psycopg2.connect, counting the connections opened."""

    def __init__(self) -> None:
        self.opened = 0

    def __call__(self, *args: Any, **kwargs: Any) -> psycopg2.extensions.connection:
        self.opened += 1
        return psycopg2.connect(*args, **kwargs)


@pytest.fixture
def connect() -> Counting:
    return Counting()


@pytest.fixture
def pool(database: str, connect: Counting) -> Iterator[ConnectionPool]:
    p = ConnectionPool(database, 2, 1234, application_name="t", connect=connect)
    yield p
    p.close()


def session(conn: Any) -> tuple[Any, ...]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_backend_pid(), current_setting('statement_timeout'),"
            " current_setting('TimeZone'), current_setting('transaction_read_only'),"
            " current_setting('transaction_isolation'), current_setting('application_name')"
        )
        return tuple(cur.fetchone())


def test_connections_are_configured_reused_and_rolled_back(
    pool: ConnectionPool, connect: Counting
) -> None:
    pid, timeout, zone, read_only, isolation, app = pool.call(session)
    assert (timeout, zone, read_only, isolation, app) == (
        "1234ms",
        "UTC",
        "on",
        "repeatable read",
        "t",
    )
    assert pool.call(session)[0] == pid
    assert connect.opened == 1 and pool.stats() == (0, 1)
    # Given back outside a transaction: the snapshot ended.
    idle = pool.call(lambda conn: conn)
    assert idle.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE


def test_a_dead_reused_connection_is_replaced_once(
    pool: ConnectionPool, connect: Counting, postgres: PostgresServer
) -> None:
    first = pool.call(session)[0]
    admin = psycopg2.connect(postgres.admin_dsn)
    try:
        with admin.cursor() as cur:  # as a server restart or a failover would
            cur.execute("SELECT pg_terminate_backend(%s)", (first,))
    finally:
        admin.close()
    second = pool.call(session)[0]
    assert second != first and connect.opened == 2
    assert pool.stats() == (0, 1)


def test_a_fresh_connection_failing_is_not_retried(pool: ConnectionPool, connect: Counting) -> None:
    def die(conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    with pytest.raises(psycopg2.OperationalError):
        pool.call(die)
    assert connect.opened == 1 and pool.stats() == (0, 0)


def test_statement_timeout_is_a_query_timeout_and_keeps_the_connection(
    pool: ConnectionPool, connect: Counting
) -> None:
    def slow(conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(5)")

    with pytest.raises(QueryTimeout, match="statement_timeout=1234ms"):
        pool.call(slow)
    assert pool.stats() == (0, 1) and connect.opened == 1
    assert pool.call(session)[1] == "1234ms"


def test_closed_pool_refuses_and_closes_idle(pool: ConnectionPool) -> None:
    conn = pool.call(lambda c: c)
    pool.close()
    assert conn.closed
    with pytest.raises(RuntimeError, match="closed"):
        pool.call(session)
