"""What tests and benchmarks share: waiting for a condition, SQL as the superuser, reading a
Kafka partition back, and the data plane's promise (every reading the simulator generates
stored exactly as generated).

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
from confluent_kafka import Consumer, TopicPartition
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


def read_partition(bootstrap: str, topic: str, partition: int, timeout: float = 120) -> list[bytes]:
    """Every record value of one partition, from its first offset to its high watermark, in
    offset order (plaintext listener; no group offsets committed)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "read-partition",
                         "enable.auto.commit": False})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        consumer.assign([TopicPartition(topic, partition, low)])
        values: list[bytes] = []
        position, deadline = low, time.monotonic() + timeout
        while position < high and time.monotonic() < deadline:
            msg = consumer.poll(1)
            if msg is not None and msg.error() is None:
                values.append(msg.value())
                position = msg.offset() + 1
        assert position >= high, f"read {topic}[{partition}] up to {position} of {high}"
        return values
    finally:
        consumer.close()


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
