"""A broker's disk wiped while it was a partition's only in-sync replica, and its follower
had crashed (kill -9), not stopped.

The e2e fault test covers the follower that stopped cleanly: Kafka 4.1 keeps it as an
eligible leader replica and elects it by itself. A crashed follower is not kept eligible (its
last writes might not have reached its disk), and the wiped leader lost everything, so Kafka
elects no one: the partition stays without a leader instead of electing the empty replica.
Because of min.insync.replicas 2 the crashed follower still holds every acknowledged record;
README "Faults" gives the procedure this test runs: keep the wiped broker stopped, elect the
follower uncleanly (the only live replica), start the wiped broker again. Started at once
instead, the wiped broker was elected again in one of our runs (Kafka 4.1.1 takes it for the
last known leader) and the follower truncated to it: every acknowledged record was gone.
The kafka chart's pods take these steps by themselves (charts/kafka/files/empty-volume.sh,
tested on the chart's pods in tests/container/test_kafka_image.py); this is Kafka without it.

Its own cluster: the suite's session cluster would keep leaderless partitions of other tests.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import ElectionType, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, PartitionMetadata
from energy_harness.localstack import KafkaCluster
from energy_harness.testing import read_partition, wait_for
from energy_pipeline.dataplane.topics import TopicSpec, create_topic

pytestmark = pytest.mark.integration

ACKED_BEFORE = 1000
PENDING = 100


@pytest.fixture
def cluster(services_dir: Path, system_packages: None) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(services_dir / f"kafka-wiped-{uuid.uuid4().hex[:6]}", size=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


def _partition(admin: AdminClient, topic: str) -> PartitionMetadata:
    return admin.list_topics(topic, timeout=10).topics[topic].partitions[0]


def test_a_crashed_follower_and_a_wiped_sole_in_sync_leader_lose_no_acknowledged_record(
    cluster: KafkaCluster,
) -> None:
    admin = cluster.admin()
    topic = f"wiped-{uuid.uuid4().hex[:8]}"
    create_topic(admin, TopicSpec(topic, partitions=4, replication_factor=2))
    leader = _partition(admin, topic).leader
    follower = next(r for r in _partition(admin, topic).replicas if r != leader)

    acked: list[bytes] = []
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed.append(err)
        else:
            acked.append(msg.value())

    producer = Producer({"bootstrap.servers": cluster.bootstrap_servers, "acks": "all",
                         "enable.idempotence": True, "message.timeout.ms": 600_000})
    for i in range(ACKED_BEFORE):
        producer.produce(topic, str(i).encode(), partition=0, on_delivery=delivered)
    assert producer.flush(60) == 0 and len(acked) == ACKED_BEFORE

    cluster.kill_node(follower)
    # The leader alone may not acknowledge (min.insync.replicas 2): these wait.
    for i in range(ACKED_BEFORE, ACKED_BEFORE + PENDING):
        producer.produce(topic, str(i).encode(), partition=0, on_delivery=delivered)
    producer.flush(15)
    assert len(acked) == ACKED_BEFORE and failed == []

    cluster.wipe_node(leader)
    cluster.start_node(follower)
    # Kafka elects no one: the wiped leader is fenced, the crashed follower not eligible.
    wait_for(lambda: _partition(admin, topic).leader == -1, 60, "the partition without leader")
    time.sleep(10)
    assert _partition(admin, topic).leader == -1
    assert len(acked) == ACKED_BEFORE

    # The procedure: with the wiped broker still stopped, the follower is the only live
    # replica an unclean election can choose.
    result = admin.elect_leaders(ElectionType.UNCLEAN, [TopicPartition(topic, 0)]).result(30)
    assert all(error is None for error in result.values()), result
    wait_for(lambda: _partition(admin, topic).leader == follower, 60, "the follower elected")
    cluster.start_node(leader)
    assert producer.flush(120) == 0 and failed == []
    wait_for(lambda: set(_partition(admin, topic).isrs) == {leader, follower}, 120,
             "the wiped replica back in sync")

    expected = [str(i).encode() for i in range(ACKED_BEFORE + PENDING)]
    assert sorted(acked, key=int) == expected
    assert read_partition(cluster.bootstrap_servers, topic, 0) == expected
