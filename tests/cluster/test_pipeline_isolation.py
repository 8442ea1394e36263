"""Two EnergyPipelines side by side on one MQTT broker, one Kafka cluster and one database,
each with nothing but its name to tell it apart: neither sees the other's readings.

The operator runs as a local process under the chart's RBAC against the real API server
(kwok plays the kubelets), real Kafka (3 brokers), real PostgreSQL and Mosquitto. It derives
each pipeline's topic root, shared group, Kafka topics, consumer group and database schema
from the name; the workers then run here as processes with exactly the settings of their
pipeline's ConfigMap, and each simulator publishes under its pipeline's topic root. A third
pipeline that claims the first one's Kafka topics is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from confluent_kafka.admin import AdminClient
from energy_harness.localstack import KafkaCluster, MosquittoBroker, PostgresServer
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.localstack.postgres import dsn
from energy_harness.localstack.workers import WorkerProcess, service_env
from energy_harness.operator_local import OperatorProcess
from energy_harness.testing import admin_sql, expected_rows, stored_rows, wait_for
from energy_operator import crd, render
from energy_operator.isolation import REASON
from energy_operator.kube import Kube
from energy_pipeline.dataplane.topics import delete_topics, describe_topics
from energy_pipeline.db.connect import with_schema
from energy_pipeline.db.migrate import latest_version, schema_version

from .conftest import leading_operator

pytestmark = pytest.mark.cluster

API, KIND = crd.API_VERSION, crd.KIND
# Settings of the ConfigMap that name files only a pod has (the operator's mounts).
POD_ONLY = ("GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CA_FILE", "API_TOKENS_FILE")


def simulation(seed: int, sites: int, devices: int) -> list[str]:
    return ["--sites", str(sites), "--devices", str(devices), "--interval", "15m",
            "--duration", "6h", "--start", "2025-02-01T00:00:00Z", "--seed", str(seed),
            "--fault-rate", "0"]


@pytest.fixture(scope="module")
def operator(
    kube: KubeControlPlane,
    operator_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    with leading_operator(operator_kubeconfig, tmp_path_factory.mktemp("operator-logs"),
                          3) as proc:
        yield proc


class Side:
    """One namespace and database shared by the pipelines of the test."""

    def __init__(self, kube: KubeControlPlane, kafka: KafkaCluster, postgres: PostgresServer,
                 mqtt: MosquittoBroker, suffix: str) -> None:
        self.client = Kube(kube.api_client)
        self.kafka, self.mqtt = kafka, mqtt
        self.namespace, self.database = f"iso-{suffix}", f"iso_{suffix}"
        self.url = dsn(postgres.port, postgres.password, self.database)
        self.names: list[str] = []

    def apply(self, name: str, **sections: dict[str, Any]) -> None:
        spec: dict[str, Any] = {
            "mqtt": {"host": self.mqtt.host, "port": self.mqtt.port},
            "kafka": {"bootstrapServers": self.kafka.bootstrap_servers, "brokers": 3,
                      "partitions": 2},
            "database": {"urlSecret": {"name": "pg", "key": "url"}},
            "ingestion": {"replicas": 1},
            # No inference: what is under test is where the readings go.
            "forecast": {"enabled": False},
        }
        for section, fields in sections.items():
            spec[section] = {**spec.get(section, {}), **fields}
        self.client.create({"apiVersion": API, "kind": KIND,
                            "metadata": {"name": name, "namespace": self.namespace},
                            "spec": spec})
        self.names.append(name)

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.client.get(API, KIND, self.namespace, name))

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        status = self.get(name).get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == type_), {})

    def config(self, name: str) -> dict[str, str] | None:
        found = self.client.get("v1", "ConfigMap", self.namespace, f"{name}-config")
        return None if found is None else dict(found["data"])

    def worker_env(self, name: str) -> dict[str, str]:
        """What the operator gives the pipeline's pods, run here: its ConfigMap, the URL from
        its Secret, nothing else (PATH, HOME for the process)."""
        data = self.config(name)
        assert data is not None
        return service_env(data["KAFKA_BOOTSTRAP_SERVERS"], self.url, data["MQTT_HOST"],
                           int(data["MQTT_PORT"]),
                           **{**{k: v for k, v in data.items() if k not in POD_ONLY},
                              # No certificates here; ingest calls no inference anyway.
                              "GRPC_TLS": "false", "KAFKA_SESSION_TIMEOUT_MS": "6000"})


@pytest.fixture
def side(kube: KubeControlPlane, energy_crd: str, operator: OperatorProcess,
         kafka_cluster: KafkaCluster, postgres: PostgresServer,
         mqtt_broker: MosquittoBroker) -> Iterator[Side]:
    suffix = uuid.uuid4().hex[:6]
    result = Side(kube, kafka_cluster, postgres, mqtt_broker, suffix)
    client = result.client
    client.request("POST", "/api/v1/namespaces", body={
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": result.namespace}})
    admin_sql(postgres, f'CREATE DATABASE "{result.database}"')
    client.create({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "pg", "namespace": result.namespace},
                   "stringData": {"url": result.url}})
    try:
        yield result
    finally:
        for name in result.names:
            client.delete(API, KIND, result.namespace, name)
        wait_for(lambda: not client.list(API, KIND, result.namespace), 30, "pipelines deleted")
        client.request("DELETE", f"/api/v1/namespaces/{result.namespace}")
        delete_topics(AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers}),
                      [t for n in result.names for t in render.topic_names({}, n)], timeout=30)
        admin_sql(postgres, f'DROP DATABASE IF EXISTS "{result.database}" WITH (FORCE)')


def test_two_pipelines_named_apart_never_see_each_others_readings(
        side: Side, tmp_path: Path) -> None:
    suffix = side.namespace.removeprefix("iso-")
    alpha, beta = f"alpha-{suffix}", f"beta-{suffix}"
    side.apply(alpha)
    side.apply(beta)
    for name in (alpha, beta):
        schema = name.replace("-", "_")
        _wait_migrated(side, name, schema)
        data = side.config(name)
        assert data is not None
        # Every name that could be shared is the pipeline's own, derived from its name.
        assert {k: data[k] for k in ("MQTT_TOPIC_ROOT", "MQTT_TOPIC_FILTER",
                                     "MQTT_SHARED_GROUP", "KAFKA_TOPIC_PREFIX",
                                     "KAFKA_CONSUMER_GROUP", "DATABASE_SCHEMA")} == {
            "MQTT_TOPIC_ROOT": name, "MQTT_TOPIC_FILTER": f"{name}/#",
            "MQTT_SHARED_GROUP": name, "KAFKA_TOPIC_PREFIX": name,
            "KAFKA_CONSUMER_GROUP": f"{name}-ingest", "DATABASE_SCHEMA": schema}
        topics = describe_topics(AdminClient({"bootstrap.servers": side.kafka.bootstrap_servers}),
                                 render.topic_names({}, name))
        assert len(topics) == 7
    assert schema_version(side.url) == 0  # nothing in public

    # A third pipeline claiming alpha's topics is refused: no child, no topic, no schema.
    gamma = f"gamma-{suffix}"
    side.apply(gamma, kafka={"topicPrefix": alpha, "deleteTopicsOnDelete": True})
    degraded = wait_for(lambda: (c := side.condition(gamma, "Degraded")).get("reason") == REASON
                        and c, 30, f"{gamma} refused")
    assert f"EnergyPipeline {side.namespace}/{alpha}" in degraded["message"]
    assert f"kubectl patch energypipeline {gamma}" in degraded["message"]
    assert side.condition(gamma, "Ready")["status"] == "False"
    assert side.condition(alpha, "Degraded").get("status") == "False"  # the earlier carries on
    assert side.config(gamma) is None
    assert not side.client.list("apps/v1", "Deployment", side.namespace,
                                f"app.kubernetes.io/instance={gamma}")
    assert schema_version(with_schema(side.url, gamma.replace("-", "_"))) == 0
    # Deleted, it leaves the topics it claimed alone: they are alpha's.
    side.client.delete(API, KIND, side.namespace, gamma)
    side.names.remove(gamma)
    wait_for(lambda: side.client.get(API, KIND, side.namespace, gamma) is None, 30,
             f"{gamma} deleted")
    kept = [e for e in side.client.list("v1", "Event", side.namespace)
            if e["involvedObject"]["name"] == gamma and e["reason"] == "TopicsKept"]
    assert kept and f"spec.kafka.topicPrefix '{alpha}'" in kept[0]["message"]
    admin = AdminClient({"bootstrap.servers": side.kafka.bootstrap_servers})
    assert len(describe_topics(admin, render.topic_names({}, alpha))) == 7

    # The workers of both, from their ConfigMaps; a simulator per pipeline, under its root.
    workers: list[WorkerProcess] = []
    runs = {alpha: simulation(seed=1, sites=2, devices=2),
            beta: simulation(seed=2, sites=2, devices=3)}
    try:
        for name in (alpha, beta):
            env = side.worker_env(name)
            for worker in ("bridge", "ingest"):
                proc = WorkerProcess(f"{name}-{worker}", [worker],
                                     {**env, "MQTT_CLIENT_ID": f"{name}-{worker}"},
                                     tmp_path / "logs")
                workers.append(proc.start(wait_ready=worker == "bridge"))
        for name, args in runs.items():
            sim = WorkerProcess(f"{name}-simulate",
                                ["simulate", *args, "--client-id", f"{name}-sim"],
                                {**side.worker_env(name)}, tmp_path / "logs")
            workers.append(sim.start(wait_ready=False))
            assert sim.wait(timeout=120) == 0, sim.process.log_tail() if sim.process else ""

        for name, args in runs.items():
            expected = expected_rows(args)
            own = with_schema(side.url, name.replace("-", "_"))
            _wait_count(own, len(expected), name)
            # Exactly its own readings: none lost, none of the other pipeline's.
            assert stored_rows(own) == expected
        assert expected_rows(runs[alpha]) != expected_rows(runs[beta])
        # Nothing was dead-lettered: neither bridge received the other's topics.
        for proc in workers:
            if proc.name.endswith("-bridge"):
                assert _rejected(proc) == 0, proc.name
    finally:
        for proc in reversed(workers):
            proc.stop(timeout=30)


def _wait_migrated(side: Side, name: str, schema: str) -> None:
    def done() -> bool:
        return side.config(name) is not None and schema_version(
            with_schema(side.url, schema)) == latest_version()

    wait_for(done, 60, f"{name} configured and migrated")


def _wait_count(url: str, count: int, name: str) -> None:
    def stored() -> bool:
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM readings")
            return int(cur.fetchone()[0]) >= count

    wait_for(stored, 120, f"{count} readings of {name}")


def _rejected(bridge: WorkerProcess) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in bridge.metrics_text().splitlines()
               if line.startswith('energy_rejected_total{stage="bridge"'))
