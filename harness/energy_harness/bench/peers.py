"""Peers side by side with our workers, on this machine, in one run:

- Kafka to PostgreSQL: Kafka Connect (standalone, the runtime of our Kafka version) with
  Debezium's JDBC sink connector in upsert mode on the readings' key, beside our ingest,
  both draining the same readings from a Kafka backlog into a table like `readings`.

    python -m energy_harness.bench.peers --out bench/peers.json

A JDBC sink needs records that carry their schema, so Connect reads the readings as
JsonConverter's `{"schema": ..., "payload": ...}` envelopes (what a pipeline feeding it would
have to produce), on a topic of their own with the same partitions and keys; our ingest
reads the pipeline's own records. Both are measured in steady state, from the first row
stored to the last, by rows per second and rows per CPU-second of the worker process
(Connect's JVM, our ingest process); PostgreSQL's own CPU is not in either figure.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from energy_pipeline.core.contracts import (
    Reading,
    all_kafka_topics,
    kafka_key,
    partition_for,
)
from energy_pipeline.dataplane.topics import TopicSpec, create_topic

from energy_harness.bench.dataplane import (
    bench_ingest,
    cpu_seconds,
    machine,
    new_database,
    raw_producer,
    readings,
)
from energy_harness.localstack import KafkaCluster, PostgresServer
from energy_harness.localstack.install import ensure_kafka_connect, require
from energy_harness.localstack.postgres import SUPERUSER
from energy_harness.localstack.process import ManagedProcess
from energy_harness.localstack.workers import service_env
from energy_harness.testing import wait_for

# JsonConverter's schema of one reading; ts as Connect's Timestamp (epoch milliseconds).
_SCHEMA = {
    "type": "struct",
    "name": "reading",
    "optional": False,
    "fields": [
        {"field": "site_id", "type": "string", "optional": False},
        {"field": "sensor", "type": "string", "optional": False},
        {"field": "device_id", "type": "string", "optional": False},
        {"field": "ts", "type": "int64", "optional": False,
         "name": "org.apache.kafka.connect.data.Timestamp", "version": 1},
        {"field": "value", "type": "double", "optional": False},
    ],
}


def connect_value(r: Reading) -> bytes:
    payload = {"site_id": r.site, "sensor": r.sensor, "device_id": r.device,
               "ts": int(r.ts.timestamp() * 1000), "value": r.value}
    return json.dumps({"schema": _SCHEMA, "payload": payload}).encode()


def produce_envelopes(bootstrap: str, topic: str, rows: list[Reading]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 20, "compression.type": "lz4"})
    for r in rows:
        while True:
            try:
                producer.produce(topic, key=kafka_key(r.site, r.device), value=connect_value(r),
                                 partition=partition_for(r.device, 4))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120):
        raise TimeoutError("not every envelope reached Kafka")


def _count(dsn: str, table: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        return int(cur.fetchone()[0])


def bench_connect_jdbc(
    kafka: KafkaCluster, pg: PostgresServer, rows: list[Reading], work: Path, tasks: int = 1
) -> dict[str, object]:
    """Kafka Connect with Debezium's JDBC sink draining `rows` (as schema'd JSON) into a
    table like `readings`, upserting on its primary key."""
    libs = ensure_kafka_connect()
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    topic = f"benchconnect{uuid.uuid4().hex[:6]}"
    create_topic(admin, TopicSpec(topic, 4, 2))
    produce_envelopes(kafka.bootstrap_servers, topic, rows)
    dsn = new_database(pg)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE connect_readings (LIKE readings INCLUDING ALL)")
    work.mkdir(parents=True, exist_ok=True)
    worker = work / "worker.properties"
    worker.write_text("\n".join([
        f"bootstrap.servers={kafka.bootstrap_servers}",
        "key.converter=org.apache.kafka.connect.storage.StringConverter",
        "value.converter=org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable=true",
        f"offset.storage.file.filename={work / 'offsets'}",
        "listeners=http://127.0.0.1:0",
        "plugin.discovery=only_scan",
        "consumer.auto.offset.reset=earliest",
        "consumer.max.poll.records=2000",
    ]) + "\n")
    sink = work / "sink.properties"
    sink.write_text("\n".join([
        "name=jdbc-readings",
        "connector.class=io.debezium.connector.jdbc.JdbcSinkConnector",
        f"tasks.max={tasks}",
        f"topics={topic}",
        f"connection.url=jdbc:postgresql://127.0.0.1:{pg.port}/{dsn.rsplit('/', 1)[1]}",
        f"connection.username={SUPERUSER}",
        f"connection.password={pg.password}",
        "insert.mode=upsert",
        "primary.key.mode=record_value",
        "primary.key.fields=site_id,sensor,device_id,ts",
        "schema.evolution=none",
        "collection.name.format=connect_readings",
        "batch.size=2000",
        "use.time.zone=UTC",
    ]) + "\n")
    process = ManagedProcess(
        name="kafka-connect",
        argv=[require("java"), "-Xms256m", "-Xmx768m", "-XX:+UseG1GC",
              "-XX:ParallelGCThreads=1", "-XX:ConcGCThreads=1", "-cp", f"{libs}/*",
              "org.apache.kafka.connect.cli.ConnectStandalone", str(worker), str(sink)],
        log_path=work / "connect.log",
    )
    process.start()
    try:
        table = "connect_readings"
        wait_for(lambda: _count(dsn, table) > 0, 300, "Connect's first row", 0.05)
        assert process.pid is not None
        first = _count(dsn, table)
        cpu0 = cpu_seconds(process.pid)
        started = time.monotonic()
        wait_for(lambda: _count(dsn, table) >= len(rows), 1200, "every row by Connect", 0.1)
        seconds = time.monotonic() - started
        cpu = cpu_seconds(process.pid) - cpu0
    finally:
        process.stop(60)
    stored = len(rows) - first
    return {
        "connector": "io.debezium:debezium-connector-jdbc:3.4.0.Final",
        "tasks": tasks,
        "rows": stored,
        "seconds": seconds,
        "rows_per_s": stored / seconds,
        "cpu_seconds": cpu,
        "rows_per_cpu_s": stored / cpu,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--out", default="bench/peers.json")
    args = parser.parse_args()
    base = Path(f"/tmp/energy-peers-{uuid.uuid4().hex[:6]}")
    kafka = KafkaCluster(base / "kafka")
    pg = PostgresServer(base / "postgres")  # durable settings: fsync on, as in production
    results: dict[str, object] = {
        "machine": machine(),
        "command": f"python -m energy_harness.bench.peers --messages {args.messages}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        pg.start()
        kafka.start()
        rows = readings(args.messages, datetime(2025, 1, 1, tzinfo=UTC))
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
        prefix = f"benchpeer{uuid.uuid4().hex[:4]}"
        for topic in all_kafka_topics(prefix):
            create_topic(admin, TopicSpec(topic, 4, 2))
        raw_producer(kafka.bootstrap_servers, prefix, rows)  # the pipeline's own records
        env = service_env(kafka.bootstrap_servers, pg.dsn, "127.0.0.1", 1883,
                          PIPELINE_NAME="bench")
        print("our ingest ...", flush=True)
        ours = bench_ingest(env, new_database(pg), prefix, len(rows), base / "logs")
        ours["rows_per_cpu_s"] = ours["rows"] / ours["ingest_cpu_seconds"]
        results["ingest"] = ours
        print("Kafka Connect, Debezium JDBC sink ...", flush=True)
        results["connect_jdbc"] = connect = bench_connect_jdbc(kafka, pg, rows, base / "connect")
        results["ratios"] = {
            "rows_per_s": ours["rows_per_s"] / connect["rows_per_s"],  # type: ignore[operator]
            "rows_per_cpu_s": ours["rows_per_cpu_s"] / connect["rows_per_cpu_s"],  # type: ignore[operator]
        }
    finally:
        kafka.cleanup()
        pg.cleanup()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
