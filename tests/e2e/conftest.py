"""Fixtures for whole-pipeline tests: the workers of one test (its own database, topic prefix
and MQTT broker come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from energy_harness.localstack import KafkaCluster
from energy_harness.localstack.hivemq import HiveMQBroker
from energy_harness.localstack.workers import WorkerProcess, service_env


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
