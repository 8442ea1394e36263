"""Acceptance of the test control plane: version, scheduling on kwok nodes, garbage
collection, CRD validation with CEL, and helm.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.localstack.kube_install import KUBE_VERSION
from energy_harness.testing import wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.cluster


@pytest.fixture
def namespace(kube: KubeControlPlane) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube.api_client)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def test_kubectl_reports_server_version(kube: KubeControlPlane) -> None:
    result = kube.kubectl("version", "-o", "json")
    versions = json.loads(result.stdout)
    assert versions["serverVersion"]["gitVersion"] == KUBE_VERSION
    assert versions["clientVersion"]["gitVersion"] == KUBE_VERSION
    assert KUBE_VERSION.startswith("v1.33.")


def test_nodes_are_ready_and_labelled_like_kind(kube: KubeControlPlane) -> None:
    nodes = json.loads(kube.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert sorted(by_name) == sorted(kube.node_names)
    for name, node in by_name.items():
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == name
        assert labels["kubernetes.io/os"] == "linux"
        assert labels["kubernetes.io/arch"] == "amd64"
        assert not node["spec"].get("unschedulable")
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }


def _pod_ready(pod: client.V1Pod) -> bool:
    conditions = pod.status.conditions or []
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in conditions
    )


def test_deployment_pods_run_on_kwok_nodes_and_are_garbage_collected(
    kube: KubeControlPlane, namespace: str
) -> None:
    apps = client.AppsV1Api(kube.api_client)
    core = client.CoreV1Api(kube.api_client)
    apps.create_namespaced_deployment(namespace, _deployment("web", 3))

    started = time.monotonic()

    def three_ready_pods() -> list[client.V1Pod] | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
        ready = [p for p in pods if _pod_ready(p)]
        return ready if len(ready) == 3 else None

    pods = wait_for(three_ready_pods, timeout=60, what="3 Running+Ready pods", interval=0.5)
    elapsed = time.monotonic() - started
    assert {p.spec.node_name for p in pods} <= set(kube.node_names)
    assert all(p.status.pod_ip for p in pods)
    print(f"3 pods Running+Ready after {elapsed:.1f}s")

    replica_sets = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    assert len(replica_sets) == 1

    # Background propagation: the API call returns at once and the controller-manager's
    # garbage collector has to remove the ReplicaSet and, through it, the pods.
    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")
    wait_for(
        lambda: not apps.list_namespaced_replica_set(namespace, label_selector="app=web").items,
        timeout=60,
        what="the ReplicaSet to be garbage-collected",
        interval=0.5,
    )
    wait_for(
        lambda: not core.list_namespaced_pod(namespace, label_selector="app=web").items,
        timeout=60,
        what="the pods to be garbage-collected",
        interval=0.5,
    )


CRD_GROUP = "example.energy.pipeline.dev"
CEL_MESSAGE = "minReplicas must not exceed maxReplicas"


def _crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"scalers.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": "scalers", "singular": "scaler", "kind": "Scaler"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "minReplicas": {"type": "integer", "minimum": 0},
                                        "maxReplicas": {"type": "integer", "minimum": 0},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.minReplicas <= self.maxReplicas",
                                            "message": CEL_MESSAGE,
                                        }
                                    ],
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"observedGeneration": {"type": "integer"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def _scaler(name: str, low: int, high: int) -> str:
    return json.dumps(
        {
            "apiVersion": f"{CRD_GROUP}/v1",
            "kind": "Scaler",
            "metadata": {"name": name},
            "spec": {"minReplicas": low, "maxReplicas": high},
        }
    )


def test_crd_with_status_subresource_and_cel_rule(
    kube: KubeControlPlane, namespace: str
) -> None:
    kube.kubectl("apply", "-f", "-", input=json.dumps(_crd()))
    try:
        kube.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/scalers.{CRD_GROUP}"
        )
        kube.kubectl("apply", "-n", namespace, "-f", "-", input=_scaler("good", 1, 3))

        rejected = kube.kubectl(
            "apply", "-n", namespace, "-f", "-", input=_scaler("bad", 5, 2), check=False
        )
        assert rejected.returncode != 0
        assert CEL_MESSAGE in rejected.stderr

        # The status subresource: status is written through /status and only there.
        kube.kubectl(
            "patch", "-n", namespace, f"scalers.{CRD_GROUP}/good", "--subresource=status",
            "--type=merge", "-p", '{"status": {"observedGeneration": 1}}',
        )
        custom = client.CustomObjectsApi(kube.api_client)
        obj = custom.get_namespaced_custom_object(CRD_GROUP, "v1", namespace, "scalers", "good")
        assert obj["status"] == {"observedGeneration": 1}
        obj["status"] = {"observedGeneration": 99}
        custom.replace_namespaced_custom_object(
            CRD_GROUP, "v1", namespace, "scalers", "good", obj
        )
        obj = custom.get_namespaced_custom_object(CRD_GROUP, "v1", namespace, "scalers", "good")
        assert obj["status"] == {"observedGeneration": 1}
    finally:
        kube.kubectl("delete", "crd", f"scalers.{CRD_GROUP}", "--wait=true", check=False)


def _write_chart(root: Path) -> Path:
    chart = root / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "v2", "name": "tiny", "version": "0.1.0", "appVersion": "1.0"}
        )
    )
    (chart / "values.yaml").write_text(yaml.safe_dump({"replicas": 2, "greeting": "hello"}))
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: {{ .Release.Name }}-config\n"
        "data:\n"
        "  greeting: {{ .Values.greeting | quote }}\n"
    )
    (chart / "templates" / "deployment.yaml").write_text(
        "apiVersion: apps/v1\n"
        "kind: Deployment\n"
        "metadata:\n"
        "  name: {{ .Release.Name }}-web\n"
        "spec:\n"
        "  replicas: {{ .Values.replicas }}\n"
        "  selector:\n"
        "    matchLabels: {app: {{ .Release.Name }}-web}\n"
        "  template:\n"
        "    metadata:\n"
        "      labels: {app: {{ .Release.Name }}-web}\n"
        "    spec:\n"
        "      containers:\n"
        "        - name: main\n"
        "          image: registry.k8s.io/pause:3.10\n"
    )
    return chart


def test_helm_install_and_uninstall(
    kube: KubeControlPlane, namespace: str, tmp_path: Path
) -> None:
    chart = _write_chart(tmp_path)
    kube.helm("lint", str(chart))
    # --wait: helm itself watches the Deployment become available on the kwok nodes.
    kube.helm("install", "demo", str(chart), "-n", namespace, "--wait", "--timeout", "90s")

    releases = json.loads(kube.helm("list", "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]
    core = client.CoreV1Api(kube.api_client)
    assert core.read_namespaced_config_map("demo-config", namespace).data == {"greeting": "hello"}
    apps = client.AppsV1Api(kube.api_client)
    assert apps.read_namespaced_deployment("demo-web", namespace).status.ready_replicas == 2

    kube.helm("uninstall", "demo", "-n", namespace, "--wait", "--timeout", "90s")
    assert json.loads(kube.helm("list", "-n", namespace, "-o", "json").stdout) == []
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("demo-config", namespace)
    assert missing.value.status == 404
    wait_for(
        lambda: not core.list_namespaced_pod(namespace).items,
        timeout=60,
        what="the release's pods to be gone",
        interval=0.5,
    )
