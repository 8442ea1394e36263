"""What tests and benchmarks share: waiting for a condition, and SQL as the superuser.

A service's readiness is `localstack.process.wait_until`'s job (it retries on errors and
notices a dead process); `wait_for` waits for what a test expects, so an exception from the
check is a failure at once rather than "not yet".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import psycopg2

if TYPE_CHECKING:
    from energy_harness.localstack.postgres import PostgresServer

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.3) -> T:
    """Call `check` every `interval` seconds until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def admin_sql(postgres: PostgresServer, statement: str) -> None:
    """One statement in the `postgres` database, outside a transaction (CREATE DATABASE)."""
    conn = psycopg2.connect(postgres.admin_dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()
