"""Faults as they really happen, each ending in an exact comparison of what is stored.

Against the real 3-broker Kafka, HiveMQ CE and a PostgreSQL of this module's own with
PostgreSQL's durable defaults (fsync, synchronous_commit and full_page_writes on; the rest of
the suite runs without them for speed). Workers run as the `energy-pipeline` processes the
operator deploys. Each scenario either loses and duplicates nothing, or, where loss cannot be
avoided (Kafka deleted records before they could be stored), reports exactly what was lost.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from confluent_kafka import KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    OffsetSpec,
)
from energy_harness.localstack import KafkaCluster, PostgresServer
from energy_harness.localstack.hivemq import HiveMQBroker
from energy_harness.localstack.install import require
from energy_harness.localstack.postgres import dsn
from energy_harness.testing import admin_sql, read_partition, wait_for
from energy_pipeline.core.contracts import Reading, kafka_key, kafka_topic

from .conftest import Pipeline
from .test_data_plane import (
    SMALL,
    SMALL_RATE,
    assert_hourly_features_match_readings,
    expected_rows,
    finish,
    simulate,
    start_workers,
    stored_rows,
)

pytestmark = pytest.mark.e2e

REPORT: dict[str, float] = {}


def _record(tmp_path_factory: pytest.TempPathFactory, fault: str, fault_ended: float,
            all_stored: float) -> None:
    """Recovery times, no targets (those are `make bench`'s): seconds from the end of each
    fault (the component back) to the last reading stored, in <basetemp>/fault-recovery.json.
    The simulator publishes for about 10 s from 3 s before the fault, so a short fault's
    figure includes the rest of that."""
    REPORT[fault] = round(max(0.0, all_stored - fault_ended), 1)
    path = tmp_path_factory.getbasetemp() / "fault-recovery.json"
    path.write_text(json.dumps(REPORT, indent=2, sort_keys=True))


@pytest.fixture(scope="module")
def postgres(services_dir: Path, system_packages: None) -> Iterator[PostgresServer]:
    """Durable PostgreSQL for this module (it replaces the suite's fast one here)."""
    server = PostgresServer(services_dir / "postgres-durable", fast=False)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def test_the_fault_postgresql_is_durable(postgres: PostgresServer) -> None:
    with psycopg2.connect(postgres.admin_dsn) as conn, conn.cursor() as cur:
        settings = {}
        for name in ("fsync", "synchronous_commit", "full_page_writes"):
            cur.execute(f"SHOW {name}")
            settings[name] = cur.fetchone()[0]
    assert settings == dict.fromkeys(settings, "on")


def _restart_all(kafka_cluster: KafkaCluster) -> None:
    """Bring back every node a test stopped or killed (the cluster is the whole session's)."""
    for node_id, node in kafka_cluster.nodes.items():
        if not node.process.alive():
            kafka_cluster.start_node(node_id)


# -- workers, PostgreSQL and HiveMQ -----------------------------------------------------------


def _kill_one_ingest(pipeline: Pipeline, **_: object) -> None:
    next(w for w in pipeline.workers if w.name == "ingest-0").kill()


def _kill_and_restart_bridge(pipeline: Pipeline, **_: object) -> None:
    next(w for w in pipeline.workers if w.name == "bridge").kill()
    time.sleep(1)
    pipeline.start("bridge-restarted", ["bridge"], MQTT_CLIENT_ID="bridge-a").wait_ready()


def _restart_postgres(pipeline: Pipeline, postgres: PostgresServer, **_: object) -> None:
    postgres.stop()
    time.sleep(3)
    postgres.start()


def _kill_postgres(pipeline: Pipeline, postgres: PostgresServer, **_: object) -> None:
    """kill -9 of the postmaster and every backend mid-batch: crash recovery from the WAL."""
    assert postgres.process is not None
    postgres.process.kill()
    time.sleep(3)
    postgres.start()


def _restart_mqtt_broker(pipeline: Pipeline, broker: HiveMQBroker, **_: object) -> None:
    broker.restart()


@pytest.mark.parametrize(
    "fault",
    [_kill_one_ingest, _kill_and_restart_bridge, _restart_postgres, _kill_postgres,
     _restart_mqtt_broker],
    ids=["kill-9-ingest", "kill-9-bridge", "restart-postgres", "kill-9-postgres",
         "restart-mqtt"],
)
def test_fault_mid_stream_loses_and_duplicates_nothing(
    pipeline: Pipeline, postgres: PostgresServer, own_mqtt_broker: HiveMQBroker, fault: object,
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    start_workers(pipeline)
    simulate(pipeline, SMALL, SMALL_RATE)
    time.sleep(3)
    fault(pipeline, postgres=postgres, broker=own_mqtt_broker)  # type: ignore[operator]
    ended = time.monotonic()
    _record(tmp_path_factory, request.node.callspec.id, ended, finish(pipeline, SMALL))


# -- Kafka -----------------------------------------------------------------------------------


def _leader_and_follower(kafka_cluster: KafkaCluster, topic: str) -> tuple[int, int]:
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    partition = admin.list_topics(topic, timeout=10).topics[topic].partitions[0]
    follower = next(r for r in partition.replicas if r != partition.leader)
    return partition.leader, follower


@pytest.mark.parametrize("victims", [(2,), (2, 3)], ids=["kill-9-broker", "kill-9-two-brokers"])
def test_brokers_killed_mid_stream_stall_writes_until_they_are_back_and_lose_nothing(
    pipeline: Pipeline, kafka_cluster: KafkaCluster, victims: tuple[int, ...],
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """One broker: writes to the partitions it holds wait (min.insync.replicas 2). Two of
    three: no controller quorum and no in-sync pair, nothing moves. MQTT holds meanwhile."""
    start_workers(pipeline)
    simulate(pipeline, SMALL, SMALL_RATE)
    time.sleep(3)
    for node_id in victims:
        kafka_cluster.kill_node(node_id)
    try:
        time.sleep(10)
    finally:
        _restart_all(kafka_cluster)
    ended = time.monotonic()
    _record(tmp_path_factory, request.node.callspec.id, ended, finish(pipeline, SMALL))


@pytest.mark.parametrize("disk", ["kept", "wiped"], ids=["kill-9", "disk-wiped"])
def test_the_only_in_sync_replica_lost_while_its_follower_is_down_loses_nothing(
    pipeline: Pipeline, kafka_cluster: KafkaCluster, topic_prefix: str, disk: str,
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The follower of a partition stops; its leader, now the only in-sync replica, is killed.
    With min.insync.replicas 2 nothing was acknowledged by the leader alone.

    kill-9: without unclean election the partition waits for the leader rather than electing
    the stale follower. disk-wiped: the leader comes back with an empty disk (partitions and
    KRaft metadata gone); the stopped follower, an eligible leader replica (Kafka 4.1), holds
    everything acknowledged, is elected, and the wiped node copies from it. A wiped node that
    was the active KRaft controller exits until the other two have a leader of a newer epoch,
    and is started again as a pod would be."""
    topic = kafka_topic(topic_prefix, "temperature")
    leader, follower = _leader_and_follower(kafka_cluster, topic)
    start_workers(pipeline)
    simulate(pipeline, SMALL, SMALL_RATE)
    time.sleep(3)
    kafka_cluster.stop_node(follower)
    try:
        time.sleep(3)
        if disk == "kept":
            kafka_cluster.kill_node(leader)
            time.sleep(5)
            kafka_cluster.start_node(leader)
            time.sleep(3)
        else:
            kafka_cluster.wipe_node(leader)
            time.sleep(5)
            kafka_cluster.start_node(follower)
            kafka_cluster.start_node(leader, restarts=12)
    finally:
        _restart_all(kafka_cluster)
    ended = time.monotonic()
    _record(tmp_path_factory, f"sole-in-sync-leader-{request.node.callspec.id}", ended,
            finish(pipeline, SMALL))
    # Ingest had stored most readings before the fault, so the database alone would not show
    # a Kafka log that lost them. Had an empty or stale replica been elected, the partition
    # would lack what came before: Kafka must still hold exactly what the database holds.
    device = "0"  # partition_for: device 0 of each site is partition 0's
    in_kafka = _partition_rows(kafka_cluster.bootstrap_servers, topic, 0)
    assert in_kafka == {row for row in stored_rows(pipeline.env["DATABASE_URL"])
                        if row[1] == "temperature" and row[2] == device}
    # ...and both replicas are in sync again (the wiped one copied everything back).
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    wait_for(lambda: set(admin.list_topics(topic, timeout=10).topics[topic].partitions[0].isrs)
             == {leader, follower}, timeout=120, what="both replicas in sync")


def _partition_rows(bootstrap: str, topic: str, partition: int) -> set[tuple]:
    """Every reading in one partition, as stored_rows spells them."""
    bodies = map(json.loads, read_partition(bootstrap, topic, partition))
    return {(b["site"], b["sensor"], b["device"], datetime.fromisoformat(b["ts"]).astimezone(UTC),
             b["value"]) for b in bodies}


# -- what waiting cannot cure ----------------------------------------------------------------


def _writer_role(postgres: PostgresServer, database_url: str) -> str:
    """A login role with the privileges ingest needs (not a superuser, whom REVOKE does not
    bind); returns its URL."""
    role, password = f"writer_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    database = database_url.rsplit("/", 1)[1]
    admin_sql(postgres, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        cur.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    return dsn(postgres.port, password, database, user=role)


def test_a_revoked_insert_makes_ingest_unready_and_after_grant_the_data_is_complete(
    pipeline: Pipeline, postgres: PostgresServer, database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A permanent error (the write privilege revoked mid-stream) stalls the partitions, and
    says so: /readyz names it, the stall gauge counts up and the log says the database refuses
    the write. Nothing is skipped: after GRANT every reading is stored exactly once."""
    writer = _writer_role(postgres, database)
    role = writer.split("://", 1)[1].split(":", 1)[0]
    pipeline.env["DATABASE_URL"] = writer
    start_workers(pipeline)
    simulate(pipeline, SMALL, SMALL_RATE)
    time.sleep(3)
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute(f"REVOKE INSERT ON readings FROM {role}")
    ingest = [w for w in pipeline.workers if w.name.startswith("ingest")]
    try:
        wait_for(lambda: all("writes: permission denied for table readings" in w.ready()[1]
                             and not w.ready()[0] for w in ingest), 60,
                 "every ingest worker unready, naming the refused write")
        wait_for(lambda: all(w.metric("energy_ingest_write_stalled_seconds") > 5
                             for w in ingest), 60, "the stall gauge counting up")
        assert all(w.metric("energy_errors_total", {"stage": "ingest",
                                                    "kind": "InsufficientPrivilege"}) > 0
                   for w in ingest)
        logs = "".join(w.process.log_path.read_text() for w in ingest)  # type: ignore[union-attr]
        assert "the database refuses the write; retrying until it is fixed" in logs
        assert '"sqlstate": "42501"' in logs
    finally:
        with psycopg2.connect(database) as conn, conn.cursor() as cur:
            cur.execute(f"GRANT INSERT ON readings TO {role}")
    granted = time.monotonic()
    pipeline.env["DATABASE_URL"] = database  # for finish()'s reading of the table
    _record(tmp_path_factory, "insert-revoked", granted, finish(pipeline, SMALL))
    assert all(w.ready() == (True, "ok") for w in ingest)
    assert all(w.metric("energy_ingest_write_stalled_seconds") == 0 for w in ingest)


def _readings(start: int, count: int) -> list[Reading]:
    base = datetime(2025, 6, 1, tzinfo=UTC)
    return [Reading("site-gap", "temperature", "0", base + timedelta(minutes=i), 20.0 + i % 7)
            for i in range(start, start + count)]


def _produce(bootstrap: str, topic: str, readings: list[Reading]) -> list[int]:
    """`readings` into partition 0 of `topic`, in order; their offsets."""
    offsets: list[int] = []
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            offsets.append(msg.offset())

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "acks": "all"})
    for r in readings:
        producer.produce(topic, key=kafka_key(r.site, r.device), value=r.to_kafka_value(),
                         partition=0, on_delivery=delivered)
    assert producer.flush(60) == 0 and errors == []
    return sorted(offsets)


def _set_topic_config(admin: AdminClient, topic: str, config: dict[str, str]) -> None:
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
               for k, v in config.items()]
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def test_records_deleted_by_retention_during_an_outage_are_reported_exactly(
    pipeline: Pipeline, postgres: PostgresServer, kafka_cluster: KafkaCluster, topic_prefix: str
) -> None:
    """PostgreSQL is down for longer than a (deliberately short) retention, and ingest restarts
    meanwhile: the records Kafka deleted cannot be stored, and ingest says exactly which
    (log, metric, the table ingest_lost_records) instead of moving on in silence."""
    bootstrap = kafka_cluster.bootstrap_servers
    topic = kafka_topic(topic_prefix, "temperature")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    database = pipeline.env["DATABASE_URL"]
    before = _readings(0, 200)
    _produce(bootstrap, topic, before)
    pipeline.start("ingest-0", ["ingest"])
    wait_for(lambda: len(stored_rows(database)) == 200, 60, "the first 200 readings stored")
    # Retention of 3 s from now on (the harness's brokers check every second).
    _set_topic_config(admin, topic, {"retention.ms": "3000"})
    pipeline.workers[-1].stop()  # its offsets are committed: 200
    postgres.stop()
    lost = _readings(200, 300)
    lost_offsets = _produce(bootstrap, topic, lost)
    probe = AdminClient({"bootstrap.servers": bootstrap})
    partition = TopicPartition(topic, 0)

    def low_watermark() -> int:
        return probe.list_offsets({partition: OffsetSpec.earliest()})[partition].result(10).offset

    # Time retention deletes even the active segment once all of it is older than 3 s.
    wait_for(lambda: low_watermark() > lost_offsets[-1], 120,
             "retention deleting the records produced during the outage")
    _set_topic_config(admin, topic, {"retention.ms": str(7 * 24 * 3600 * 1000)})
    after = _readings(500, 100)
    after_offsets = _produce(bootstrap, topic, after)
    assert after_offsets[0] == lost_offsets[-1] + 1 == low_watermark()
    postgres.start()
    ingest = pipeline.start("ingest-1", ["ingest"])
    wait_for(lambda: len(stored_rows(database)) >= 300, 120, "the readings Kafka still had")
    time.sleep(2)
    stored = set(stored_rows(database))
    kept = {(r.site, r.sensor, r.device, r.ts, r.value) for r in before + after}
    assert stored == kept
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT topic, partition, first_offset, last_offset, records "
                    "FROM ingest_lost_records")
        recorded = cur.fetchall()
    assert recorded == [(topic, 0, lost_offsets[0], lost_offsets[-1], 300)]
    assert ingest.metric("energy_ingest_lost_records_total", {"topic": topic}) == 300
    log = ingest.process.log_path.read_text()  # type: ignore[union-attr]
    assert "records lost: Kafka deleted them before they were stored" in log




# -- the database lost, and restored from a backup ---------------------------------------------

LATER = [*SMALL[:SMALL.index("--start")], "--start", "2025-03-02T00:00:00Z",
         *SMALL[SMALL.index("--start") + 2:]]


def _pg_tool(name: str) -> str:
    """pg_dump and pg_restore of the PostgreSQL the harness runs."""
    return str(Path(require("postgres")).with_name(name))


def _wait_stored(database: str, expected: set[tuple], timeout: float = 180) -> float:
    """Wait until `expected` is exactly what `readings` holds; when (monotonic) it was."""
    stored: set[tuple] = set()

    def complete() -> bool:
        stored.clear()
        stored.update(stored_rows(database))
        return len(stored) >= len(expected)

    try:
        wait_for(complete, timeout, f"{len(expected)} readings stored", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {len(expected - stored)} missing") from None
    reached = time.monotonic()
    time.sleep(2)  # anything beyond would show up now
    rows = stored_rows(database)
    assert len(rows) == len(set(rows)) and set(rows) == expected
    return reached


def test_a_database_restored_from_a_backup_is_completed_from_kafka(
    pipeline: Pipeline, postgres: PostgresServer, tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The documented procedure: back up with pg_dump; later the database is lost; stop
    ingest, restore the dump, start ingest. Each batch recorded its Kafka offsets in the
    database, so ingest replays from the dump's offsets, not Kafka's committed ones, and the
    restored database ends with exactly every reading published, before and after the dump."""
    database = pipeline.env["DATABASE_URL"]
    first, later = expected_rows(SMALL), expected_rows(LATER)
    start_workers(pipeline)
    simulate(pipeline, SMALL, SMALL_RATE)
    _wait_stored(database, first)
    dump = tmp_path / "energy.dump"
    subprocess.run([_pg_tool("pg_dump"), "--format=custom", f"--file={dump}",
                    f"--dbname={database}"], check=True, timeout=120)
    pipeline.start("simulate-later", ["simulate", *LATER, "--rate", str(SMALL_RATE),
                                      "--client-id", "simulator-later"], wait_ready=False)
    _wait_stored(database, first | later)
    # The database is lost: stop ingest (kubectl scale: spec.ingestion.replicas 0), make an
    # empty one, restore the dump into it, start ingest again.
    for worker in pipeline.workers:
        if worker.name.startswith("ingest"):
            assert worker.stop() == 0
    name = database.rsplit("/", 1)[1]
    admin_sql(postgres, f'DROP DATABASE "{name}" WITH (FORCE)')
    admin_sql(postgres, f'CREATE DATABASE "{name}"')
    subprocess.run([_pg_tool("pg_restore"), "--exit-on-error", "--no-owner",
                    f"--dbname={database}", str(dump)], check=True, timeout=300)
    assert set(stored_rows(database)) == first
    restarted = time.monotonic()
    for i in range(2):
        pipeline.start(f"ingest-after-restore-{i}", ["ingest"])
    _record(tmp_path_factory, "database-restored", restarted,
            _wait_stored(database, first | later))
    assert_hourly_features_match_readings(database)


# -- HiveMQ holding readings for an absent bridge ---------------------------------------------

# 5 sites x 4 devices x 5 sensors, every minute for 1,000 minutes: 100,000 readings.
QUEUED = ["--sites", "5", "--devices", "4", "--interval", "1m", "--duration", "1000m",
          "--start", "2025-04-01T00:00:00Z", "--seed", "13", "--fault-rate", "0"]


def _publish(pipeline: Pipeline, name: str, sim_args: list[str]) -> None:
    """Publish `sim_args`' readings as fast as the broker takes them, and wait until done."""
    simulator = pipeline.start(name, ["simulate", *sim_args, "--rate", "0", "--client-id",
                                      f"simulator-{name}"], wait_ready=False)
    assert simulator.wait(timeout=600) == 0, simulator.process.log_tail()  # type: ignore[union-attr]


def test_hivemq_restarted_with_100k_readings_queued_for_a_stopped_bridge_keeps_them_all(
    pipeline: Pipeline, own_mqtt_broker: HiveMQBroker, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The bridge's persistent session and shared subscription hold what is published while
    it is away (up to the broker's queue limit, 1,000,000 in the charts), across a restart of
    the broker (file persistence)."""
    database = pipeline.env["DATABASE_URL"]
    bridge = pipeline.start("bridge", ["bridge"], MQTT_CLIENT_ID="bridge-a")
    bridge.wait_ready()  # subscribed
    assert bridge.stop() == 0  # its session and subscription stay with the broker
    began = time.monotonic()
    _publish(pipeline, "simulate", QUEUED)
    published_s = time.monotonic() - began
    own_mqtt_broker.restart()
    restarted = time.monotonic()
    pipeline.start("bridge-back", ["bridge"], MQTT_CLIENT_ID="bridge-a")
    for i in range(2):
        pipeline.start(f"ingest-{i}", ["ingest"])
    expected = expected_rows(QUEUED)
    assert len(expected) == 100_000
    stored_at = _wait_stored(database, expected, timeout=900)
    REPORT["hivemq-100k-queued-publish_s"] = round(published_s, 1)
    _record(tmp_path_factory, "hivemq-100k-queued-restart", restarted, stored_at)


def test_a_bridge_away_longer_than_its_session_is_told_and_hivemq_still_kept_the_group_queue(
    pipeline: Pipeline,
) -> None:
    """MQTT_SESSION_EXPIRY_S (1 day by default; 5 s here): the bridge comes back after its
    session expired, and says so (`session_present` false in its log, counted in
    energy_bridge_new_sessions_total). HiveMQ CE keeps a shared subscription's queue for the
    group past the expiry of its members' sessions: everything published meanwhile is
    delivered once a member subscribes again, and every reading is stored exactly once."""
    database = pipeline.env["DATABASE_URL"]
    runs = [
        [*SMALL[:SMALL.index("--start")], "--start", start, *SMALL[SMALL.index("--start") + 2:]]
        for start in ("2025-05-01T00:00:00Z", "2025-05-02T00:00:00Z", "2025-05-03T00:00:00Z")]
    short = {"MQTT_CLIENT_ID": "bridge-a", "MQTT_SESSION_EXPIRY_S": "5"}
    bridge = pipeline.start("bridge", ["bridge"], **short)
    bridge.wait_ready()
    for i in range(2):
        pipeline.start(f"ingest-{i}", ["ingest"])
    _publish(pipeline, "simulate-before", runs[0])
    _wait_stored(database, expected_rows(runs[0]))
    assert bridge.metric("energy_bridge_new_sessions_total") == 1  # its first start
    assert bridge.stop() == 0
    time.sleep(15)  # three times the session's 5 s
    _publish(pipeline, "simulate-meanwhile", runs[1])
    back = pipeline.start("bridge-back", ["bridge"], **short)
    back.wait_ready()
    assert back.metric("energy_bridge_new_sessions_total") == 1
    log = back.process.log_path.read_text()  # type: ignore[union-attr]
    assert '"session_present": false' in log
    _publish(pipeline, "simulate-after", runs[2])
    _wait_stored(database, set().union(*(expected_rows(r) for r in runs)))
