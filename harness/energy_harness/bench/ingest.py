"""Ingest-only benchmark: the ingest figures of `energy_harness.bench.dataplane`, quicker and
repeated, to compare ingest changes on a busy machine.

    python -m energy_harness.bench.ingest --messages 100000 --rounds 3

Starts Kafka (3 nodes) and a durable PostgreSQL, fills the topics once with the raw producer,
measures the original report's approach (one INSERT and commit per reading) once, then per
round: a bare COPY of the same rows, and one ingest process draining the topics into a fresh
database with a fresh consumer group (rows/s from its first stored row to its last, as the
data-plane bench does). Ratios are per round, so load changes between rounds cancel out.
`--variant LABEL:NAME=VALUE,...` (repeatable) adds an ingest run with other settings to each
round, e.g. `--variant batch20k:INGEST_BATCH_SIZE=20000`.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka.admin import AdminClient
from energy_pipeline.core.contracts import all_kafka_topics
from energy_pipeline.dataplane.topics import TopicSpec, create_topic

from energy_harness.bench.dataplane import (
    bench_ingest,
    new_database,
    per_message_insert,
    raw_copy,
    raw_producer,
    readings,
)
from energy_harness.localstack import KafkaCluster, PostgresServer
from energy_harness.localstack.workers import service_env


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:NAME=VALUE,...")
    parser.add_argument("--out", help="also write the results here as JSON")
    args = parser.parse_args()
    variants: dict[str, dict[str, str]] = {"ingest": {}}
    for spec in args.variant:
        label, _, settings = spec.partition(":")
        variants[label] = dict(item.split("=", 1) for item in settings.split(",") if item)
    base = Path(f"/tmp/energy-bench-ingest-{uuid.uuid4().hex[:6]}")
    kafka = KafkaCluster(base / "kafka")
    pg = PostgresServer(base / "postgres")  # durable settings: fsync on, as in production
    results: dict[str, object] = {"messages": args.messages, "variants": variants, "rounds": []}
    try:
        pg.start()
        kafka.start()
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
        prefix = f"benchingest{uuid.uuid4().hex[:4]}"
        for topic in all_kafka_topics(prefix):
            create_topic(admin, TopicSpec(topic, 4, 2))
        rows = readings(args.messages, datetime(2025, 1, 1, tzinfo=UTC))
        raw_producer(kafka.bootstrap_servers, prefix, rows)
        env = service_env(kafka.bootstrap_servers, pg.dsn, "127.0.0.1", 1, PIPELINE_NAME="bench")
        logs = base / "logs"
        per_message = per_message_insert(new_database(pg), rows[:5000])["rows_per_s"]
        results["per_message_insert_rows_per_s"] = per_message
        print(f"per-message INSERT: {per_message:,.0f} rows/s", flush=True)
        for number in range(args.rounds):
            load = os.getloadavg()[0]
            copy = raw_copy(new_database(pg), rows)["rows_per_s"]
            line = f"round {number}: load {load:.2f}, bare COPY {copy:,.0f} rows/s"
            measured: dict[str, object] = {"load_avg": load, "raw_copy_rows_per_s": copy}
            for label, settings in variants.items():
                ingest = bench_ingest(
                    {**env, **settings}, new_database(pg), prefix, len(rows), logs
                )
                measured[label] = ingest
                rate = ingest["rows_per_s"]
                line += (
                    f" | {label} {rate:,.0f} rows/s ({ingest['cpu_us_per_row']:.1f} CPU-us/row):"
                    f" {rate / copy:.2f} of COPY, {rate / per_message:.1f}x per-message INSERT"
                )
            results["rounds"].append(measured)  # type: ignore[union-attr]
            print(line, flush=True)
    finally:
        kafka.cleanup()
        pg.cleanup()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
