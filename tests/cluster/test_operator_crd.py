"""The EnergyPipeline CRD on a real API server: admission rejects bad specs with messages
that name the field (no operator involved), kubectl explain documents every field, defaults
are applied, and the printer columns, short names and category work.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from energy_harness.localstack.kube import KubeControlPlane
from kubernetes import client

pytestmark = pytest.mark.cluster

VALID: dict[str, Any] = {
    "mqtt": {"host": "hivemq.energy.svc"},
    "kafka": {"bootstrapServers": "kafka.energy.svc:9092"},
    "database": {"urlSecret": {"name": "pg"}},
}


@pytest.fixture
def namespace(kube: KubeControlPlane, energy_crd: str) -> Iterator[str]:
    name = f"crd-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube.api_client)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def manifest(name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "apiVersion": "energy.pipeline.dev/v1alpha1",
        "kind": "EnergyPipeline",
        "metadata": {"name": name},
        "spec": spec,
    })


def merged(**changes: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(VALID))
    for path, value in changes.items():
        node = spec
        *parents, last = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return spec


_DELETE = object()

# (name, spec, what the error message must contain: the field it names)
INVALID = [
    ("replicas-above-partitions", merged(kafka__partitions=2, ingestion__replicas=3),
     "spec.ingestion.replicas"),
    ("horizon-too-far", merged(forecast__horizons=169), "spec.forecast.horizons"),
    ("horizon-zero", merged(forecast__horizons=0), "spec.forecast.horizons"),
    ("rf-above-brokers", merged(kafka__replicationFactor=3, kafka__brokers=2),
     "spec.kafka.replicationFactor"),
    ("no-partitions", merged(kafka__partitions=0), "spec.kafka.partitions"),
    ("port-out-of-range", merged(mqtt__port=70000), "spec.mqtt.port"),
    ("no-bootstrap", merged(kafka__bootstrapServers=_DELETE), "spec.kafka.bootstrapServers"),
    ("no-database", merged(database=_DELETE), "spec.database"),
    ("typo-field", merged(kafka__partitionz=3), "spec.kafka.partitionz"),
    ("bad-schedule", merged(forecast__retrainSchedule="every night"),
     "spec.forecast.retrainSchedule"),
    ("bad-log-level", merged(logLevel="LOUD"), "spec.logLevel"),
    ("isr-above-rf", merged(kafka__minInSyncReplicas=3), "spec.kafka.minInSyncReplicas"),
    ("requests-above-limits",
     merged(inference__resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}),
     "spec.inference.resources"),
    ("sasl-without-sasl-protocol",
     merged(kafka__sasl={"credentialsSecret": {"name": "kafka-user"}}),
     "spec.kafka.securityProtocol"),
    ("bad-topic-prefix", merged(kafka__topicPrefix="my topics"), "spec.kafka.topicPrefix"),
    ("unknown-model-parameter", merged(forecast__modelParameters={"learnin_rate": 0.1}),
     "spec.forecast.modelParameters"),
    ("negative-replicas", merged(inference__replicas=-1), "spec.inference.replicas"),
    ("api-page-default-above-max", merged(api__defaultPageSize=5000, api__maxPageSize=100),
     "spec.api.defaultPageSize"),
    ("api-too-many-replicas", merged(api__replicas=101), "spec.api.replicas"),
    ("api-enabled-not-boolean", merged(api__enabled="yes"), "spec.api.enabled"),
    ("api-pool-empty", merged(api__dbPoolSize=0), "spec.api.dbPoolSize"),
    ("api-timeout-too-long", merged(api__statementTimeoutMs=600001),
     "spec.api.statementTimeoutMs"),
    ("api-page-too-large", merged(api__maxPageSize=100001), "spec.api.maxPageSize"),
    ("api-secret-without-name", merged(api__databaseUrlSecret={"key": "url"}),
     "spec.api.databaseUrlSecret.name"),
    ("mqtt-ca-with-tls-disabled",
     merged(mqtt__tls={"enabled": False, "caSecret": {"name": "mqtt-ca"}}),
     "spec.mqtt.tls.enabled"),
    ("mqtt-ca-secret-without-name", merged(mqtt__tls={"caSecret": {"key": "ca.crt"}}),
     "spec.mqtt.tls.caSecret.name"),
    ("bridge-connections-over-a-wildcard-root",
     merged(ingestion__bridge__connections=2, mqtt__topicFilter="energy/+/temperature/#"),
     "spec.ingestion.bridge.connections"),
    ("bridge-connections-above-sensor-types", merged(ingestion__bridge__connections=6),
     "spec.ingestion.bridge.connections"),
    ("1-starts-with-digit", VALID, "metadata.name"),
]


def test_at_least_eight_invalid_specs_are_covered() -> None:
    assert len(INVALID) >= 8


@pytest.mark.parametrize(("name", "spec", "field"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_spec_is_rejected_naming_the_field(
    kube: KubeControlPlane, namespace: str, name: str, spec: dict[str, Any], field: str
) -> None:
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", input=manifest(name, spec),
                          check=False)
    assert result.returncode != 0, f"{name} was accepted"
    assert field in result.stderr, result.stderr
    # Rejected at admission: nothing was stored, so no operator could ever see it.
    stored = kube.kubectl("get", "energypipelines", "-n", namespace, "-o", "name")
    assert stored.stdout.strip() == ""


def test_valid_spec_is_stored_with_defaults(kube: KubeControlPlane, namespace: str) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("minimal", VALID))
    stored = json.loads(kube.kubectl("get", "energypipeline", "minimal", "-n", namespace,
                                     "-o", "json").stdout)
    spec = stored["spec"]
    assert spec["kafka"]["partitions"] == 4
    assert spec["kafka"]["replicationFactor"] == 2
    # No static default: the operator derives it (and the other names) from the name.
    assert "topicPrefix" not in spec["kafka"] and "schema" not in spec["database"]
    assert spec["kafka"]["deleteTopicsOnDelete"] is False
    assert spec["database"]["urlSecret"]["key"] == "url"
    assert spec["ingestion"]["replicas"] == 2
    assert spec["ingestion"]["bridge"]["replicas"] == 2
    assert spec["inference"]["replicas"] == 2
    assert spec["forecast"]["horizons"] == 168
    assert spec["image"] == "ghcr.io/energy-pipeline/energy-pipeline:0.1.0"
    assert spec["paused"] is False
    assert spec["api"]["enabled"] is False and spec["api"]["replicas"] == 1
    assert spec["api"]["maxPageSize"] == 10000 and "databaseUrlSecret" not in spec["api"]


def test_examples_are_accepted(kube: KubeControlPlane, namespace: str) -> None:
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "manifests" / "examples"
    result = kube.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(examples))
    assert result.stdout.count("created (server dry run)") == len(list(examples.glob("*.yaml")))


def test_printer_columns_short_names_and_category(kube: KubeControlPlane,
                                                  namespace: str) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("shown", VALID))
    header = kube.kubectl("get", "energypipelines", "-n", namespace).stdout.splitlines()[0]
    assert header.split() == ["NAME", "READY", "INGESTION", "INFERENCE", "LAST", "FORECAST",
                              "AGE"]
    wide = kube.kubectl("get", "energypipelines", "-n", namespace, "-o", "wide").stdout
    assert "REASON" in wide and "PAUSED" in wide
    # `epipe` always resolves to us; `ep` is registered too (kubectl prefers Endpoints' ep).
    assert "shown" in kube.kubectl("get", "epipe", "-n", namespace).stdout
    resources = kube.kubectl("api-resources", "--api-group=energy.pipeline.dev").stdout
    assert "ep,epipe" in resources
    # Category `all`: listed by `kubectl get all`.
    assert "energypipeline.energy.pipeline.dev/shown" in kube.kubectl(
        "get", "all", "-n", namespace, "-o", "name").stdout


def test_kubectl_explain_documents_the_fields(kube: KubeControlPlane, energy_crd: str) -> None:
    partitions = kube.kubectl("explain", "energypipelines.spec.kafka.partitions").stdout
    assert "Kafka cannot remove partitions" in partitions
    host = kube.kubectl("explain", "energypipelines.spec.mqtt.host").stdout
    assert "MQTT_HOST" in host
    recursive = kube.kubectl("explain", "energypipelines.spec", "--recursive").stdout
    for field in ("bootstrapServers", "deleteTopicsOnDelete", "urlSecret", "horizons",
                  "retrainSchedule", "modelParameters", "receiveMaximum", "paused",
                  "databaseUrlSecret", "defaultPageSize"):
        assert field in recursive
    status = kube.kubectl("explain", "energypipelines.status.conditions").stdout
    assert "Ready, Progressing and Degraded" in status
