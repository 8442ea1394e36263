"""Peers side by side with our workers, on this machine, in one run:

- Kafka to PostgreSQL: Kafka Connect (standalone, the runtime of our Kafka version) with
  Debezium's JDBC sink connector in upsert mode on the readings' key, beside our ingest,
  both draining the same readings from a Kafka backlog into a table like `readings`.
- MQTT to Kafka: Telegraf (mqtt_consumer input, kafka output; built from the Go module
  proxy with only those plugins and the JSON formats) beside our bridge, both moving the
  same live QoS 1 readings from the broker into one Kafka topic per sensor type, at least
  once: Telegraf with `persistent_session = true`, which makes it acknowledge a message to
  the broker only once its output has written it, as our bridge does. Through Mosquitto
  (which keeps up with both; the two publishers are near their own limit) and through
  HiveMQ CE with 1 and 5 connections each (5 Telegraf mqtt_consumer inputs on the same
  shards as the bridge's 5 connections).

    python -m energy_harness.bench.peers --out bench/peers.json

For MQTT to Kafka: msg/s from the first timed publish to the last record in Kafka, and
messages per CPU-second of the bridge or Telegraf process; publishers, brokers and Kafka
are not in the CPU figure. Telegraf's output flushes every `--telegraf-flush-ms` or once
`metric_batch_size` metrics wait, whichever comes first: HiveMQ CE hands a connection at
most 50 unacknowledged messages, so a batch size above 50 per connection would wait for
the timer on every round trip.

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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from energy_pipeline.core.contracts import (
    MQTT_TOPIC_ROOT,
    Reading,
    all_kafka_topics,
    kafka_key,
    mqtt_topic,
    partition_for,
)
from energy_pipeline.dataplane.bridge import shard_filters
from energy_pipeline.dataplane.topics import TopicSpec, create_topic

from energy_harness.bench.dataplane import (
    bench_ingest,
    bridge_workers,
    cpu_seconds,
    machine,
    new_database,
    publish_all,
    raw_producer,
    readings,
    topic_end_total,
)
from energy_harness.localstack import KafkaCluster, MosquittoBroker, PostgresServer
from energy_harness.localstack.hivemq import HiveMQBroker
from energy_harness.localstack.install import ensure_kafka_connect, require
from energy_harness.localstack.kube_install import TELEGRAF_VERSION, ensure_telegraf
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


def telegraf_config(
    mqtt_url: str, shards: list[tuple[str, ...]], client_id: str, bootstrap: str, prefix: str,
    flush_ms: int, batch: int,
) -> str:
    """Telegraf moving readings from `shards` (one mqtt_consumer input, so one MQTT
    connection, per shard) into `<prefix>.<sensor>`, keyed by device, lz4, acks=all,
    idempotent: what our bridge produces, as far as Telegraf's options go. Its output writes
    `batch` metrics at once, or what waits every `flush_ms`."""
    quoted = lambda items: ", ".join(json.dumps(i) for i in items)  # noqa: E731
    lines = [
        "[agent]",
        '  interval = "10s"',
        f'  flush_interval = "{flush_ms}ms"',
        '  flush_jitter = "0s"',
        f"  metric_batch_size = {batch}",
        "  metric_buffer_limit = 100000",
        "  omit_hostname = true",
        "  quiet = true",
    ]
    for n, shard in enumerate(shards):
        lines += [
            "[[inputs.mqtt_consumer]]",
            f"  servers = [{json.dumps(mqtt_url)}]",
            f"  topics = [{quoted(shard)}]",
            "  qos = 1",
            # Acknowledge to the broker only once the output has written the metric.
            "  persistent_session = true",
            f'  client_id = "{client_id}-{n}"',
            "  max_undelivered_messages = 1000",
            '  topic_tag = ""',
            '  name_override = "reading"',
            '  data_format = "json"',
            '  json_time_key = "ts"',
            '  json_time_format = "2006-01-02T15:04:05Z07:00"',
            "  [[inputs.mqtt_consumer.topic_parsing]]",
            '    topic = "+/+/+/+"',
            '    tags = "_/site_id/sensor/device_id"',
        ]
    lines += [
        "[[outputs.kafka]]",
        f"  brokers = [{quoted(bootstrap.split(','))}]",
        f"  topic = {json.dumps(prefix)}",
        '  routing_tag = "device_id"',
        "  compression_codec = 3",  # lz4, as the bridge
        "  required_acks = -1",
        "  idempotent_writes = true",
        '  data_format = "json"',
        "  [outputs.kafka.topic_suffix]",
        '    method = "tags"',
        '    keys = ["sensor"]',
        '    separator = "."',
    ]
    return "\n".join(lines) + "\n"


def mqtt311_sessions(
    broker: HiveMQBroker | MosquittoBroker, client_ids: list[str],
    shards: list[tuple[str, ...]] | None,
) -> None:
    """With `shards`, make each client id's persistent session (MQTT 3.1.1, as Telegraf's
    client) subscribed to its shard before Telegraf connects: Telegraf has no readiness
    signal, and readings published before its subscriptions exist would reach no one. With
    None, end those sessions, which would otherwise keep queueing the next runs' readings."""
    import paho.mqtt.client as mqtt

    acked: set[tuple[str, int]] = set()  # (client id, SUBSCRIBE's message id) of SUBACKs

    def on_subscribe(_client: mqtt.Client, client_id: str, mid: int, *_rest: object) -> None:
        acked.add((client_id, mid))

    for n, client_id in enumerate(client_ids):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv311, clean_session=shards is None,
                             userdata=client_id)
        client.on_subscribe = on_subscribe
        client.connect(broker.host, broker.port)
        client.loop_start()
        wait_for(client.is_connected, 30, f"{client_id} connected", 0.05)
        if shards is not None:
            result, mid = client.subscribe([(f, 1) for f in shards[n]])
            if result != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"{client_id}: SUBSCRIBE not sent ({result})")
            key = (client_id, mid)
            wait_for(lambda: key in acked, 30, f"{client_id} subscribed", 0.05)  # noqa: B023
        client.disconnect()
        client.loop_stop()


def bench_mqtt_to_kafka(
    peer: str,
    broker: HiveMQBroker | MosquittoBroker,
    kafka: KafkaCluster,
    rows: list[Reading],
    connections: int,
    work: Path,
    flush_ms: int = 10,
    warmup: int = 2000,
) -> dict[str, object]:
    """`peer` ("bridge" or "telegraf") with `connections` MQTT connections moving live QoS 1
    readings from two publisher processes into Kafka; the first `warmup` go through before
    the clock starts."""
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    prefix = f"peer{peer[:2]}{connections}{uuid.uuid4().hex[:4]}"
    topics = all_kafka_topics(prefix)
    for topic in topics:
        create_topic(admin, TopicSpec(topic, 4, 2))
    sensor_topics = [t for t in topics if not t.endswith("deadletter")]
    # The bridge's own subscriptions, in the shared group the bridge is given below.
    shards = [
        tuple(f"$share/{prefix}/{f}" for f in shard)
        for shard in shard_filters(f"{MQTT_TOPIC_ROOT}/#", connections)
    ]
    client_ids = [f"{prefix}-{n}" for n in range(len(shards))]  # telegraf_config's
    work.mkdir(parents=True, exist_ok=True)
    linger_ms = 1 if connections == 1 else 10
    window = 0  # Telegraf's batch, set below
    if peer == "bridge":
        env = service_env(kafka.bootstrap_servers, "postgresql://unused", broker.host,
                          broker.port, PIPELINE_NAME="bench")
        workers = bridge_workers(env, prefix, connections, 1, work, linger_ms)
        process = workers[0].process
        stop = workers[0].stop
    else:
        config = work / f"telegraf-{prefix}.conf"
        # What the broker lets wait unacknowledged: HiveMQ CE 50 messages per connection
        # (its source), our Mosquitto max_inflight_messages 1000; Telegraf's own limit is
        # max_undelivered_messages, 1000 per input.
        window = 50 * connections if isinstance(broker, HiveMQBroker) else 1000
        config.write_text(telegraf_config(
            f"tcp://{broker.host}:{broker.port}", shards, prefix, kafka.bootstrap_servers,
            prefix, flush_ms, window,
        ))
        mqtt311_sessions(broker, client_ids, shards)
        telegraf = ManagedProcess(
            name=f"telegraf-{prefix}", argv=[str(ensure_telegraf()), "--config", str(config)],
            log_path=work / f"telegraf-{prefix}.log",
        )
        telegraf.start()
        process, stop = telegraf, lambda: telegraf.stop(30)
    messages = [(mqtt_topic(r.site, r.sensor, r.device), r.to_mqtt_payload()) for r in rows]
    warm, timed = messages[:warmup], messages[warmup:]
    try:
        assert process is not None and process.pid is not None

        def in_kafka() -> int:
            if not process.alive:
                raise process.failure("exited")
            return topic_end_total(admin, kafka.bootstrap_servers, sensor_topics)

        publish_all(broker, f"peerwarm-{prefix}", warm, 2)
        wait_for(lambda: in_kafka() >= len(warm), 300, f"{peer}'s warm-up in Kafka", 0.1)
        cpu0 = cpu_seconds(process.pid)
        started = time.monotonic()
        publish_all(broker, f"peerpub-{prefix}", timed, 2)
        wait_for(lambda: in_kafka() >= len(messages), 900, f"every record of {peer} in Kafka",
                 0.05)
        seconds = time.monotonic() - started
        cpu = cpu_seconds(process.pid) - cpu0
    finally:
        stop()
        if peer == "telegraf":
            mqtt311_sessions(broker, client_ids, None)
    stored = topic_end_total(admin, kafka.bootstrap_servers, sensor_topics)
    return {
        "peer": peer if peer == "bridge" else f"telegraf {TELEGRAF_VERSION}",
        "broker": type(broker).__name__.removesuffix("Broker"),
        "connections": connections,
        "linger_ms": linger_ms if peer == "bridge" else None,
        "flush_ms": flush_ms if peer == "telegraf" else None,
        "batch": window if peer == "telegraf" else None,
        "messages": len(timed),
        "records_in_kafka": stored,
        "seconds": seconds,
        "msg_per_s": len(timed) / seconds,
        "cpu_seconds": cpu,
        "msg_per_cpu_s": len(timed) / cpu,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--mqtt-messages", type=int, default=60_000,
                        help="readings through each MQTT-to-Kafka run")
    parser.add_argument("--telegraf-flush-ms", type=int, default=10)
    parser.add_argument("--out", default="bench/peers.json")
    args = parser.parse_args()
    base = Path(f"/tmp/energy-peers-{uuid.uuid4().hex[:6]}")
    kafka = KafkaCluster(base / "kafka")
    pg = PostgresServer(base / "postgres")  # durable settings: fsync on, as in production
    mosquitto = MosquittoBroker(base / "mosquitto")
    hivemq = HiveMQBroker(base / "hivemq")
    results: dict[str, object] = {
        "machine": machine(),
        "command": f"python -m energy_harness.bench.peers --messages {args.messages} "
        f"--mqtt-messages {args.mqtt_messages} --telegraf-flush-ms {args.telegraf_flush_ms}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        pg.start()
        kafka.start()
        mosquitto.start()
        hivemq.start()
        # Recent timestamps: Telegraf stamps each Kafka record with its reading's time, and
        # the brokers' retention would delete records stamped 2025 while they are counted.
        mqtt_rows = readings(args.mqtt_messages, datetime.now(UTC) - timedelta(days=1))
        mqtt_runs = []
        for broker, connections in ((mosquitto, 1), (hivemq, 1), (hivemq, 5)):
            for peer in ("bridge", "telegraf"):
                print(f"{peer} via {type(broker).__name__}, {connections} connection(s) ...",
                      flush=True)
                mqtt_runs.append(bench_mqtt_to_kafka(
                    peer, broker, kafka, mqtt_rows, connections, base / "mqtt",
                    args.telegraf_flush_ms,
                ))
        results["mqtt_to_kafka"] = mqtt_runs
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
        hivemq.cleanup()
        mosquitto.cleanup()
        kafka.cleanup()
        pg.cleanup()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
