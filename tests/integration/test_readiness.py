"""Readiness tells the truth, against the real services: each worker (a real process) turns
unready, naming the dependency, when that dependency stops, and ready again when it is back;
`energy_dependency_up` and `energy_ready` say the same, and the worker logs the outage in a
few lines rather than one per retry.

Kafka is the session's 3-node cluster: all three brokers are stopped together and started
together (stopped one by one, the last waits for a controller quorum that is gone; started
one by one, the first cannot register without one), and the test waits until every broker
and partition leader is back before it ends, so later tests find the cluster as it was.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest
from energy_harness.localstack import KafkaCluster, PostgresServer
from energy_harness.localstack.hivemq import HiveMQBroker
from energy_harness.localstack.process import free_port
from energy_harness.localstack.workers import WorkerProcess, service_env
from energy_harness.testing import wait_for
from energy_pipeline.api.auth import entry
from energy_pipeline.forecasting.models import SeasonalNaive
from energy_pipeline.forecasting.registry import register_model

pytestmark = pytest.mark.integration

# Generous: a worker notices within a check interval plus a check timeout (about 6 s), and
# a restarted Kafka client reconnects with a backoff of up to 10 s.
NOTICE_S = 45
RECOVER_S = 90


def readiness(worker: WorkerProcess) -> tuple[bool, str]:
    worker.require_alive()
    try:
        return worker.ready()
    except OSError as exc:  # the health port itself must always answer
        raise AssertionError(f"{worker.name}: /readyz did not answer: {exc}") from exc


def wait_unready(worker: WorkerProcess, naming: str) -> str:
    """Wait for /readyz to answer 503 naming `naming`; its detail."""

    def unready() -> str | None:
        ok, detail = readiness(worker)
        return detail if not ok and naming in detail else None

    return wait_for(unready, NOTICE_S, f"{worker.name} unready naming {naming!r}")


def wait_ready(worker: WorkerProcess, timeout: float = RECOVER_S) -> str:
    """Wait for /readyz to answer 200; its detail."""

    def ready() -> str | None:
        ok, detail = readiness(worker)
        return detail if ok else None

    return wait_for(ready, timeout, f"{worker.name} ready")


def up(worker: WorkerProcess, dependency: str) -> float:
    return worker.metric(
        "energy_dependency_up", {"worker": worker.command[0], "dependency": dependency}
    )


def ready_metric(worker: WorkerProcess) -> float:
    return worker.metric("energy_ready", {"worker": worker.command[0]})


def log_entries(worker: WorkerProcess) -> list[dict[str, object]]:
    assert worker.process is not None
    entries = []
    for line in Path(worker.process.log_path).read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def outages_logged(worker: WorkerProcess) -> list[tuple[str, str]]:
    return [
        (str(e["msg"]), str(e["dependency"]))
        for e in log_entries(worker)
        if e.get("logger") == "energy_pipeline.readiness" and e["msg"] != "dependency still down"
    ]


@contextmanager
def postgres_stopped(postgres: PostgresServer) -> Iterator[None]:
    postgres.stop()
    try:
        yield
    finally:
        postgres.start()


@contextmanager
def kafka_stopped(cluster: KafkaCluster) -> Iterator[None]:
    nodes = list(cluster.nodes.values())
    for node in nodes:
        node.process.request_stop()
    deadline = time.monotonic() + 60
    for node in nodes:
        node.process.wait_stopped(deadline - time.monotonic())
    try:
        yield
    finally:
        for node in nodes:
            node.process.start()
        cluster.wait_for_brokers(set(cluster.nodes), cluster.start_timeout)
        wait_for(lambda: all_partitions_led(cluster), 60, "a leader for every partition")


def all_partitions_led(cluster: KafkaCluster) -> bool:
    metadata = cluster.admin().list_topics(timeout=10)
    return all(
        p.leader >= 0 and p.error is None
        for t in metadata.topics.values()
        for p in t.partitions.values()
    )


def test_ingest_is_ready_only_while_kafka_and_the_database_answer(
    kafka_cluster: KafkaCluster,
    postgres: PostgresServer,
    database: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    env = service_env(
        kafka_cluster.bootstrap_servers,
        database,
        "127.0.0.1",
        free_port(),  # ingest needs no MQTT
        KAFKA_TOPIC_PREFIX=topic_prefix,
        KAFKA_CONSUMER_GROUP=f"ingest-{topic_prefix}",
        KAFKA_SESSION_TIMEOUT_MS="6000",
        PIPELINE_NAME="ready",
    )
    ingest = WorkerProcess("ingest", ["ingest"], env, tmp_path / "logs").start()
    try:
        assert wait_ready(ingest, 60) == "ok"
        assert (up(ingest, "kafka"), up(ingest, "database"), ready_metric(ingest)) == (1, 1, 1)

        # Before: still "ready" with PostgreSQL gone (it only noticed a failed write).
        with postgres_stopped(postgres):
            detail = wait_unready(ingest, "database")
            assert detail.startswith("database: ") and "kafka" not in detail
            assert (up(ingest, "database"), up(ingest, "kafka"), ready_metric(ingest)) == (0, 1, 0)
        wait_ready(ingest)
        assert up(ingest, "database") == 1

        with kafka_stopped(kafka_cluster):
            detail = wait_unready(ingest, "kafka")
            assert detail.startswith("kafka: ") and "database" not in detail
            assert kafka_cluster.bootstrap_servers in detail
            assert (up(ingest, "kafka"), ready_metric(ingest)) == (0, 0)
        wait_ready(ingest)
        assert (up(ingest, "kafka"), ready_metric(ingest)) == (1, 1)

        # Each outage in two lines of its own (down, back), however often it was retried.
        assert outages_logged(ingest) == [
            ("dependency down", "database"),
            ("dependency answers again", "database"),
            ("dependency down", "kafka"),
            ("dependency answers again", "kafka"),
        ]
    finally:
        assert ingest.stop(timeout=60) == 0


def test_bridge_is_ready_only_while_mqtt_and_kafka_answer(
    kafka_cluster: KafkaCluster,
    own_mqtt_broker: HiveMQBroker,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    env = service_env(
        kafka_cluster.bootstrap_servers,
        "postgresql://unused@127.0.0.1:1/none",  # the bridge needs no database
        own_mqtt_broker.host,
        own_mqtt_broker.port,
        KAFKA_TOPIC_PREFIX=topic_prefix,
        MQTT_CLIENT_ID=f"bridge-{topic_prefix}",
        PIPELINE_NAME="ready",
    )
    bridge = WorkerProcess("bridge", ["bridge"], env, tmp_path / "logs").start()
    try:
        assert wait_ready(bridge, 60) == "ok"
        assert (up(bridge, "mqtt"), up(bridge, "kafka"), ready_metric(bridge)) == (1, 1, 1)

        own_mqtt_broker.stop()
        try:
            detail = wait_unready(bridge, "mqtt")
            assert f"{own_mqtt_broker.host}:{own_mqtt_broker.port}" in detail
            assert "kafka" not in detail
            assert (up(bridge, "mqtt"), up(bridge, "kafka"), ready_metric(bridge)) == (0, 1, 0)
        finally:
            own_mqtt_broker.start()
        wait_ready(bridge)

        # Before: ready all along, since only MQTT counted (and with no traffic there are
        # no deliveries to notice Kafka's absence by).
        with kafka_stopped(kafka_cluster):
            detail = wait_unready(bridge, "kafka")
            assert detail.startswith("kafka: ") and "mqtt" not in detail
            assert (up(bridge, "kafka"), up(bridge, "mqtt"), ready_metric(bridge)) == (0, 1, 0)
        wait_ready(bridge)
        assert outages_logged(bridge) == [
            ("dependency down", "mqtt"),
            ("dependency answers again", "mqtt"),
            ("dependency down", "kafka"),
            ("dependency answers again", "kafka"),
        ]
    finally:
        assert bridge.stop(timeout=60) == 0


def inference_env(database_url: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "DATABASE_URL": database_url,
        "GRPC_PORT": str(free_port()),
        # Readiness, not transport: plaintext gRPC on loopback, knowingly (mutual TLS is
        # tested in test_inference_server.py).
        "GRPC_TLS": "false",
        "MODEL_REFRESH_S": "0.5",
        "PIPELINE_NAME": "ready",
    }


def test_inference_keeps_serving_its_models_while_the_registry_is_down(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    with psycopg2.connect(database) as conn:
        register_model(
            conn,
            site_id="site-a",
            artifact=SeasonalNaive(24).to_text(),
            trained_on_until=None,
            params={},
            metrics={},
            force=True,
        )
    conn.close()
    inference = WorkerProcess(
        "inference", ["inference"], inference_env(database), tmp_path / "logs"
    ).start()
    try:
        assert wait_ready(inference, 60) == "1 model(s) loaded"
        assert (up(inference, "registry"), ready_metric(inference)) == (1, 1)

        with postgres_stopped(postgres):
            # Still ready (the models are in memory), but saying the registry is away.
            wait_for(
                lambda: up(inference, "registry") == 0,
                NOTICE_S,
                "energy_dependency_up{registry} 0",
            )
            ok, detail = readiness(inference)
            assert ok and ready_metric(inference) == 1
            assert detail.startswith("1 model(s) loaded; registry: ")
            assert detail.endswith("(serving the models loaded before)")
        wait_for(
            lambda: readiness(inference) == (True, "1 model(s) loaded"),
            RECOVER_S,
            "the registry answering again",
        )
        assert up(inference, "registry") == 1
        assert outages_logged(inference) == [
            ("dependency down", "registry"),
            ("dependency answers again", "registry"),
        ]
    finally:
        assert inference.stop(timeout=30) == 0


def test_inference_without_a_model_or_a_registry_says_why(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    port = free_port()
    dead = f"postgresql://nobody:x@127.0.0.1:{port}/none"
    inference = WorkerProcess(
        "inference-nodb", ["inference"], inference_env(dead), tmp_path / "logs"
    ).start()
    try:
        detail = wait_unready(inference, "registry")
        assert detail.startswith("registry: ") and str(port) in detail
        assert (up(inference, "registry"), ready_metric(inference)) == (0, 0)
    finally:
        assert inference.stop(timeout=30) == 0


def test_api_is_ready_only_while_the_database_answers(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    tokens = tmp_path / "api-tokens"
    tokens.write_text(entry("tests", "token") + "\n")
    env = {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "DATABASE_URL": database,
        "API_PORT": str(free_port()),
        "PIPELINE_NAME": "ready",
        "API_TOKENS_FILE": str(tokens),
    }
    api = WorkerProcess("api", ["api"], env, tmp_path / "logs").start()
    try:
        assert wait_ready(api, 60) == "ok"
        assert (up(api, "database"), ready_metric(api)) == (1, 1)
        with postgres_stopped(postgres):
            detail = wait_unready(api, "database")
            assert detail.startswith("database: ")
            assert (up(api, "database"), ready_metric(api)) == (0, 0)
        wait_ready(api)
        assert (up(api, "database"), ready_metric(api)) == (1, 1)
        assert outages_logged(api) == [
            ("dependency down", "database"),
            ("dependency answers again", "database"),
        ]
    finally:
        assert api.stop(timeout=30) == 0
