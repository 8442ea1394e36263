"""The charts' NetworkPolicies and the operator chart's RBAC modes, as `helm template` renders
them: exact selectors and ports, and that each peer selects the pods it is meant for (read
from the same render, and from the operator's render of the example pipeline) and no other.

Marked `cluster` like test_charts_render.py: helm comes from the cached Kubernetes tools build
(no API server is started here).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from energy_harness.localstack.kube_install import ensure_kube_tools
from energy_operator import crd, rbac, render

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
TCP = "TCP"
WORKERS = {"app.kubernetes.io/name": "energy-pipeline"}
PART_OF = {"app.kubernetes.io/part-of": "energy-pipeline"}
OPERATOR = {"app.kubernetes.io/component": "operator", **PART_OF}
GRAFANA = {"app.kubernetes.io/component": "dashboards", **PART_OF}
INGRESS_NGINX = {"namespaceSelector": {"matchLabels": {
    "kubernetes.io/metadata.name": "ingress-nginx"}}}


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_kube_tools().helm


@pytest.fixture(scope="module")
def platform_chart(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the charts with the umbrella's dependencies built (nothing written in-tree)."""
    import shutil

    copy = tmp_path_factory.mktemp("charts") / "charts"
    shutil.copytree(CHARTS, copy, ignore=shutil.ignore_patterns("charts", "__pycache__"))
    helm_ok(helm, "dependency", "build", str(copy / "energy-platform"))
    return copy / "energy-platform"


def helm_ok(helm: Path, *args: str) -> str:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
    return result.stdout


def template(helm: Path, chart: Path, tmp: Path, values: dict[str, Any] | None = None,
             release: str = "energy", namespace: str = "energy") -> list[dict[str, Any]]:
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values or {}))
    out = helm_ok(helm, "template", release, str(chart), "--namespace", namespace,
                  "--values", str(path))
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions In/NotIn/Exists)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        value = labels.get(e["key"])
        ok = {"In": value in e.get("values", ()), "NotIn": value not in e.get("values", ()),
              "Exists": e["key"] in labels, "DoesNotExist": e["key"] not in labels}[e["operator"]]
        if not ok:
            return False
    return True


def admitted(policy: dict[str, Any], labels: dict[str, str], port: int) -> bool:
    """Whether a pod with `labels` in the policy's own namespace may connect on `port`."""
    for rule in policy["spec"].get("ingress") or []:
        if port not in {p["port"] for p in rule["ports"]}:
            continue
        for peer in rule["from"]:
            if "podSelector" in peer and "namespaceSelector" not in peer \
                    and matches(peer["podSelector"], labels):
                return True
    return False


@pytest.fixture(scope="module")
def platform(helm: Path, platform_chart: Path,
             tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    values = {"example": {"api": {"enabled": True}}}
    return template(helm, platform_chart, tmp_path_factory.mktemp("platform"), values)


@pytest.fixture(scope="module")
def pods(platform: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Pod labels of every workload: the charts' and the operator's children of the example."""
    out = {}
    for doc in platform:
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            out[doc["metadata"]["name"]] = doc["spec"]["template"]["metadata"]["labels"]
        if doc["kind"] == "CronJob":
            out[doc["metadata"]["name"]] = doc["spec"]["jobTemplate"]["spec"]["template"][
                "metadata"]["labels"]
    example = of_kind(platform, "EnergyPipeline")["energy"]
    for child in render.render_children("energy", "energy", example["spec"]):
        if child["kind"] == "Deployment":
            out[child["metadata"]["name"]] = child["spec"]["template"]["metadata"]["labels"]
        if child["kind"] == "CronJob":
            out[child["metadata"]["name"]] = child["spec"]["jobTemplate"]["spec"]["template"][
                "metadata"]["labels"]
    out["energy-train-first"] = render.first_training_job("energy", "energy", example["spec"])[
        "spec"]["template"]["metadata"]["labels"]
    return out


# Who may reach which port: every pair not listed is refused.
CLIENTS = {
    ("energy-kafka", 9092): {"energy-kafka", "energy-bridge", "energy-ingest",
                             "energy-operator"},
    ("energy-kafka", 9093): {"energy-kafka"},
    ("energy-kafka", 9094): {"energy-kafka"},  # the brokers' mutual-TLS listener (auth.tls)
    ("energy-postgres", 5432): {"energy-ingest", "energy-inference", "energy-train",
                                "energy-train-first", "energy-api", "energy-grafana",
                                "energy-operator", "energy-postgres-backup"},
    ("energy-hivemq", 1883): {"energy-bridge", "energy-simulator"},
    ("energy-hivemq", 8883): {"energy-bridge", "energy-simulator"},
    ("energy-grafana", 3000): set(),  # the ingress controller only (another namespace)
    ("energy-operator", 8080): set(),  # the kubelet only
}


def test_each_port_admits_exactly_its_clients(platform: list[dict[str, Any]],
                                              pods: dict[str, dict[str, str]]) -> None:
    assert {"energy-kafka", "energy-bridge", "energy-ingest", "energy-inference", "energy-api",
            "energy-train", "energy-grafana", "energy-operator", "energy-simulator",
            "energy-postgres", "energy-hivemq", "energy-postgres-backup"} <= set(pods)
    policies = of_kind(platform, "NetworkPolicy")
    for (server, port), clients in CLIENTS.items():
        (policy,) = [p for p in policies.values()
                     if matches(p["spec"]["podSelector"], pods[server])]
        allowed = {name for name, labels in pods.items() if admitted(policy, labels, port)}
        assert allowed == clients, (server, port)


def test_kafka_policy(platform: list[dict[str, Any]]) -> None:
    spec = of_kind(platform, "NetworkPolicy")["energy-kafka"]["spec"]
    brokers = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "kafka",
                                               "app.kubernetes.io/instance": "energy"}}}
    assert spec == {
        "podSelector": brokers["podSelector"],
        "policyTypes": ["Ingress"],
        "ingress": [
            {"ports": [{"port": 9092, "protocol": TCP}], "from": [
                brokers,
                {"podSelector": {"matchLabels": WORKERS, "matchExpressions": [
                    {"key": "app.kubernetes.io/component", "operator": "In",
                     "values": ["bridge", "ingest"]}]}},
                {"podSelector": {"matchLabels": OPERATOR}},
            ]},
            {"ports": [{"port": 9093, "protocol": TCP}, {"port": 9094, "protocol": TCP}],
             "from": [brokers]},
        ],
    }


def test_postgres_policy(platform: list[dict[str, Any]]) -> None:
    spec = of_kind(platform, "NetworkPolicy")["energy-postgres"]["spec"]
    assert spec == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgres",
                                        "app.kubernetes.io/instance": "energy"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"port": 5432, "protocol": TCP}], "from": [
            {"podSelector": {"matchLabels": WORKERS, "matchExpressions": [
                {"key": "app.kubernetes.io/component", "operator": "In",
                 "values": ["ingest", "inference", "train", "api"]}]}},
            {"podSelector": {"matchLabels": OPERATOR}},
            {"podSelector": {"matchLabels": GRAFANA}},
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgres-backup",
                                             "app.kubernetes.io/instance": "energy"}}},
        ]}],
    }


def test_hivemq_policy_admits_the_bridge_and_the_devices(platform: list[dict[str, Any]]) -> None:
    spec = of_kind(platform, "NetworkPolicy")["energy-hivemq"]["spec"]
    assert spec == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "hivemq",
                                        "app.kubernetes.io/instance": "energy"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"port": 1883, "protocol": TCP}, {"port": 8883, "protocol": TCP}],
                     "from": [
                         {"podSelector": {"matchLabels": {
                             **WORKERS, "app.kubernetes.io/component": "bridge"}}},
                         # energy-platform's values: its simulator is a device.
                         {"podSelector": {"matchLabels": {
                             "app.kubernetes.io/name": "simulator",
                             "app.kubernetes.io/component": "simulator"}}},
                     ]}],
    }


def test_grafana_operator_and_simulator_policies(platform: list[dict[str, Any]]) -> None:
    policies = of_kind(platform, "NetworkPolicy")
    assert set(policies) == {"energy-kafka", "energy-postgres", "energy-hivemq",
                             "energy-grafana", "energy-operator", "energy-simulator"}
    assert policies["energy-grafana"]["spec"]["ingress"] == [
        {"ports": [{"port": 3000, "protocol": TCP}], "from": [INGRESS_NGINX]}]
    operator = policies["energy-operator"]["spec"]
    assert operator["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "operator",
                                                       "app.kubernetes.io/instance": "energy"}}
    assert operator["ingress"] == []
    assert policies["energy-simulator"]["spec"]["ingress"] == []
    # The example pipeline's own policies come from the operator, with the CRD's defaults.
    example = of_kind(platform, "EnergyPipeline")["energy"]["spec"]
    assert "networkPolicy" not in example
    assert crd.with_defaults(example)["networkPolicy"]["apiFrom"] == [INGRESS_NGINX]


def test_options_namespaces_devices_extra_clients_and_tls_port(
    helm: Path, platform_chart: Path, tmp_path: Path
) -> None:
    device = {"ipBlock": {"cidr": "10.20.0.0/16"}}
    backup = {"podSelector": {"matchLabels": {"app": "backup"}}}
    metrics = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}]
    namespaces = ["energy", "energy-system"]
    values = {
        "kafka": {"networkPolicy": {"clientNamespaces": namespaces, "extraClients": [backup]}},
        "postgres": {"networkPolicy": {"clientNamespaces": namespaces}},
        "hivemq": {"tls": {"port": 8884},
                   "networkPolicy": {"devices": [device], "clientNamespaces": namespaces}},
        "grafana": {"networkPolicy": {"ingressFrom": []}},
        "operator": {"networkPolicy": {"metricsFrom": metrics}},
    }
    policies = of_kind(template(helm, platform_chart, tmp_path, values), "NetworkPolicy")
    in_namespaces = {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                           "operator": "In", "values": namespaces}]}
    kafka = policies["energy-kafka"]["spec"]["ingress"][0]["from"]
    assert [p.get("namespaceSelector") for p in kafka] == [
        None, in_namespaces, in_namespaces, None]  # the brokers: always this namespace
    assert kafka[-1] == backup
    postgres = policies["energy-postgres"]["spec"]["ingress"][0]["from"]
    # The backup CronJob runs in the release's namespace, like the server.
    assert [p.get("namespaceSelector") for p in postgres] == [in_namespaces] * 3 + [None]
    (rule,) = policies["energy-hivemq"]["spec"]["ingress"]
    assert rule["ports"] == [{"port": 1883, "protocol": TCP}, {"port": 8884, "protocol": TCP}]
    assert rule["from"][0]["namespaceSelector"] == in_namespaces
    assert rule["from"][1:] == [device]  # replaces the platform's simulator entry
    assert policies["energy-grafana"]["spec"]["ingress"] == []  # no one, never an empty from
    assert policies["energy-operator"]["spec"]["ingress"] == [
        {"from": metrics, "ports": [{"port": 8080, "protocol": TCP}]}]
    helm_ok(helm, "lint", "--strict", str(platform_chart), "--values",
            str(tmp_path / "values.yaml"))


def test_network_policies_can_be_turned_off(
    helm: Path, platform_chart: Path, tmp_path: Path
) -> None:
    off = {"networkPolicy": {"enabled": False}}
    values = {"kafka": off, "postgres": off, "hivemq": off, "grafana": off, "operator": off,
              **off}
    assert of_kind(template(helm, platform_chart, tmp_path, values), "NetworkPolicy") == {}
    for chart in ("kafka", "postgres", "hivemq", "grafana", "energy-operator"):
        docs = template(helm, platform_chart.parent / chart, tmp_path, off)
        assert not of_kind(docs, "NetworkPolicy"), chart
        assert len(of_kind(template(helm, platform_chart.parent / chart, tmp_path),
                           "NetworkPolicy")) == 1, chart


# ---- the operator chart's RBAC: cluster-wide by default, namespaced with watchNamespaces ----


def _rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["rules"]


def test_operator_rbac_cluster_wide_by_default(helm: Path, tmp_path: Path) -> None:
    docs = template(helm, CHARTS / "energy-operator", tmp_path, release="ops",
                    namespace="energy-system")
    (cluster_role,) = of_kind(docs, "ClusterRole").values()
    assert _rules(cluster_role) == [r.manifest() for r in rbac.CLUSTER_RULES]
    (binding,) = of_kind(docs, "ClusterRoleBinding").values()
    account = {"kind": "ServiceAccount", "name": "ops-energy-operator",
               "namespace": "energy-system"}
    assert binding["subjects"] == [account]
    (leader,) = of_kind(docs, "Role").values()
    assert (leader["metadata"]["name"], leader["metadata"]["namespace"]) == (
        "ops-energy-operator-leader-election", "energy-system")
    # The Lease is the release's: the Role names it, the Deployment tells the operator.
    assert _rules(leader)[1]["resourceNames"] == ["ops-energy-operator"]
    (container,) = of_kind(docs, "Deployment")["ops-energy-operator"]["spec"]["template"][
        "spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LEADER_ELECTION_LEASE_NAME"] == "ops-energy-operator"
    assert "WATCH_NAMESPACES" not in env
    # Secrets: get by name, create (the API's tokens, the gRPC certificates) and update (the
    # certificates' renewal); never list or watch, anywhere.
    secrets = [r for r in _rules(cluster_role) if "secrets" in r["resources"]]
    assert {verb for r in secrets for verb in r["verbs"]} == {"get", "create", "update"}


def test_operator_rbac_namespaced_mode(helm: Path, tmp_path: Path) -> None:
    docs = template(helm, CHARTS / "energy-operator", tmp_path,
                    {"watchNamespaces": ["energy", "campus"]}, release="ops",
                    namespace="energy-system")
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    roles = [d for d in docs if d["kind"] == "Role"]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert [(r["metadata"]["name"], r["metadata"]["namespace"]) for r in roles] == [
        ("ops-energy-operator", "energy"), ("ops-energy-operator", "campus"),
        ("ops-energy-operator-leader-election", "energy-system")]
    for role in roles[:2]:
        assert _rules(role) == [r.manifest() for r in rbac.CLUSTER_RULES]
    account = {"kind": "ServiceAccount", "name": "ops-energy-operator",
               "namespace": "energy-system"}
    assert [(b["metadata"]["namespace"], b["roleRef"]["kind"], b["roleRef"]["name"],
             b["subjects"]) for b in bindings] == [
        ("energy", "Role", "ops-energy-operator", [account]),
        ("campus", "Role", "ops-energy-operator", [account]),
        ("energy-system", "Role", "ops-energy-operator-leader-election", [account])]
    (container,) = of_kind(docs, "Deployment")["ops-energy-operator"]["spec"]["template"][
        "spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WATCH_NAMESPACES"] == "energy,campus"
    helm_ok(helm, "lint", "--strict", str(CHARTS / "energy-operator"),
            "--values", str(tmp_path / "values.yaml"))
