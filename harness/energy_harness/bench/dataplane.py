"""Data-plane benchmark: bridge and ingest throughput beside the machine's raw limits, and
end-to-end latency at a fixed rate. Everything runs for real on this machine.

    python -m energy_harness.bench.dataplane --out bench/results.json

Measured in one run, so the ratios compare like with like:
- raw producer: librdkafka alone producing the bridge's records (idempotent, acks=all);
- bridge: one bridge process moving live QoS 1 traffic from two publisher processes into
  Kafka; msg/s and msg per CPU-second of the bridge process. Through Mosquitto, which keeps
  up, this measures the bridge; through HiveMQ CE it measures HiveMQ, which hands a shared
  subscription at most 50 messages at a time and the next ones only after all are
  acknowledged, so it is shown beside HiveMQ draining the same kind of queue to a plain paho
  client with no bridge at all;
- raw COPY: a bare COPY of the same rows into a table with the same primary key;
- ingest: one ingest process draining the Kafka backlog into PostgreSQL (readings and
  hourly_features), rows/s;
- per-message INSERT: the original report's approach, one INSERT and commit per reading;
- latency (via Mosquitto): readings published at a fixed rate with their publish time as
  timestamp; latency is `ingested_at - ts` (ingested_at is set inside the writing
  transaction, just before commit).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg2
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from energy_pipeline.core.contracts import (
    SENSOR_NAMES,
    Reading,
    all_kafka_topics,
    format_ts,
    kafka_key,
    kafka_topic,
    mqtt_topic,
    partition_for,
)
from energy_pipeline.core.settings import load
from energy_pipeline.dataplane.bridge import BridgeSettings, producer_config
from energy_pipeline.dataplane.mqtt_client import new_client, persistent_session
from energy_pipeline.dataplane.topics import TopicSpec, create_topic
from energy_pipeline.db.migrate import migrate
from energy_pipeline.simulation.publisher import MqttPublisher
from energy_pipeline.simulation.signals import SimulationConfig, generate

from energy_harness.localstack import KafkaCluster, MosquittoBroker, PostgresServer
from energy_harness.localstack.hivemq import HiveMQBroker
from energy_harness.localstack.postgres import dsn as make_dsn
from energy_harness.localstack.workers import WorkerProcess, service_env
from energy_harness.testing import admin_sql, wait_for


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards); None if the
    process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, object]:
    """What a benchmark figure ran on, for its results file."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_at_start": os.getloadavg(),
    }


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (PostgreSQL's backends, under a `run_as` wrapper)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(int(entry.name))
        if fields is not None:  # else gone meanwhile
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU of `pid` and its descendants, those that exited included."""
    total = 0.0
    for child in process_tree(pid):
        fields = _stat(child)
        if fields is None:
            continue
        # Each one's own time plus what its exited children used (cutime, cstime).
        ticks = sum(int(f) for f in fields[11:15])
        total += ticks / os.sysconf("SC_CLK_TCK")
    return total


def readings(count: int, start: datetime) -> list[Reading]:
    steps = max(1, count // 80)
    config = SimulationConfig(
        sites=4, devices=4, start=start, interval=timedelta(seconds=10), steps=steps + 1, seed=1
    )
    out = []
    for reading in generate(config):
        out.append(reading)
        if len(out) == count:
            break
    return out


def topic_end_total(admin: AdminClient, bootstrap: str, topics: list[str]) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    total = 0
    try:
        metadata = admin.list_topics(timeout=10)
        for topic in topics:
            for pid in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, pid), timeout=10)
                total += high - low
    finally:
        consumer.close()
    return total


def raw_producer(bootstrap: str, prefix: str, rows: list[Reading]) -> dict[str, float]:
    settings = load(
        BridgeSettings, {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC_PREFIX": prefix}
    )
    producer = Producer(producer_config(settings))
    started = time.monotonic()
    cpu0 = time.process_time()
    for r in rows:
        while True:
            try:
                producer.produce(
                    kafka_topic(prefix, r.sensor),
                    key=kafka_key(r.site, r.device),
                    value=r.to_kafka_value(),
                    partition=partition_for(r.device, 4),
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    seconds = time.monotonic() - started
    return {
        "messages": len(rows),
        "seconds": seconds,
        "msg_per_s": len(rows) / seconds,
        "msg_per_cpu_s": len(rows) / max(1e-9, time.process_time() - cpu0),
    }


def _publish(host: str, port: int, client_id: str, messages: list[tuple[str, bytes]]) -> None:
    publisher = MqttPublisher(host, port, client_id)
    publisher.connect()
    for topic, payload in messages:
        publisher.publish(topic, payload)
    if not publisher.wait_confirmed(600):
        raise TimeoutError(f"{client_id}: broker did not confirm every message")
    publisher.close()


def bench_bridge(
    env: dict[str, str],
    broker: HiveMQBroker | MosquittoBroker,
    admin: AdminClient,
    bootstrap: str,
    prefix: str,
    rows: list[Reading],
    logs: Path,
    publishers: int = 2,
) -> dict[str, float]:
    """One bridge process while `publishers` processes send QoS 1 as fast as the broker takes.

    Live traffic, not a backlog: a backlog drains at the broker's pace. Per-core throughput is
    messages per CPU-second of the bridge process (all its threads, librdkafka's included).
    """
    bridge_env = {
        **env,
        "KAFKA_TOPIC_PREFIX": prefix,
        "MQTT_CLIENT_ID": f"bench-bridge-{prefix}",
        "MQTT_SHARED_GROUP": f"bench-{prefix}",
    }
    bridge = WorkerProcess(f"bench-bridge-{prefix}", ["bridge"], bridge_env, logs).start()
    bridge.wait_ready()
    assert bridge.process is not None and bridge.process.pid is not None
    sensor_topics = [t for t in all_kafka_topics(prefix) if not t.endswith("deadletter")]
    messages = [(mqtt_topic(r.site, r.sensor, r.device), r.to_mqtt_payload()) for r in rows]
    cpu0 = cpu_seconds(bridge.process.pid)
    started = time.monotonic()
    publish_all(broker, f"bench-pub-{prefix}", messages, publishers)
    published_s = time.monotonic() - started
    wait_for(
        lambda: topic_end_total(admin, bootstrap, sensor_topics) >= len(rows),
        900, "every record in Kafka", 0.1,
    )
    seconds = time.monotonic() - started
    cpu = cpu_seconds(bridge.process.pid) - cpu0
    bridge.stop()
    return {
        "broker": type(broker).__name__,
        "messages": len(rows),
        "publishers": publishers,
        "seconds": seconds,
        "publisher_seconds": published_s,
        "msg_per_s": len(rows) / seconds,
        "cpu_seconds": cpu,
        "msg_per_cpu_s": len(rows) / cpu,
    }


def publish_all(
    broker: HiveMQBroker | MosquittoBroker, name: str, messages: list[tuple[str, bytes]],
    publishers: int,
) -> None:
    """`messages` from `publishers` processes (one Python publisher is slower than the
    bridge), as fast as the broker takes them."""
    spawn = multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(
            target=_publish,
            args=(broker.host, broker.port, f"{name}-{i}", messages[i::publishers]),
        )
        for i in range(publishers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"publisher exited with {proc.exitcode}")


def bridge_workers(
    env: dict[str, str], prefix: str, connections: int, replicas: int, logs: Path,
    linger_ms: int = 1,
) -> list[WorkerProcess]:
    """`replicas` bridge processes of `connections` MQTT connections each, in a shared group
    of their own whose sessions end with their connections (MQTT_SESSION_EXPIRY_S=0): a
    stopped bench bridge must not leave queues that the broker keeps filling during the
    next measurement."""
    bridges = [
        WorkerProcess(
            f"bench-bridge-{prefix}-{r}",
            ["bridge"],
            {
                **env,
                "KAFKA_TOPIC_PREFIX": prefix,
                "MQTT_CLIENT_ID": f"bench-{prefix}-{r}",
                "MQTT_SHARED_GROUP": f"bench-{prefix}",
                "MQTT_SESSION_EXPIRY_S": "0",
                "BRIDGE_CONNECTIONS": str(connections),
                "BRIDGE_LINGER_MS": str(linger_ms),
            },
            logs,
        ).start()
        for r in range(replicas)
    ]
    for bridge in bridges:
        bridge.wait_ready()
    return bridges


def live_ingest(env: dict[str, str], prefix: str, dsn: str, logs: Path) -> WorkerProcess:
    """One ingest process keeping up with live traffic on `prefix`'s topics: batches close
    after 50 ms, as latency wants, not after the default wait."""
    return WorkerProcess(
        f"bench-ingest-{prefix}",
        ["ingest"],
        {**env, "KAFKA_TOPIC_PREFIX": prefix, "DATABASE_URL": dsn,
         "KAFKA_CONSUMER_GROUP": f"bench-{prefix}", "INGEST_BATCH_MAX_WAIT_MS": "50"},
        logs,
    ).start()


def hivemq_pipeline(
    env: dict[str, str],
    broker: HiveMQBroker,
    kafka: KafkaCluster,
    pg: PostgresServer,
    rows: list[Reading],
    connections: int,
    replicas: int,
    logs: Path,
    linger_ms: int = 1,
    publishers: int = 2,
    warmup: int = 2000,
) -> dict[str, object]:
    """Sustained end-to-end throughput, MQTT publish to row committed in PostgreSQL, through
    HiveMQ CE: `replicas` bridges of `connections` connections, one ingest, and the CPU
    each stage used per 1,000 readings.

    The first `warmup` readings go through before the clock starts: a new topic set's first
    produce requests and the JVMs' first compilations would otherwise be measured.
    """
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    prefix = f"benchhm{connections}x{replicas}{uuid.uuid4().hex[:4]}"
    for topic in all_kafka_topics(prefix):
        create_topic(admin, TopicSpec(topic, 4, 2))
    dsn = new_database(pg)
    ingest = live_ingest(env, prefix, dsn, logs)
    bridges = bridge_workers(env, prefix, connections, replicas, logs, linger_ms)
    messages = [(mqtt_topic(r.site, r.sensor, r.device), r.to_mqtt_payload()) for r in rows]
    warm, timed = messages[:warmup], messages[warmup:]
    try:
        publish_all(broker, f"bench-warm-{prefix}", warm, publishers)
        wait_for(lambda: count_rows(dsn) >= len(warm), 300, "the warm-up stored", 0.1)
        assert broker.process is not None and ingest.process is not None
        stages: dict[str, list[int]] = {
            "hivemq": [broker.process.pid],
            "bridge": [b.process.pid for b in bridges],  # type: ignore[union-attr]
            "kafka": [n.process.pid for n in kafka.nodes.values()],  # type: ignore[union-attr]
            "ingest": [ingest.process.pid],
            "postgresql": [pg.process.pid],  # type: ignore[union-attr]
        }

        def cpu() -> dict[str, float]:
            usage = {k: sum(tree_cpu_seconds(p) for p in pids) for k, pids in stages.items()}
            own = os.times()  # the publisher processes, once joined
            usage["publishers"] = own.children_user + own.children_system
            return usage

        before = cpu()
        started = time.monotonic()
        publish_all(broker, f"bench-pub-{prefix}", timed, publishers)
        published_s = time.monotonic() - started
        wait_for(lambda: count_rows(dsn) >= len(messages), 900, "every row stored", 0.05)
        seconds = time.monotonic() - started
        after = cpu()
    finally:
        for worker in (*bridges, ingest):
            worker.stop()
    per_1000 = {k: (after[k] - before[k]) / len(timed) * 1000 for k in before}
    return {
        "connections": connections,
        "replicas": replicas,
        "linger_ms": linger_ms,
        "messages": len(timed),
        "publishers": publishers,
        "seconds": seconds,
        "publisher_seconds": published_s,
        "msg_per_s": len(timed) / seconds,
        "cpu_s_per_1000": per_1000,
        "cpu_s_per_1000_total": sum(per_1000.values()),
    }


def broker_drain_ceiling(broker: HiveMQBroker, count: int = 20_000) -> dict[str, float]:
    """How fast the broker alone hands a shared-subscription backlog to a plain paho client.

    No Kafka, no bridge: the client acknowledges in paho's own loop. Whatever the bridge
    does, it cannot receive faster than this through this broker.
    """
    group = f"ceiling{uuid.uuid4().hex[:6]}"
    subscription = f"$share/{group}/energy/{group}/#"
    received = 0
    first: float | None = None

    def on_message(_client: object, _userdata: object, _msg: object) -> None:
        nonlocal received, first
        if first is None:
            first = time.monotonic()
        received += 1

    def session() -> mqtt.Client:
        client = new_client(f"{group}-sub")
        client.on_message = on_message
        client.connect(
            broker.host, broker.port, clean_start=False, properties=persistent_session(3600)
        )
        client.loop_start()
        return client

    client = session()
    client.subscribe(subscription, qos=1)
    time.sleep(1)
    client.disconnect()
    client.loop_stop()
    _publish(
        broker.host,
        broker.port,
        f"{group}-pub",
        [(f"energy/{group}/temperature/{i % 16}", b'{"value": 1}') for i in range(count)],
    )
    client = session()
    wait_for(lambda: received >= count, 600, "every message received", 0.05)
    seconds = time.monotonic() - (first or time.monotonic())
    client.disconnect()
    client.loop_stop()
    return {"messages": count, "seconds": seconds, "msg_per_s": count / seconds}


def raw_copy(dsn: str, rows: list[Reading]) -> dict[str, float]:
    buffer = "".join(
        f"{r.site}\t{r.sensor}\t{r.device}\t{format_ts(r.ts)}\t{r.value!r}\n" for r in rows
    )
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE raw_copy (LIKE readings INCLUDING ALL)")
    started = time.monotonic()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.copy_expert(
            "COPY raw_copy (site_id, sensor, device_id, ts, value) FROM STDIN", io.StringIO(buffer)
        )
    seconds = time.monotonic() - started
    return {"rows": len(rows), "seconds": seconds, "rows_per_s": len(rows) / seconds}


def per_message_insert(dsn: str, rows: list[Reading]) -> dict[str, float]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE per_message (LIKE readings INCLUDING ALL)")
    conn = psycopg2.connect(dsn)
    started = time.monotonic()
    with conn.cursor() as cur:
        for r in rows:
            cur.execute(
                "INSERT INTO per_message (site_id, sensor, device_id, ts, value)"
                " VALUES (%s, %s, %s, %s, %s)",
                (r.site, r.sensor, r.device, r.ts, r.value),
            )
            conn.commit()
    seconds = time.monotonic() - started
    conn.close()
    return {"rows": len(rows), "seconds": seconds, "rows_per_s": len(rows) / seconds}


_counting: dict[str, psycopg2.extensions.connection] = {}


def count_rows(dsn: str) -> int:
    """Readings stored so far, read cheaply enough to poll every 50 ms.

    The hourly counts are written in the same transaction as the readings. A new connection
    and a count(*) over `readings` every 50 ms took about a fifth of a core from the ingest
    being measured; one connection and the hourly sums take ~0.1 ms.
    """
    conn = _counting.get(dsn)
    if conn is None or conn.closed:
        conn = _counting[dsn] = psycopg2.connect(dsn)
        conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(n_readings), 0) FROM hourly_features")
        return int(cur.fetchone()[0])


def bench_ingest(
    env: dict[str, str], dsn: str, prefix: str, total: int, logs: Path
) -> dict[str, float]:
    """One ingest process draining `prefix`'s topics into `dsn` (a fresh consumer group)."""
    ingest = WorkerProcess(
        "bench-ingest",
        ["ingest"],
        {
            **env,
            "KAFKA_TOPIC_PREFIX": prefix,
            "DATABASE_URL": dsn,
            "KAFKA_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
        },
        logs,
    ).start()
    assert ingest.process is not None and ingest.process.pid is not None
    try:
        # Steady state: from the first stored row to the last, without process start-up and
        # the consumer-group join (a few seconds that would swamp 100k rows).
        wait_for(lambda: count_rows(dsn) > 0, 120, "the first row stored", 0.02)
        first = count_rows(dsn)
        cpu0 = cpu_seconds(ingest.process.pid)
        started = time.monotonic()
        wait_for(lambda: count_rows(dsn) >= total, 600, "every row stored", 0.05)
        seconds = time.monotonic() - started
        cpu = cpu_seconds(ingest.process.pid) - cpu0
    finally:
        ingest.stop()
    rows = total - first
    if rows <= 0:
        raise ValueError(
            f"all {total} rows arrived in the first batch: nothing to time; "
            "use more messages than INGEST_BATCH_SIZE"
        )
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "ingest_cpu_seconds": cpu,
        "cpu_us_per_row": cpu / rows * 1e6,
    }


def _publish_paced(
    host: str, port: int, client_id: str, rate: float, total: int, index: int, stride: int
) -> float:
    """Messages index, index + stride, ... below `total` at `rate` per second, each carrying
    its publish time as timestamp; returns the rate achieved. A device id per message: every
    reading has its own key, none is a duplicate; the sensor types take turns, so a bridge
    with one connection per sensor type gets an even share on each."""
    publisher = MqttPublisher(host, port, client_id)
    publisher.connect()
    numbers = range(index, total, stride)
    started = time.monotonic()
    for n, i in enumerate(numbers):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        site, sensor, device = f"lat-{i % 4}", SENSOR_NAMES[i % len(SENSOR_NAMES)], str(i)
        body = {
            "ts": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "value": 20.0,
            "seq": i,
        }
        publisher.publish(mqtt_topic(site, sensor, device), json.dumps(body).encode())
    achieved = len(numbers) / (time.monotonic() - started)
    if not publisher.wait_confirmed(600):
        raise TimeoutError(f"{client_id}: broker did not confirm every message")
    publisher.close()
    return achieved


def _paced_publisher(args: tuple, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    results.put(_publish_paced(*args))


def latency(
    env: dict[str, str],
    broker: HiveMQBroker | MosquittoBroker,
    dsn: str,
    prefix: str,
    rate: float,
    seconds: float,
    logs: Path,
    connections: int = 1,
    publishers: int = 1,
    linger_ms: int = 1,
) -> dict[str, float]:
    """Publish time to row committed, readings published at `rate` by `publishers`
    processes (each at its share of the rate) through one bridge of `connections`."""
    ingest = live_ingest(env, prefix, dsn, logs)
    workers = [ingest, *bridge_workers(env, prefix, connections, 1, logs, linger_ms)]
    total = int(rate * seconds)
    spawn = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = spawn.Queue()  # type: ignore[type-arg]
    procs = [
        spawn.Process(
            target=_paced_publisher,
            args=((broker.host, broker.port, f"lat-pub-{prefix}-{i}", rate / publishers,
                   total, i, publishers), results),
        )
        for i in range(publishers)
    ]
    try:
        for proc in procs:
            proc.start()
        achieved = sum(results.get(timeout=seconds * 10 + 600) for _ in procs)
        for proc in procs:
            proc.join()
        wait_for(lambda: count_rows(dsn) >= total, 600, "every row stored", 0.5)
    finally:
        for w in workers:
            w.stop()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT extract(epoch FROM ingested_at - ts) * 1000 FROM readings")
        lat = sorted(float(v) for (v,) in cur.fetchall())
    return {
        "broker": type(broker).__name__,
        "connections": connections,
        "linger_ms": linger_ms,
        "publishers": publishers,
        "messages": total,
        "target_rate": rate,
        "achieved_rate": achieved,
        "p50_ms": statistics.quantiles(lat, n=100)[49],
        "p99_ms": statistics.quantiles(lat, n=100)[98],
        "max_ms": lat[-1],
    }


def new_database(pg: PostgresServer) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin_sql(pg, f'CREATE DATABASE "{name}"')
    url = make_dsn(pg.port, pg.password, name)
    migrate(url)
    return url


STAGES = ("publishers", "hivemq", "bridge", "kafka", "ingest", "postgresql")


def markdown(results: dict) -> str:
    b, hc, rp, ing, cp, pm = (
        results[k]
        for k in (
            "bridge",
            "hivemq_drain_ceiling",
            "raw_producer",
            "ingest",
            "raw_copy",
            "per_message_insert",
        )
    )
    lines = [
        "| measure | result | reference (same run) | ratio |",
        "|---|---|---|---|",
        f"| bridge, live QoS 1 via Mosquitto into Kafka "
        f"| {b['msg_per_s']:,.0f} msg/s; **{b['msg_per_cpu_s']:,.0f} msg per bridge "
        f"CPU-second** | librdkafka producing alone: {rp['msg_per_s']:,.0f} msg/s "
        f"({rp['msg_per_cpu_s']:,.0f} per CPU-second) "
        f"| {b['msg_per_cpu_s'] / rp['msg_per_cpu_s']:.2f} per CPU-second |",
    ]
    one = results["hivemq_pipeline"][0]
    for run in results["hivemq_pipeline"]:
        lines.append(
            f"| end to end via HiveMQ CE into PostgreSQL, {run['replicas']} bridge(s) of "
            f"{run['connections']} MQTT connection(s), linger {run['linger_ms']} ms "
            f"| **{run['msg_per_s']:,.0f} msg/s**; {run['cpu_s_per_1000_total']:.2f} "
            f"CPU-s per 1,000 readings "
            f"| the first layout, {one['replicas']} bridge(s) of {one['connections']} "
            f"connection(s): {one['msg_per_s']:,.0f} msg/s "
            f"| {run['msg_per_s'] / one['msg_per_s']:.2f} |"
        )
    lines += [
        f"| HiveMQ CE alone, shared-subscription backlog to a plain paho client (1 connection) "
        f"| {hc['msg_per_s']:,.0f} msg/s | | |",
        f"| ingest, Kafka backlog into readings + hourly_features "
        f"| **{ing['rows_per_s']:,.0f} rows/s** "
        f"| bare COPY of the same rows: {cp['rows_per_s']:,.0f} rows/s "
        f"| **{ing['rows_per_s'] / cp['rows_per_s']:.2f}** |",
        f"| ingest vs the original report's approach | {ing['rows_per_s']:,.0f} rows/s | "
        f"one INSERT + commit per reading: {pm['rows_per_s']:,.0f} rows/s | "
        f"**{ing['rows_per_s'] / pm['rows_per_s']:.1f}x** |",
    ]
    for lat in results["latency"]:
        lines.append(
            f"| end-to-end latency at {lat['target_rate']:,.0f} msg/s via "
            f"{lat['broker'].removesuffix('Broker')}, {lat['connections']} connection(s), "
            f"linger {lat['linger_ms']} ms "
            f"(achieved {lat['achieved_rate']:,.0f}) "
            f"| p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms "
            f"| max {lat['max_ms']:.0f} ms | |"
        )
    lines += [
        "",
        "CPU-seconds per 1,000 readings by stage, end to end via HiveMQ CE:",
        "",
        "| bridges x connections @ linger | " + " | ".join(STAGES) + " | total |",
        "|---|" + "---|" * (len(STAGES) + 1),
    ]
    for run in results["hivemq_pipeline"]:
        cpu = run["cpu_s_per_1000"]
        lines.append(
            f"| {run['replicas']} x {run['connections']} @ {run['linger_ms']} ms | "
            + " | ".join(f"{cpu[k]:.3f}" for k in STAGES)
            + f" | {run['cpu_s_per_1000_total']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument(
        "--hivemq-messages",
        type=int,
        default=40_000,
        help="messages through HiveMQ for each bridge layout",
    )
    parser.add_argument(
        "--layouts",
        default="1x1,1x2,1x4,1x5,1x5@10,2x5@10",
        help="bridge layouts through HiveMQ, comma-separated: <bridges>x<connections each>"
        "[@<BRIDGE_LINGER_MS>, default 1]",
    )
    parser.add_argument("--latency-rates", default="2000,5000",
                        help="msg/s, comma-separated; each via HiveMQ CE and the first also "
                        "via Mosquitto")
    parser.add_argument("--latency-connections", type=int, default=5,
                        help="MQTT connections of the bridge in the HiveMQ latency runs")
    parser.add_argument("--latency-linger-ms", type=int, default=10,
                        help="BRIDGE_LINGER_MS of the bridge in the HiveMQ latency runs")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--out", default="bench/results.json")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = Path(f"/tmp/energy-bench-{uuid.uuid4().hex[:6]}")
    kafka = KafkaCluster(base / "kafka")
    pg = PostgresServer(base / "postgres")  # durable settings: fsync on, as in production
    mosquitto = MosquittoBroker(base / "mosquitto")
    hivemq = HiveMQBroker(base / "hivemq")
    results: dict[str, object] = {
        "machine": machine(),
        "command": f"python -m energy_harness.bench.dataplane --messages {args.messages} "
        f"--hivemq-messages {args.hivemq_messages} --layouts {args.layouts} "
        f"--latency-rates {args.latency_rates} --latency-connections "
        f"{args.latency_connections} --latency-linger-ms {args.latency_linger_ms} "
        f"--latency-seconds {args.latency_seconds:g}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        pg.start()
        mosquitto.start()
        hivemq.start()
        kafka.start()
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})

        def env_for(broker: HiveMQBroker | MosquittoBroker) -> dict[str, str]:
            return service_env(
                kafka.bootstrap_servers, pg.dsn, broker.host, broker.port, PIPELINE_NAME="bench"
            )

        logs = base / "logs"
        rows = readings(args.messages, datetime(2025, 1, 1, tzinfo=UTC))
        prefixes = {
            name: f"bench{name}{uuid.uuid4().hex[:4]}" for name in ("raw", "bridge")
        }
        for prefix in prefixes.values():
            for topic in all_kafka_topics(prefix):
                create_topic(admin, TopicSpec(topic, 4, 2))

        def save() -> None:
            out.write_text(json.dumps(results, indent=2, default=str) + "\n")

        print("raw producer ...", flush=True)
        results["raw_producer"] = raw_producer(kafka.bootstrap_servers, prefixes["raw"], rows)
        save()
        print("bridge via Mosquitto ...", flush=True)
        results["bridge"] = bench_bridge(
            env_for(mosquitto),
            mosquitto,
            admin,
            kafka.bootstrap_servers,
            prefixes["bridge"],
            rows,
            logs,
        )
        save()
        print("end to end via HiveMQ, warm-up (not recorded) ...", flush=True)
        # HiveMQ's and Kafka's JIT compile the paths on the first messages; the first layout
        # measured would pay for that alone.
        hivemq_pipeline(env_for(hivemq), hivemq, kafka, pg, rows[:12_000], 5, 1, logs)
        runs: list[dict[str, object]] = []
        results["hivemq_pipeline"] = runs
        for layout in args.layouts.split(","):
            shape, _, linger = layout.partition("@")
            replicas, connections = (int(n) for n in shape.split("x"))
            print(f"end to end via HiveMQ, {layout} ...", flush=True)
            runs.append(hivemq_pipeline(
                env_for(hivemq), hivemq, kafka, pg, rows[: args.hivemq_messages + 2000],
                connections, replicas, logs, int(linger or 1),
            ))
            save()
        print("HiveMQ alone ...", flush=True)
        results["hivemq_drain_ceiling"] = broker_drain_ceiling(hivemq, args.hivemq_messages)
        save()
        print("raw COPY ...", flush=True)
        results["raw_copy"] = raw_copy(new_database(pg), rows)
        save()
        print("ingest ...", flush=True)
        results["ingest"] = bench_ingest(
            env_for(mosquitto), new_database(pg), prefixes["raw"], len(rows), logs
        )
        save()
        print("per-message INSERT ...", flush=True)
        results["per_message_insert"] = per_message_insert(new_database(pg), rows[:5000])
        save()
        latencies: list[dict[str, float]] = []
        results["latency"] = latencies
        rates = [float(r) for r in args.latency_rates.split(",")]
        runs_of_latency = [
            (mosquitto, rates[0], 1, 1),
            *((hivemq, r, args.latency_connections, args.latency_linger_ms) for r in rates),
        ]
        for broker, rate, connections, linger_ms in runs_of_latency:
            print(f"latency at {rate:g} msg/s via {type(broker).__name__} ...", flush=True)
            prefix = f"benchlat{uuid.uuid4().hex[:6]}"
            for topic in all_kafka_topics(prefix):
                create_topic(admin, TopicSpec(topic, 4, 2))
            latencies.append(latency(
                env_for(broker), broker, new_database(pg), prefix, rate,
                args.latency_seconds, logs, connections, publishers=2, linger_ms=linger_ms,
            ))
            save()
    finally:
        kafka.cleanup()
        hivemq.cleanup()
        mosquitto.cleanup()
        pg.cleanup()
    out.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
