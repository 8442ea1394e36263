"""What tests and benchmarks share: waiting for a condition, SQL as the superuser, and the
data plane's promise (every reading the simulator generates stored exactly as generated).

A service's readiness is `localstack.process.wait_until`'s job (it retries on errors and
notices a dead process); `wait_for` waits for what a test expects, so an exception from the
check is a failure at once rather than "not yet".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import psycopg2
from energy_pipeline.cli import build_parser
from energy_pipeline.simulation.commands import config_from_args
from energy_pipeline.simulation.signals import generate

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


Reading = tuple[str, str, str, datetime, float]  # site, sensor, device, ts, value


def expected_rows(simulate_args: list[str]) -> set[Reading]:
    """The readings `energy-pipeline simulate SIMULATE_ARGS` publishes (a run with --start)."""
    args = build_parser().parse_args(["simulate", *simulate_args])
    config = config_from_args(args, datetime.now(UTC))
    return {(r.site, r.sensor, r.device, r.ts, r.value) for r in generate(config)}


def stored_rows(dsn: str) -> set[Reading]:
    """The rows of `readings`, in the same shape."""
    with psycopg2.connect(dsn, connect_timeout=10) as conn, conn.cursor() as cur:
        cur.execute("SELECT site_id, sensor, device_id, ts, value FROM readings")
        return {(s, sensor, d, ts.astimezone(UTC), v) for s, sensor, d, ts, v in cur.fetchall()}
