"""Kafka topic administration: create topics and wait until every broker sees them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 4
    replication_factor: int = 2
    config: dict[str, str] = field(default_factory=dict)


def create_topic(admin: AdminClient, spec: TopicSpec, timeout: float = 30) -> bool:
    """Create `spec` if absent and wait until its partitions have leaders.

    Returns True if this call created the topic, False if it existed already.
    """
    new = NewTopic(
        spec.name,
        num_partitions=spec.partitions,
        replication_factor=spec.replication_factor,
        config=dict(spec.config),
    )
    created = True
    try:
        admin.create_topics([new], request_timeout=timeout)[spec.name].result(timeout=timeout)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
        created = False
    wait_for_topic(admin, spec.name, spec.partitions, timeout)
    return created


def wait_for_topic(admin: AdminClient, name: str, partitions: int, timeout: float = 30) -> None:
    """Topic creation is acknowledged by the controller before brokers' metadata catches up."""
    deadline = time.monotonic() + timeout
    while True:
        topic = admin.list_topics(name, timeout=10).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) >= partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} not visible with {partitions} led partitions")
        time.sleep(0.2)
