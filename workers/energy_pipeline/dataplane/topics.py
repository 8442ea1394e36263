"""Kafka topic administration: create topics and wait until every broker sees them; read,
grow and delete them for the operator."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)


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


# ---------------------------------------------------------------------------------------------
# Reconciling existing topics (used by the operator): read, plan, grow, delete.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicState:
    """A topic as the cluster metadata shows it."""

    name: str
    partitions: int
    replication_factor: int


@dataclass(frozen=True)
class TopicPlan:
    """What reconciling one topic towards its spec means.

    action: "create", "grow", "none", "shrink_refused" (Kafka cannot remove partitions) or
    "replication_differs" (changing it needs a partition reassignment, which is left to a
    person: the operator reports it and does not guess).
    """

    spec: TopicSpec
    current: TopicState | None
    action: str



def describe_problems(plans: list[TopicPlan]) -> list[str]:
    """One sentence per kind of problem, naming the topics it affects."""
    out = []
    shrink = [p for p in plans if p.action == "shrink_refused" and p.current]
    if shrink:
        names = ", ".join(f"{p.spec.name} ({p.current.partitions})" for p in shrink if p.current)
        out.append(
            f"topics {names} have more partitions than the {shrink[0].spec.partitions} asked "
            f"for, and Kafka cannot remove partitions"
        )
    differs = [p for p in plans if p.action == "replication_differs" and p.current]
    if differs:
        names = ", ".join(f"{p.spec.name} ({p.current.replication_factor})"
                          for p in differs if p.current)
        out.append(
            f"topics {names} have another replication factor than the "
            f"{differs[0].spec.replication_factor} asked for; changing it needs a partition "
            f"reassignment (kafka-reassign-partitions)"
        )
    return out


def plan_topic(spec: TopicSpec, current: TopicState | None) -> TopicPlan:
    if current is None:
        return TopicPlan(spec, None, "create")
    if current.partitions > spec.partitions:
        return TopicPlan(spec, current, "shrink_refused")
    if current.partitions < spec.partitions:
        return TopicPlan(spec, current, "grow")
    if current.replication_factor != spec.replication_factor:
        return TopicPlan(spec, current, "replication_differs")
    return TopicPlan(spec, current, "none")


def describe_topics(
    admin: AdminClient, names: list[str], timeout: float = 10
) -> dict[str, TopicState]:
    """Partition and replica counts of those of `names` that exist (one metadata request)."""
    metadata = admin.list_topics(timeout=timeout)
    found = {}
    for name in names:
        topic = metadata.topics.get(name)
        if topic is None:
            continue
        # A topic's partitions are listed even while one of them elects a leader (topic.error).
        replicas = [len(p.replicas) for p in topic.partitions.values()]
        found[name] = TopicState(name, len(topic.partitions), min(replicas, default=0))
    return found


def topic_config(admin: AdminClient, names: list[str], key: str, timeout: float = 10
                 ) -> dict[str, str]:
    """The value of config `key` of each topic in `names` (all must exist)."""
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
    futures = admin.describe_configs(resources, request_timeout=timeout)
    return {res.name: future.result(timeout)[key].value for res, future in futures.items()}


def config_drift(current: dict[str, str], want: str) -> dict[str, str]:
    """Of `current` (topic: value), the topics whose value is not `want`, with that value."""
    return {name: value for name, value in sorted(current.items()) if value != want}


def set_topic_config(admin: AdminClient, names: list[str], key: str, value: str,
                     timeout: float = 30) -> None:
    """Set `key` to `value` on each topic of `names`, leaving their other settings alone."""
    entry = ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n, incremental_configs=[entry])
                 for n in names]
    for future in admin.incremental_alter_configs(resources, request_timeout=timeout).values():
        future.result(timeout)


def broker_count(admin: AdminClient, timeout: float = 10) -> int:
    return len(admin.list_topics(timeout=timeout).brokers)


def grow_partitions(admin: AdminClient, name: str, total: int, timeout: float = 30) -> None:
    """Raise `name` to `total` partitions and wait until they all have leaders."""
    futures = admin.create_partitions([NewPartitions(name, total)], request_timeout=timeout)
    futures[name].result(timeout=timeout)
    wait_for_topic(admin, name, total, timeout)


def delete_topics(admin: AdminClient, names: list[str], timeout: float = 30) -> list[str]:
    """Delete those of `names` that exist; returns the ones this call deleted."""
    existing = [n for n in names if n in admin.list_topics(timeout=timeout).topics]
    if not existing:
        return []
    futures = admin.delete_topics(existing, operation_timeout=timeout, request_timeout=timeout)
    deleted = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            deleted.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
    return deleted
