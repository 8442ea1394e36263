"""The operator killed mid-way: the next operator (a restart, or the other replica taking the
Lease) finishes what the first began, without manual steps; topics of an earlier release
converge to the spec's settings.

Kafka creates each topic atomically, so an operator killed during topic creation leaves some
of the pipeline's topics made and the rest not; a migration killed mid-way rolls back
(tests/integration/test_migrate_faults.py). Here: the topics a killed pass left behind, then
a new operator process.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from confluent_kafka.admin import AdminClient
from energy_harness.localstack import KafkaCluster
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.operator_local import OperatorProcess
from energy_harness.testing import wait_for
from energy_operator.kube import Kube, KubeError
from energy_pipeline.core.contracts import all_kafka_topics
from energy_pipeline.dataplane.topics import TopicSpec, create_topic, delete_topics, topic_config

pytestmark = pytest.mark.cluster


def test_topics_a_killed_operator_left_half_made_are_finished_by_the_next(
    kube: KubeControlPlane, operator_kubeconfig: Path, kafka_cluster: KafkaCluster,
    tmp_path: Path,
) -> None:
    client = Kube(kube.api_client)
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    namespace = f"ot-{uuid.uuid4().hex[:8]}"
    topics = all_kafka_topics(namespace)
    # What the killed pass had made: the first two of the pipeline's seven topics (as an earlier
    # release made them: min.insync.replicas 1).
    for name in topics[:2]:
        create_topic(admin, TopicSpec(name, 4, 2, {"min.insync.replicas": "1"}))
    operator = OperatorProcess(kubeconfig=operator_kubeconfig,
                               log_path=tmp_path / "operator.log",
                               env={"RECONCILE_INTERVAL_S": "3",
                                    "LEADER_ELECTION_NAMESPACE": "energy-system",
                                    "POD_NAME": "operator-faults"})
    client.request("POST", "/api/v1/namespaces",
                   body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    try:
        body = {"apiVersion": "energy.pipeline.dev/v1alpha1", "kind": "EnergyPipeline",
                "metadata": {"name": "ot", "namespace": namespace},
                "spec": {"mqtt": {"host": "127.0.0.1"},
                         "kafka": {"bootstrapServers": kafka_cluster.bootstrap_servers,
                                   "topicPrefix": namespace},
                         "database": {"urlSecret": {"name": "none"}}}}
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        operator.start()

        def all_made() -> bool:
            listed = admin.list_topics(timeout=10).topics
            return all(t in listed and len(listed[t].partitions) == 4 for t in topics)

        wait_for(all_made, 60, "every topic of the pipeline")
        wait_for(lambda: "TopicsCreated" in kube.kubectl(
            "get", "events", "-n", namespace, "-o", "yaml").stdout, 30, "the TopicsCreated event")
        events = yaml.safe_load(kube.kubectl("get", "events", "-n", namespace, "-o", "yaml").stdout)
        (created,) = [e["message"] for e in events["items"] if e["reason"] == "TopicsCreated"]
        # Only the five that were missing; the two left behind are taken as they are.
        assert created.startswith("created " + ", ".join(topics[2:]) + " (4 partitions")
        # ... and brings the two it found to the spec's min.insync.replicas.
        wait_for(lambda: topic_config(admin, topics, "min.insync.replicas")
                 == dict.fromkeys(topics, "2"), 30, "min.insync.replicas 2 on every topic")
        events = yaml.safe_load(kube.kubectl("get", "events", "-n", namespace, "-o", "yaml").stdout)
        (updated,) = [e["message"] for e in events["items"] if e["reason"] == "TopicConfigUpdated"]
        first, second = sorted(topics[:2])  # in name order
        assert updated == f"set min.insync.replicas=2 on {first} 1, {second} 1 (before)"
        wait_for(lambda: (client.get("energy.pipeline.dev/v1alpha1", "EnergyPipeline",
                                     namespace, "ot").get("status") or {}).get("topics", {})
                 .get("state") == "Ready", 30, "status.topics.state Ready")
    finally:
        # Gone before the next test's operator starts: it would otherwise reconcile a pipeline
        # in a terminating namespace (and log the API server's refusals).
        try:
            client.request("DELETE", f"/api/v1/namespaces/{namespace}")
            wait_for(lambda: not _exists(client, f"/api/v1/namespaces/{namespace}"), 120,
                     f"namespace {namespace} deleted")
        finally:
            operator.stop()
            delete_topics(admin, topics)


def _exists(client: Kube, path: str) -> bool:
    try:
        client.request("GET", path)
    except KubeError as exc:
        if exc.status == 404:
            return False
        raise
    return True
