"""The 3-node KRaft cluster behaves like production Kafka: placement, failover, ISR repair."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient
from energy_harness.localstack import KafkaCluster
from energy_pipeline.dataplane.topics import TopicSpec, create_topic

pytestmark = pytest.mark.integration

KEYS = [f"site-{s}/{d}" for s in range(10) for d in range(4)]


def new_topic(admin: AdminClient) -> str:
    name = f"test.{uuid.uuid4().hex[:8]}"
    assert create_topic(admin, TopicSpec(name, partitions=4, replication_factor=2))
    return name


def produce(bootstrap: str, topic: str, start: int, count: int) -> None:
    """`count` messages spread over KEYS, each value carrying its per-key sequence number."""
    errors: list[KafkaError] = []
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 120_000,
    })

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    for i in range(start, start + count):
        key = KEYS[i % len(KEYS)]
        value = json.dumps({"key": key, "seq": i // len(KEYS)})
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0, "messages still undelivered after 120 s"
    assert errors == []


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 90) -> list[dict]:
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"verify-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    received: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                received.append(json.loads(msg.value()))
            if len(received) >= expected:
                # Linger a little: a duplicate would arrive now, not later.
                for msg in consumer.consume(num_messages=1000, timeout=2.0):
                    received.append(json.loads(msg.value()))
                break
    finally:
        consumer.close()
    return received


def partition_state(admin: AdminClient, topic: str) -> dict[int, tuple[list[int], list[int]]]:
    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    return {p.id: (list(p.replicas), list(p.isrs)) for p in metadata.partitions.values()}


def test_topic_has_four_partitions_with_two_replicas_on_distinct_brokers(
    kafka_cluster: KafkaCluster,
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    topic = new_topic(admin)
    state = partition_state(admin, topic)
    assert sorted(state) == [0, 1, 2, 3]
    for replicas, _isr in state.values():
        assert len(replicas) == 2
        assert len(set(replicas)) == 2
        assert set(replicas) <= {1, 2, 3}


def test_writes_to_a_stopped_brokers_partitions_wait_for_it_and_nothing_is_lost(
    kafka_cluster: KafkaCluster,
) -> None:
    """min.insync.replicas 2 (the product's default) with acks=all: while a broker is down,
    the partitions it holds a replica of refuse writes (nothing is acknowledged by one broker
    alone), the others go on; once it is back every message arrives exactly once, in order."""
    bootstrap = kafka_cluster.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = new_topic(admin)
    produce(bootstrap, topic, 0, 10_000)
    state = partition_state(admin, topic)

    # The leader of partition 0, so a partition must fail over.
    victim = admin.list_topics(topic, timeout=10).topics[topic].partitions[0].leader
    held = {p for p, (replicas, _isr) in state.items() if victim in replicas}
    assert held != set(state)  # 8 replicas spread over 3 brokers: none holds all 4 partitions
    kafka_cluster.stop_node(victim)
    producer = Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "linger.ms": 5, "message.timeout.ms": 0,
    })
    delivered: dict[int, int] = defaultdict(int)
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered[msg.partition()] += 1

    try:
        assert victim not in kafka_cluster.registered_brokers()
        for i in range(10_000, 20_000):
            key = KEYS[i % len(KEYS)]
            producer.produce(topic, key=key, value=json.dumps({"key": key, "seq": i // len(KEYS)}),
                             on_delivery=on_delivery)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            producer.poll(0.5)
        # Only the partitions without a replica on the stopped broker took writes.
        assert set(delivered) == set(state) - held, (dict(delivered), held)
        assert errors == []
    finally:
        kafka_cluster.start_node(victim)
    assert producer.flush(120) == 0, "messages still undelivered 120 s after the broker returned"
    assert errors == []
    received = consume_all(bootstrap, topic, 20_000)

    seen = [(m["key"], m["seq"]) for m in received]
    assert len(seen) == 20_000
    assert len(set(seen)) == 20_000, "duplicates delivered"
    per_key: dict[str, list[int]] = defaultdict(list)
    for key, seq in seen:
        per_key[key].append(seq)
    assert set(per_key) == set(KEYS)
    for key, seqs in per_key.items():
        assert seqs == sorted(seqs), f"{key} out of order"
        assert seqs == list(range(20_000 // len(KEYS))), f"{key} has gaps"

    # The restarted broker catches up and rejoins the in-sync replica set everywhere.
    deadline = time.monotonic() + 90
    while True:
        state = partition_state(admin, topic)
        if all(sorted(isr) == sorted(replicas) for replicas, isr in state.values()):
            break
        assert time.monotonic() < deadline, f"ISR not repaired: {state}"
        time.sleep(1)
    assert any(victim in isr for _replicas, isr in state.values())
