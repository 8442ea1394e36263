"""Fixtures for whole-pipeline tests: a fresh database, topic prefix and MQTT broker each."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from energy_harness.localstack import KafkaCluster
from energy_harness.localstack.hivemq import HiveMQBroker
from energy_harness.localstack.workers import WorkerProcess, service_env
from energy_pipeline.core.contracts import all_kafka_topics
from energy_pipeline.dataplane.topics import TopicSpec, create_topic


@pytest.fixture
def own_mqtt_broker(tmp_path: Path, system_packages: None) -> Iterator[HiveMQBroker]:
    """A HiveMQ broker per test, the product's broker: sessions of one test never see another
    test's data, and shared subscriptions survive a broker restart (Mosquitto's do not)."""
    broker = HiveMQBroker(tmp_path / "mqtt")
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
def topic_prefix(kafka_cluster: KafkaCluster) -> str:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    for name in all_kafka_topics(prefix):
        create_topic(admin, TopicSpec(name, partitions=4, replication_factor=2))
    return prefix


@dataclass
class Pipeline:
    """Workers of one test, all stopped (gracefully, then by force) when it ends."""

    env: dict[str, str]
    log_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start(
        self, name: str, command: list[str], wait_ready: bool = True, **extra_env: str
    ) -> WorkerProcess:
        worker = WorkerProcess(name, command, {**self.env, **extra_env}, self.log_dir)
        worker.start(wait_ready=wait_ready)
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in reversed(self.workers):
            worker.stop(timeout=30)


@pytest.fixture
def pipeline(
    kafka_cluster: KafkaCluster,
    database: str,
    own_mqtt_broker: HiveMQBroker,
    topic_prefix: str,
    tmp_path: Path,
) -> Iterator[Pipeline]:
    env = service_env(
        kafka_cluster.bootstrap_servers,
        database,
        own_mqtt_broker.host,
        own_mqtt_broker.port,
        KAFKA_TOPIC_PREFIX=topic_prefix,
        PIPELINE_NAME="e2e",
        KAFKA_SESSION_TIMEOUT_MS="6000",
        KAFKA_CONSUMER_GROUP=f"ingest-{topic_prefix}",
    )
    result = Pipeline(env, tmp_path / "logs")
    try:
        yield result
    finally:
        result.stop_all()
