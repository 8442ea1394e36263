"""Two operator replicas: only the holder of the Lease reconciles; when it dies the other
takes over within the lease duration, and a clean stop hands the Lease over at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient
from energy_harness.localstack import KafkaCluster
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.operator_local import OperatorProcess
from energy_harness.testing import wait_for
from energy_operator.kube import Kube
from energy_pipeline.core.contracts import all_kafka_topics
from energy_pipeline.dataplane.topics import delete_topics

pytestmark = pytest.mark.cluster

LEASE_S = 6


@pytest.fixture
def replicas(operator_kubeconfig: Path, tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    procs = [
        OperatorProcess(
            kubeconfig=operator_kubeconfig,
            log_path=tmp_path / f"operator-{i}.log",
            name=f"energy-operator-{i}",
            env={
                "RECONCILE_INTERVAL_S": "3",
                "LEADER_ELECTION_NAMESPACE": "energy-system",
                "LEADER_ELECTION_LEASE_S": str(LEASE_S),
                "LEADER_ELECTION_RENEW_S": "1",
                "POD_NAME": f"replica-{i}",
            },
        )
        for i in range(2)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def lease(client: Kube) -> dict[str, Any]:
    found = client.get("coordination.k8s.io/v1", "Lease", "energy-system", "energy-operator")
    return dict(found["spec"]) if found else {}


def test_two_replicas_one_leader_and_failover(
    kube: KubeControlPlane, replicas: list[OperatorProcess], kafka_cluster: KafkaCluster
) -> None:
    client = Kube(kube.api_client)
    first, second = replicas
    first.start()
    first.wait_role("leader", 30)
    second.start()
    time.sleep(2)
    assert second.role() == "standby"
    assert second.healthy()  # a follower is alive, only not reconciling
    assert lease(client)["holderIdentity"].startswith("replica-0_")

    namespace = f"ha-{uuid.uuid4().hex[:8]}"
    client.request("POST", "/api/v1/namespaces",
                   body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    try:
        # PostgreSQL is not needed to see who reconciles: the children appear whatever the
        # (reported) trouble with it.
        body = {"apiVersion": "energy.pipeline.dev/v1alpha1", "kind": "EnergyPipeline",
                "metadata": {"name": "ha", "namespace": namespace},
                "spec": {"mqtt": {"host": "127.0.0.1"},
                         "kafka": {"bootstrapServers": kafka_cluster.bootstrap_servers,
                                   "topicPrefix": namespace},
                         "database": {"urlSecret": {"name": "none"}}}}
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        wait_for(lambda: client.get("apps/v1", "Deployment", namespace, "ha-ingest"), 30,
                 "the leader to create the children")
        wait_for(lambda: f'"pipeline": "{namespace}/ha"' in first.log_text(), 30,
                 "the leader's log of the pass")
        assert namespace not in second.log_text()

        # The leader dies without a word: the follower waits out the lease, then leads.
        first.kill()
        killed = time.monotonic()
        second.wait_role("leader", LEASE_S + 10)
        assert time.monotonic() - killed >= LEASE_S * 0.8
        assert lease(client)["holderIdentity"].startswith("replica-1_")
        client.merge_patch("energy.pipeline.dev/v1alpha1", "EnergyPipeline", namespace, "ha",
                           {"spec": {"inference": {"replicas": 1}}})
        wait_for(lambda: client.get("apps/v1", "Deployment", namespace, "ha-inference")[
            "spec"]["replicas"] == 1, 30, "the new leader to apply the change")

        # A clean stop hands the Lease over at once.
        assert second.stop() == 0
        assert lease(client)["holderIdentity"] == ""
        first.start()
        first.wait_role("leader", 5)
    finally:
        client.request("DELETE", f"/api/v1/namespaces/{namespace}")
        delete_topics(AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers}),
                      all_kafka_topics(namespace))
