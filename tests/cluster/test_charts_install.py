"""`helm install` of the energy-platform chart into a real Kubernetes API server.

kwok plays the kubelets: pods are scheduled, get IPs and turn Running/Ready, but no
container runs, so what a container would do at start is checked by running the chart's
own script here: each Kafka pod's environment, resolved from the real pod and the real
ConfigMaps, goes into charts/kafka/files/start.sh, which formats a data directory with the
real Kafka StorageTool (the node id it writes is the node id the broker would have).

Persistence is off: kwok has no storage provisioner, so a PVC would stay Pending. The
templates with persistence on are checked by tests/unit/test_charts_render.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from energy_harness.localstack.install import ensure_kafka, require
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.testing import wait_for
from energy_operator import certificates
from kubernetes import client

from cluster.test_platform_secrets import hook_docs, install_hook_rbac, run_hook

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
RELEASE = "energy"
CRD = "energypipelines.energy.pipeline.dev"
TEST_VALUES = {
    "kafka": {"persistence": {"enabled": False}},
    "hivemq": {"persistence": {"enabled": False}},
    # No storage here (kwok): the backup's claim would never bind, and `helm install --wait`
    # waits for claims. The CronJob is rendered by tests/unit and runs on the real node.
    "postgres": {"persistence": {"enabled": False}, "backup": {"enabled": False}},
    # Grafana's claim (on by default) would stay Pending too; its templates are checked by
    # tests/unit/test_charts_grafana_alerting.py.
    "grafana": {"persistence": {"enabled": False}},
    # The optional Kafka UI, on: its Secrets come from the hook like the others'.
    "kafkaUi": {"enabled": True},
}


@pytest.fixture(scope="module")
def chart(kube: KubeControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("charts") / "charts"
    shutil.copytree(CHARTS, copy, ignore=shutil.ignore_patterns("charts", "__pycache__"))
    kube.helm("dependency", "build", str(copy / "energy-platform"))
    return copy / "energy-platform"


@pytest.fixture(scope="module")
def values_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("values") / "test-values.yaml"
    path.write_text(yaml.safe_dump(TEST_VALUES))
    return path


class Release:
    """One install of the umbrella chart in a namespace of its own; uninstalled at the end."""

    def __init__(self, kube: KubeControlPlane, chart: Path, values: Path) -> None:
        self.kube, self.chart, self.values = kube, chart, values
        self.namespace = f"ep-{uuid.uuid4().hex[:8]}"
        self.core = client.CoreV1Api(kube.api_client)
        self.apps = client.AppsV1Api(kube.api_client)

    def helm(self, *args: str, timeout: float = 400) -> str:
        return self.kube.helm(*args, "--namespace", self.namespace, timeout=timeout).stdout

    def platform_secrets(self, tmp: Path) -> None:
        """What the pre-install/pre-upgrade hook Job's container does, done here (kwok runs no
        container: its Job would "succeed" without making anything): the Job's own command
        line, as its ServiceAccount (tests/cluster/test_platform_secrets.py)."""
        docs = hook_docs(self.kube, self.chart, self.namespace, "--values", str(self.values))
        install_hook_rbac(self.kube, docs)
        done = run_hook(self.kube, docs, self.namespace, tmp)
        assert done.returncode == 0, done.stderr

    def install(self, tmp: Path) -> str:
        self.kube.kubectl("create", "namespace", self.namespace)
        self.platform_secrets(tmp)
        return self.helm("install", RELEASE, str(self.chart),
                         "--values", str(self.values), "--wait", "--timeout", "300s")

    def upgrade(self, tmp: Path) -> str:
        self.platform_secrets(tmp)
        return self.helm("upgrade", RELEASE, str(self.chart), "--values", str(self.values),
                         "--wait", "--timeout", "300s")

    def secret(self, name: str) -> dict[str, str]:
        data = self.core.read_namespaced_secret(name, self.namespace).data
        return {k: base64.b64decode(v).decode() for k, v in data.items()}


@pytest.fixture(scope="module")
def release(kube: KubeControlPlane, chart: Path, values_file: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    rel = Release(kube, chart, values_file)
    started = time.monotonic()
    rel.notes = rel.install(tmp_path_factory.mktemp("hook"))  # type: ignore[attr-defined]
    print(f"helm install --wait: {time.monotonic() - started:.1f}s")
    yield rel
    # Whatever the tests did, leave nothing behind (test_uninstall normally did it already).
    kube.helm("uninstall", RELEASE, "--namespace", rel.namespace, "--wait", check=False)
    kube.kubectl("delete", "namespace", rel.namespace, "--wait=false", check=False)


# ---------------------------------------------------------------------------------------------
# The tests run in file order against one release: install, inspect, upgrade, uninstall.
# ---------------------------------------------------------------------------------------------

def test_install_brings_every_workload_to_its_ready_replicas(
    release: Release, kube: KubeControlPlane
) -> None:
    ns = release.namespace
    statefulsets = release.apps.list_namespaced_stateful_set(ns).items
    deployments = release.apps.list_namespaced_deployment(ns).items
    assert {s.metadata.name for s in statefulsets} == {
        "energy-kafka", "energy-hivemq", "energy-postgres",
    }
    assert {d.metadata.name for d in deployments} == {
        "energy-grafana", "energy-operator", "energy-simulator", "energy-kafka-ui",
    }
    for workload in statefulsets + deployments:
        assert workload.status.ready_replicas == workload.spec.replicas, workload.metadata.name
    pods = release.core.list_namespaced_pod(ns).items
    assert len(pods) == 3 + 1 + 1 + 1 + 1 + 1 + 1
    for pod in pods:
        assert pod.status.phase == "Running", pod.metadata.name
        assert pod.spec.node_name in kube.node_names
        ready = [c for c in pod.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", pod.metadata.name
    # The soft anti-affinity spreads the three brokers over the three nodes.
    kafka_nodes = {p.spec.node_name for p in pods if p.metadata.name.startswith("energy-kafka-")}
    assert len(kafka_nodes) == 3


def test_notes_print_the_grafana_url_and_next_commands(release: Release) -> None:
    notes = release.notes.split("NOTES:", 1)[1]  # type: ignore[attr-defined]
    assert "http://localhost:8080/" in notes
    assert f"kubectl -n {release.namespace} get secret energy-grafana-admin" in notes
    assert f"kubectl -n {release.namespace} wait energypipeline/energy" in notes
    assert "Kafka UI (read-only)" in notes
    assert "https://localhost:8443/kafka-ui/" in notes
    assert f"kubectl -n {release.namespace} get secret energy-kafka-ui-login" in notes


def test_operator_crd_is_installed_and_the_example_pipeline_admitted(
    release: Release, kube: KubeControlPlane
) -> None:
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD}")
    crd = json.loads(kube.kubectl("get", "crd", CRD, "-o", "json").stdout)
    assert crd["spec"]["names"]["kind"] == "EnergyPipeline"
    # Admitted through the CRD's OpenAPI schema and CEL rules by the real API server.
    pipeline = json.loads(kube.kubectl(
        "get", "energypipeline", "energy", "-n", release.namespace, "-o", "json"
    ).stdout)
    spec = pipeline["spec"]
    assert spec["kafka"]["bootstrapServers"] == f"energy-kafka.{release.namespace}.svc:9092"
    assert spec["mqtt"]["host"] == f"energy-hivemq.{release.namespace}.svc"
    assert spec["database"]["urlSecret"] == {"name": "energy-postgres-app",
                                             "key": "DATABASE_URL"}
    url = release.secret("energy-postgres-app")["DATABASE_URL"]
    assert url.startswith("postgresql://energy:") and url.endswith(
        f"@energy-postgres.{release.namespace}.svc:5432/energy"
    )


def _resolve_env(release: Release, pod: client.V1Pod) -> dict[str, str]:
    """The container environment kubelet would build, from the real pod and objects."""
    env: dict[str, str] = {}
    labels = pod.metadata.labels or {}
    for var in pod.spec.containers[0].env:
        if var.value is not None:
            env[var.name] = var.value
            continue
        source = var.value_from
        if source.field_ref is not None:
            path = source.field_ref.field_path
            if path == "metadata.name":
                env[var.name] = pod.metadata.name
            elif path == "metadata.namespace":
                env[var.name] = pod.metadata.namespace
            elif path.startswith("metadata.labels['"):
                env[var.name] = labels[path[len("metadata.labels['"):-2]]
            else:
                raise AssertionError(f"unexpected fieldRef {path}")
        elif source.config_map_key_ref is not None:
            ref = source.config_map_key_ref
            cm = release.core.read_namespaced_config_map(ref.name, release.namespace)
            env[var.name] = cm.data[ref.key]
        elif source.secret_key_ref is not None:
            ref = source.secret_key_ref
            env[var.name] = release.secret(ref.name)[ref.key]
    return env


def test_kafka_pods_get_node_ids_1_to_3(release: Release, tmp_path: Path) -> None:
    libs = ensure_kafka()
    java = require("java")
    config = release.core.read_namespaced_config_map("energy-kafka-config", release.namespace)
    home = tmp_path / "kafka"
    (home / "bin").mkdir(parents=True)
    # The image's scripts, reduced to what start.sh calls: the real StorageTool and
    # TopicCommand, and a broker start that only reports the config it was given.
    (home / "bin" / "kafka-storage.sh").write_text(
        f'#!/bin/sh\nexec "{java}" -cp "{libs}/*" kafka.tools.StorageTool "$@"\n'
    )
    (home / "bin" / "kafka-topics.sh").write_text(
        f'#!/bin/sh\nexec "{java}" -cp "{libs}/*" org.apache.kafka.tools.TopicCommand "$@"\n'
    )
    (home / "bin" / "kafka-server-start.sh").write_text('#!/bin/sh\necho "start $1"\n')
    for script in (home / "bin").iterdir():
        script.chmod(0o755)
    (tmp_path / "server.properties").write_text(config.data["server.properties"])
    for script in ("start.sh", "empty-volume.sh", "admin-client.sh"):
        (tmp_path / script).write_text(config.data[script])
    # TLS is the platform's default: the brokers' Secret as the chart's hook Job makes it
    # (on kwok no container runs, so nothing made it here).
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    now = datetime.now(UTC)
    ca = certificates.new_ca("test CA", now)
    broker = certificates.issue(ca, "kafka-broker", ["*.energy-kafka-headless"], "peer",
                                timedelta(days=1), now)
    for name, text in {"tls.crt": broker.cert, "tls.key": broker.key, "ca.crt": ca.cert}.items():
        (tls_dir / name).write_text(text)

    pods = release.core.list_namespaced_pod(
        release.namespace, label_selector="app.kubernetes.io/name=kafka"
    ).items
    found: dict[str, dict[str, str]] = {}
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        env = _resolve_env(release, pod)
        work = tmp_path / pod.metadata.name
        env.update({
            "PATH": os.environ["PATH"],
            "KAFKA_HOME": str(home),
            "KAFKA_BASE_CONFIG": str(tmp_path / "server.properties"),
            "KAFKA_RUNTIME_DIR": str(work / "run"),
            "KAFKA_DATA_DIR": str(work / "data"),
            "KAFKA_TLS_DIR": str(tls_dir),
            # The other pods' names resolve nowhere here: the empty-volume check finds no
            # cluster, as on a first install, after a second instead of the chart's 20.
            "KAFKA_EMPTY_VOLUME_CONTACT_S": "1",
            "TMPDIR": str(work),
        })
        # dash: POSIX sh, as strict as the image's busybox ash.
        result = subprocess.run(["dash", str(tmp_path / "start.sh")], env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr + result.stdout
        assert f"start {work / 'run' / 'server.properties'}" in result.stdout
        assert env["KAFKA_EMPTY_VOLUME_GUARD"] == "true"
        assert "empty-volume.sh: no other node answered in 1s" in result.stderr, result.stderr
        # Its admin client: the node certificate, as the users container's.
        assert (work / "kafka-empty-volume" / "keystore.pem").read_text() == (
            broker.key + broker.cert)
        meta = dict(
            line.split("=", 1)
            for line in (work / "data" / "meta.properties").read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        found[pod.metadata.name] = meta
        props = (work / "run" / "server.properties").read_text()
        domain = f"{pod.metadata.name}.energy-kafka-headless.{release.namespace}.svc.cluster.local"
        assert f"advertised.listeners=CLIENT://{domain}:9092,INTERNAL://{domain}:9094" in props
        assert f"ssl.truststore.location={tls_dir}/ca.crt" in props
        assert (work / "run" / "keystore.pem").read_text() == broker.key + broker.cert
    assert {name: meta["node.id"] for name, meta in found.items()} == {
        "energy-kafka-0": "1", "energy-kafka-1": "2", "energy-kafka-2": "3",
    }
    cluster_ids = {meta["cluster.id"] for meta in found.values()}
    stored = release.core.read_namespaced_config_map("energy-kafka-cluster-id", release.namespace)
    assert cluster_ids == {stored.data["cluster-id"]}


def test_kafka_ui_logs_in_with_what_the_hook_made(release: Release) -> None:
    """The UI pod's environment as the kubelet builds it: every Secret it names exists with
    its key, and the JAAS line expands ($(NAME), from the variables before it) to kafka-ui's
    password from the brokers' users Secret."""
    (pod,) = release.core.list_namespaced_pod(
        release.namespace, label_selector="app.kubernetes.io/name=kafka-ui").items
    env = _resolve_env(release, pod)
    expanded: dict[str, str] = {}
    for name, value in env.items():  # insertion order: the pod's order
        expanded[name] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                lambda m: expanded.get(m.group(1), m.group(0)), value)
    users = release.secret("energy-kafka-sasl")
    assert users["kafka-ui-username"] == "kafka-ui"
    password = users["kafka-ui-password"]
    assert expanded["KAFKA_CLUSTERS_0_PROPERTIES_SASL_JAAS_CONFIG"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="kafka-ui" password="{password}";')
    login = release.secret("energy-kafka-ui-login")
    assert expanded["SPRING_SECURITY_USER_NAME"] == login["username"] == "admin"
    assert expanded["SPRING_SECURITY_USER_PASSWORD"] == login["password"]
    (ca,) = [v for v in pod.spec.volumes if v.name == "kafka-ca"]
    assert "ca.crt" in release.secret(ca.secret.secret_name)


def test_upgrade_keeps_generated_passwords_and_cluster_id(release: Release,
                                                          tmp_path: Path) -> None:
    before = {
        **{role: release.secret(f"energy-postgres-{role}")
           for role in ("superuser", "app", "reader")},
        "grafana": release.secret("energy-grafana-admin"),
        "kafka": release.core.read_namespaced_config_map(
            "energy-kafka-cluster-id", release.namespace).data,
        "kafka-users": release.secret("energy-kafka-sasl"),
        "kafka-ui": release.secret("energy-kafka-ui-login"),
    }
    release.upgrade(tmp_path)
    after = {
        **{role: release.secret(f"energy-postgres-{role}")
           for role in ("superuser", "app", "reader")},
        "grafana": release.secret("energy-grafana-admin"),
        "kafka": release.core.read_namespaced_config_map(
            "energy-kafka-cluster-id", release.namespace).data,
        "kafka-users": release.secret("energy-kafka-sasl"),
        "kafka-ui": release.secret("energy-kafka-ui-login"),
    }
    assert after == before
    history = json.loads(release.helm("history", RELEASE, "-o", "json"))
    assert [h["revision"] for h in history] == [1, 2]
    assert history[-1]["status"] == "deployed"


def test_uninstall_cleans_up(release: Release, kube: KubeControlPlane) -> None:
    ns = release.namespace
    release.helm("uninstall", RELEASE, "--wait", "--timeout", "180s")
    assert json.loads(release.helm("list", "-o", "json")) == []
    selector = f"app.kubernetes.io/instance={RELEASE}"

    # The hook's Secrets are not the release's: they outlive it, as the data they protect does.
    kept = set(kube.kubectl("get", "secrets", "-n", ns, "-o", "name", "-l",
                            "app.kubernetes.io/managed-by=energy-pipeline").stdout.split())
    assert "secret/energy-postgres-app" in kept and "secret/energy-platform-ca" in kept

    def leftovers() -> list[str]:
        names = []
        for kind in ("statefulsets", "deployments", "services", "configmaps", "secrets",
                     "poddisruptionbudgets", "ingresses", "serviceaccounts",
                     "energypipelines", "pods"):
            out = kube.kubectl("get", kind, "-n", ns, "-o", "name", check=False).stdout.split()
            names += [n for n in out if "kube-root-ca.crt" not in n and "/default" not in n
                      and n not in kept]
        return names

    wait_for(
        lambda: not leftovers(), timeout=120, what="the release's objects to be gone", interval=1.0
    )
    cluster_scoped = kube.kubectl(
        "get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name"
    ).stdout.split()
    assert cluster_scoped == []
    # Helm never deletes CRDs (custom resources of other releases would go with them).
    kube.kubectl("get", "crd", CRD)
