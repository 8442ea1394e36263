"""MQTT -> bridge -> Kafka -> ingest -> PostgreSQL: every reading stored exactly once.

All against the real 3-broker Kafka, PostgreSQL and HiveMQ CE; workers run as the
`energy-pipeline` processes the operator deploys. Faults mid-stream: test_faults.py.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import psycopg2
import pytest
from energy_harness.localstack.workers import WorkerProcess
from energy_pipeline.cli import build_parser
from energy_pipeline.core.contracts import SENSOR_NAMES
from energy_pipeline.simulation.commands import config_from_args
from energy_pipeline.simulation.signals import generate

from .conftest import Pipeline

pytestmark = pytest.mark.e2e

Row = tuple[str, str, str, datetime, float]

FULL = [
    "--sites",
    "4",
    "--devices",
    "4",
    "--interval",
    "5m",
    "--duration",
    "48h",
    "--start",
    "2025-01-01T00:00:00Z",
    "--seed",
    "7",
    "--fault-rate",
    "0.001",
]
# Fault scenarios: a smaller stream, paced so that the fault lands in the middle of it.
SMALL = [
    "--sites",
    "2",
    "--devices",
    "4",
    "--interval",
    "5m",
    "--duration",
    "24h",
    "--start",
    "2025-03-01T00:00:00Z",
    "--seed",
    "11",
    "--fault-rate",
    "0.001",
]
SMALL_RATE = 1200


def expected_rows(sim_args: list[str]) -> set[Row]:
    args = build_parser().parse_args(["simulate", *sim_args])
    config = config_from_args(args, datetime.now(UTC))
    return {(r.site, r.sensor, r.device, r.ts, r.value) for r in generate(config)}


def stored_count(dsn: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM readings")
        return int(cur.fetchone()[0])


def stored_rows(dsn: str) -> list[Row]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT site_id, sensor, device_id, ts, value FROM readings")
        return [(s, sensor, d, ts.astimezone(UTC), v) for s, sensor, d, ts, v in cur.fetchall()]


def wait_for_rows(dsn: str, count: int, timeout: float = 180) -> float:
    """Wait until `count` readings are stored; when (time.monotonic()) they were."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        last = stored_count(dsn)
        if last >= count:
            reached = time.monotonic()
            time.sleep(2)  # anything beyond the expected count would show up now
            return reached
        time.sleep(0.5)
    raise AssertionError(f"only {last} of {count} readings stored after {timeout}s")


def assert_exactly(dsn: str, expected: set[Row]) -> None:
    rows = stored_rows(dsn)
    stored = set(rows)
    assert len(rows) == len(stored)
    missing = expected - stored
    extra = stored - expected
    assert not missing, f"{len(missing)} readings lost, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} unexpected readings, e.g. {sorted(extra)[:3]}"


def assert_hourly_features_match_readings(dsn: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            """SELECT site_id, date_trunc('hour', ts, 'UTC'), sensor, sum(value), count(*)
               FROM readings GROUP BY 1, 2, 3"""
        )
        recomputed = {(s, h, sensor): (total, n) for s, h, sensor, total, n in cur.fetchall()}
        columns = ", ".join(f"sum_{s}, n_{s}, avg_{s}" for s in SENSOR_NAMES)
        cur.execute(f"SELECT site_id, hour, {columns}, n_readings FROM hourly_features")
        rows = cur.fetchall()
    hours = {(r[0], r[1]) for r in rows}
    assert hours == {(s, h) for s, h, _ in recomputed}
    for row in rows:
        site, hour, *values, n_readings = row
        assert n_readings == sum(recomputed.get((site, hour, s), (0, 0))[1] for s in SENSOR_NAMES)
        for i, sensor in enumerate(SENSOR_NAMES):
            total, n, avg = values[3 * i : 3 * i + 3]
            want_total, want_n = recomputed.get((site, hour, sensor), (0.0, 0))
            assert n == want_n, (site, hour, sensor)
            assert math.isclose(total, want_total, rel_tol=1e-9, abs_tol=1e-9), (site, hour, sensor)
            if want_n:
                assert math.isclose(avg, want_total / want_n, rel_tol=1e-9), (site, hour, sensor)


def start_workers(pipeline: Pipeline, bridge_id: str = "bridge-a") -> None:
    bridge = pipeline.start("bridge", ["bridge"], MQTT_CLIENT_ID=bridge_id)
    bridge.wait_ready()
    for i in range(2):
        pipeline.start(f"ingest-{i}", ["ingest"])


def simulate(pipeline: Pipeline, sim_args: list[str], rate: float = 0) -> None:
    pipeline.start(
        "simulate",
        ["simulate", *sim_args, "--rate", str(rate), "--client-id", "simulator"],
        wait_ready=False,
    )


def finish(pipeline: Pipeline, sim_args: list[str]) -> float:
    """Wait for every reading the simulator published, check each is stored exactly once;
    when (time.monotonic()) the last one was."""
    simulator = next(w for w in pipeline.workers if w.name == "simulate")
    assert simulator.wait(timeout=240) == 0, simulator.process.log_tail()  # type: ignore[union-attr]
    expected = expected_rows(sim_args)
    try:
        reached = wait_for_rows(pipeline.env["DATABASE_URL"], len(expected))
    except AssertionError as exc:
        # Where the readings stopped: every worker's counters and last log lines.
        raise AssertionError(f"{exc}\n" + "\n".join(map(_report, pipeline.workers))) from None
    assert_exactly(pipeline.env["DATABASE_URL"], expected)
    assert_hourly_features_match_readings(pipeline.env["DATABASE_URL"])
    return reached


def _report(worker: WorkerProcess) -> str:
    counters = ""
    if worker.alive():
        try:
            counters = "\n".join(
                line for line in worker.metrics_text().splitlines()
                if line.startswith("energy_") and "_bucket" not in line
            )  # fmt: skip
        except OSError as exc:
            counters = f"/metrics: {exc}"
    tail = worker.process.log_tail(15) if worker.process is not None else ""
    return f"--- {worker.name}\n{counters}\n{tail}"


def test_four_sites_two_days_stored_exactly_once(pipeline: Pipeline) -> None:
    start_workers(pipeline)
    simulate(pipeline, FULL)
    finish(pipeline, FULL)
    dsn = pipeline.env["DATABASE_URL"]
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM recent_hourly_averages()")
        recent = cur.fetchall()
        cur.execute("SELECT max(hour) FROM hourly_features")
        latest = cur.fetchone()[0]
        cur.execute(
            "SELECT count(*), count(temperature), count(energyconsumption) FROM distributeddata"
        )
        distributed = cur.fetchone()
    assert len(recent) == 7
    hours = [row[0] for row in recent]
    assert hours == sorted(hours) and len(set(hours)) == 7
    assert hours[-1] == latest
    assert all(value is not None for row in recent for value in row)
    assert distributed == (4 * 4 * 576,) * 3
    # Every worker stops gracefully on SIGTERM with exit code 0.
    for worker in pipeline.workers:
        if worker.name != "simulate":
            assert worker.stop() == 0, worker.name
