"""MQTT -> bridge -> Kafka -> ingest -> PostgreSQL on the secured Kafka: every reading stored
exactly once, each worker logged in as its own role (SASL_SSL, SCRAM-SHA-512, ACLs) with the
CA and password files the operator mounts.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from energy_harness.localstack import KafkaCluster
from energy_harness.localstack.hivemq import HiveMQBroker
from energy_harness.localstack.workers import energy_pipeline_argv, service_env
from energy_pipeline.core.contracts import all_kafka_topics

from .conftest import Pipeline
from .test_data_plane import SMALL, finish, simulate

pytestmark = pytest.mark.e2e


@pytest.fixture
def secured_pipeline(
    secured_kafka: KafkaCluster,
    database: str,
    own_mqtt_broker: HiveMQBroker,
    tmp_path: Path,
) -> Iterator[Pipeline]:
    """Workers of one test on the secured cluster, with a topic set and group of their own
    (the roles' ACLs granted for them, the topics created by the operator's user)."""
    security = secured_kafka.security
    assert security is not None
    prefix = f"s{uuid.uuid4().hex[:8]}"
    group = f"ingest-{prefix}"
    secured_kafka.grant(prefix, group)
    env = service_env(
        secured_kafka.bootstrap_servers,
        database,
        own_mqtt_broker.host,
        own_mqtt_broker.port,
        KAFKA_TOPIC_PREFIX=prefix,
        PIPELINE_NAME="e2e-secured",
        KAFKA_SESSION_TIMEOUT_MS="6000",
        KAFKA_CONSUMER_GROUP=group,
    )
    created = subprocess.run(
        energy_pipeline_argv(["topics", "create"]),
        env={**env, **security.worker_env("operator"), "KAFKA_REPLICATION_FACTOR": "2"},
        capture_output=True, text=True, timeout=120,
    )
    assert created.returncode == 0, created.stderr
    assert sorted(json.loads(created.stdout)["created"]) == sorted(all_kafka_topics(prefix))
    result = Pipeline(env, tmp_path / "logs")
    try:
        yield result
    finally:
        result.stop_all()


def test_readings_stored_exactly_once_through_the_secured_kafka(
    secured_pipeline: Pipeline, secured_kafka: KafkaCluster
) -> None:
    security = secured_kafka.security
    assert security is not None
    bridge = secured_pipeline.start("bridge", ["bridge"], MQTT_CLIENT_ID="bridge-secured",
                                    **security.worker_env("bridge"))
    bridge.wait_ready()
    for i in range(2):
        secured_pipeline.start(f"ingest-{i}", ["ingest"], **security.worker_env("ingest"))
    simulate(secured_pipeline, SMALL)
    finish(secured_pipeline, SMALL)
    for worker in secured_pipeline.workers:
        if worker.name != "simulate":
            assert worker.stop() == 0, worker.name
