"""Ingest's pipeline against real Kafka and PostgreSQL: the writer thread writes one batch while
the main thread validates the next, and offsets are still committed only after the database,
in order, before partitions are given up, and before stopping.

Ingest runs in-process here (threads), with its database writes slowed down so that batches
really are in flight when a commit, a rebalance or a stop happens.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from energy_harness.localstack import KafkaCluster
from energy_harness.testing import wait_for
from energy_pipeline.core.contracts import (
    SENSOR_NAMES,
    Reading,
    WeatherForecast,
    deadletter_topic,
    kafka_key,
    kafka_topic,
    partition_for,
)
from energy_pipeline.core.settings import load
from energy_pipeline.dataplane.ingest import Ingest, IngestSettings
from energy_pipeline.db.writer import Gap, PreparedBatch, WriteResult

pytestmark = pytest.mark.integration

START = datetime(2025, 1, 1, tzinfo=UTC)
POLL_S = 0.1  # between two checks of a wait
BAD = [b"{", b'{"schema":1,"site":"s","sensor":"pressure","device":"0"}', b"null"]

Key = tuple[str, str, str, datetime]


def readings(count: int, offset: int = 0) -> list[Reading]:
    return [
        Reading(
            f"site-{i % 2}",
            SENSOR_NAMES[i % len(SENSOR_NAMES)],
            str(i // 10 % 4),  # within one timestamp, i % 40 picks the key
            START + timedelta(seconds=30 * (i // 40)),
            float(i % 50),
        )
        for i in range(offset, offset + count)
    ]


def produce(bootstrap: str, prefix: str, values: Sequence[Reading | bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    for item in values:
        if isinstance(item, bytes):
            producer.produce(kafka_topic(prefix, "temperature"), value=item, on_delivery=delivered)
            continue
        producer.produce(
            kafka_topic(prefix, item.sensor),
            key=kafka_key(item.site, item.device),
            value=item.to_kafka_value(),
            partition=partition_for(item.device, 4),
            on_delivery=delivered,
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []


def key_of(value: bytes | None) -> Key | None:
    try:
        doc = json.loads(value or b"")
        return (doc["site"], doc["sensor"], doc["device"], datetime.fromisoformat(doc["ts"]))
    except (ValueError, KeyError, TypeError):
        return None


def stored_keys(dsn: str, keys: set[Key]) -> set[Key]:
    if not keys:
        return set()
    columns = list(zip(*keys, strict=True))
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            """SELECT r.site_id, r.sensor, r.device_id, r.ts
               FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[])
                   AS k(s, se, d, t)
               JOIN readings r
                   ON (r.site_id, r.sensor, r.device_id, r.ts) = (k.s, k.se, k.d, k.t)""",
            [list(c) for c in columns],
        )
        return {(s, se, d, t.astimezone(UTC)) for s, se, d, t in cur.fetchall()}


def count(dsn: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM readings")
        return int(cur.fetchone()[0])


def assert_exactly(dsn: str, expected: list[Reading]) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT site_id, sensor, device_id, ts, value FROM readings")
        rows = [(s, se, d, t.astimezone(UTC), v) for s, se, d, t, v in cur.fetchall()]
        assert sorted(rows) == sorted((r.site, r.sensor, r.device, r.ts, r.value) for r in expected)
        cur.execute(
            """SELECT count(*) FROM (
                   SELECT site_id, date_trunc('hour', ts, 'UTC') AS hour, count(*) AS n
                   FROM readings GROUP BY 1, 2) r
               FULL JOIN hourly_features f USING (site_id, hour)
               WHERE r.n IS DISTINCT FROM f.n_readings"""
        )
        assert cur.fetchone()[0] == 0


def committed(bootstrap: str, group: str, prefix: str) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(kafka_topic(prefix, s), p) for s in SENSOR_NAMES for p in range(4)]
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(parts, 30)}
    finally:
        consumer.close()


def ends(bootstrap: str, prefix: str) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return {
            (kafka_topic(prefix, s), p): consumer.get_watermark_offsets(
                TopicPartition(kafka_topic(prefix, s), p), 30
            )[1]
            for s in SENSOR_NAMES
            for p in range(4)
        }
    finally:
        consumer.close()


class Worker:
    """One ingest in a thread, its database writes slowed, its commits checked."""

    def __init__(
        self, bootstrap: str, dsn: str, prefix: str, group: str, write_delay: float, batch: int
    ) -> None:
        settings = load(
            IngestSettings,
            {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "DATABASE_URL": dsn,
                "KAFKA_TOPIC_PREFIX": prefix,
                "KAFKA_CONSUMER_GROUP": group,
                "KAFKA_SESSION_TIMEOUT_MS": "6000",
                "INGEST_BATCH_SIZE": str(batch),
                "INGEST_BATCH_MAX_WAIT_MS": "100",
            },
        )
        self.dsn = dsn
        self.results: list[WriteResult] = []
        self.revoked: list[int] = []
        self.commits: list[list[TopicPartition]] = []
        self.problems: list[str] = []
        self.ingest = Ingest(settings, on_written=self.results.append)
        self.exit_code: int | None = None
        write, commit, revoke = (
            self.ingest.write_with_retry,
            self.ingest.commit,
            self.ingest._on_revoke,
        )

        def slow_write(batch: PreparedBatch, gaps: Sequence[Gap] = (),
                       offsets: Sequence[tuple[str, int, int]] = (),
                       weather: Sequence[WeatherForecast] = ()) -> WriteResult | None:
            time.sleep(write_delay)
            return write(batch, gaps, offsets, weather)

        def checked_commit(messages: Sequence[Message], asynchronous: bool = False) -> None:
            # Every valid reading of a batch is in the database before its offsets go.
            keys = {k for k in (key_of(m.value()) for m in messages) if k is not None}
            missing = keys - stored_keys(self.dsn, keys)
            if missing:
                self.problems.append(f"offsets committed before {len(missing)} readings")
            commit(messages, asynchronous)
            self.commits.append(
                [TopicPartition(m.topic(), m.partition(), m.offset()) for m in messages]
            )

        def counted_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self.revoked.append(len(partitions))
            revoke(consumer, partitions)
            if self.ingest._in_flight:
                self.problems.append("batches still in flight after a revocation")

        self.ingest.write_with_retry = slow_write  # type: ignore[method-assign]
        self.ingest.commit = checked_commit  # type: ignore[method-assign]
        self.ingest._on_revoke = counted_revoke  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.exit_code = self.ingest.run()

    def start(self) -> Worker:
        self.thread.start()
        return self

    def stop(self) -> int | None:
        self.ingest.stopping.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self.exit_code

    def inserted(self) -> int:
        return sum(r.inserted for r in self.results)

    def duplicates(self) -> int:
        return sum(r.duplicates for r in self.results)

    def offsets_in_order(self) -> bool:
        last: dict[tuple[str, int], int] = {}
        for batch in self.commits:
            first: dict[tuple[str, int], int] = {}
            for tp in batch:
                key = (tp.topic, tp.partition)
                first[key] = min(first.get(key, tp.offset), tp.offset)
            for key, offset in first.items():
                if offset <= last.get(key, -1):
                    return False
            for tp in batch:
                key = (tp.topic, tp.partition)
                last[key] = max(last.get(key, -1), tp.offset)
        return True


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.thread.is_alive():
            worker.stop()


def test_pipelined_batches_commit_in_order_after_the_database(
    kafka_cluster: KafkaCluster, database: str, topic_prefix: str, workers: list[Worker]
) -> None:
    prefix = topic_prefix  # a fresh topic set (tests/conftest.py)
    bootstrap = kafka_cluster.bootstrap_servers
    data = readings(3000)
    # Redelivered readings (as after a bridge restart) and bad records in between.
    produce(bootstrap, prefix, [*data[:1500], *BAD, *data[1000:1200], *data[1500:]])
    group = f"g-{uuid.uuid4().hex[:6]}"
    worker = Worker(bootstrap, database, prefix, group, write_delay=0.02, batch=150)
    workers.append(worker.start())
    wait_for(lambda: count(database) >= 3000, 120, "all readings stored", POLL_S)
    wait_for(lambda: committed(bootstrap, group, prefix) == ends(bootstrap, prefix),
             60, "offsets committed to the end", POLL_S)
    assert worker.stop() == 0
    assert worker.problems == []
    assert worker.offsets_in_order()
    assert len(worker.commits) > 10
    assert (worker.inserted(), worker.duplicates()) == (3000, 200)
    assert_exactly(database, data)
    letters = dead_letters(bootstrap, deadletter_topic(prefix), len(BAD))
    assert Counter(h["reason"] for h in letters) == Counter(
        {"malformed_json": 1, "unknown_sensor": 1, "wrong_type": 1}
    )


def dead_letters(bootstrap: str, topic: str, expected: int) -> list[dict[str, str]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dl-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    found: list[dict[str, str]] = []
    deadline = time.monotonic() + 60
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(100, 1.0):
                if msg.error() is None:
                    found.append({k: v.decode() for k, v in msg.headers() or []})
        for msg in consumer.consume(100, 2.0):  # nothing more than expected
            if msg.error() is None:
                found.append({k: v.decode() for k, v in msg.headers() or []})
    finally:
        consumer.close()
    assert len(found) == expected
    return found


def test_a_rebalance_finishes_and_commits_the_batches_in_flight_first(
    kafka_cluster: KafkaCluster, database: str, topic_prefix: str, workers: list[Worker]
) -> None:
    prefix = topic_prefix  # a fresh topic set (tests/conftest.py)
    bootstrap = kafka_cluster.bootstrap_servers
    data = readings(6000)
    produce(bootstrap, prefix, data)
    group = f"g-{uuid.uuid4().hex[:6]}"
    first = Worker(bootstrap, database, prefix, group, write_delay=0.1, batch=100)
    workers.append(first.start())
    wait_for(lambda: count(database) > 300, 120, "the first worker writing", POLL_S)
    second = Worker(bootstrap, database, prefix, group, write_delay=0.02, batch=100)
    workers.append(second.start())
    wait_for(lambda: count(database) >= 6000, 120, "all readings stored", POLL_S)
    wait_for(lambda: committed(bootstrap, group, prefix) == ends(bootstrap, prefix),
             60, "offsets committed to the end", POLL_S)
    assert first.revoked and sum(first.revoked) > 0, "no partitions moved to the second worker"
    assert second.inserted() > 0
    assert first.stop() == 0 and second.stop() == 0
    assert first.problems == [] and second.problems == []
    assert first.offsets_in_order() and second.offsets_in_order()
    # The first worker committed its batches in flight before giving partitions up, so the
    # second started right after them: nothing was replayed.
    assert first.inserted() + second.inserted() == 6000
    assert first.duplicates() + second.duplicates() == 0
    assert_exactly(database, data)


def test_stopping_finishes_the_batches_in_flight_and_commits_them(
    kafka_cluster: KafkaCluster, database: str, topic_prefix: str, workers: list[Worker]
) -> None:
    prefix = topic_prefix  # a fresh topic set (tests/conftest.py)
    bootstrap = kafka_cluster.bootstrap_servers
    data = readings(4000)
    produce(bootstrap, prefix, data)
    group = f"g-{uuid.uuid4().hex[:6]}"
    worker = Worker(bootstrap, database, prefix, group, write_delay=0.3, batch=200)
    workers.append(worker.start())
    wait_for(lambda: count(database) > 0, 120, "a first batch stored", POLL_S)
    assert worker.stop() == 0
    assert worker.problems == []
    stored_before = count(database)
    assert 0 < stored_before < 4000
    # Everything stored was committed: the next worker replays nothing.
    offsets = committed(bootstrap, group, prefix)
    assert sum(max(0, o) for o in offsets.values()) == stored_before
    after = Worker(bootstrap, database, prefix, group, write_delay=0, batch=1000)
    workers.append(after.start())
    wait_for(lambda: count(database) >= 4000, 120, "the rest stored", POLL_S)
    assert after.stop() == 0
    assert after.duplicates() == 0
    assert worker.inserted() + after.inserted() == 4000
    assert_exactly(database, data)
