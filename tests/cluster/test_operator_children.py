"""The reconciler's child bookkeeping against the real API server: what it creates, restores
and deletes (the read API's children when spec.api.enabled turns false), and what it leaves
alone; and the Secrets only the children mount (spec.mqtt.tls.caSecret), which it checks.
`apply_children` is called directly, with a ConfigMap standing in as the owner so the
garbage collector keeps the children while no operator runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.testing import wait_for
from energy_operator import crd
from energy_operator.kube import Kube
from energy_operator.reconcile import Outcome, apply_children, check_mqtt_ca
from kubernetes import config

pytestmark = pytest.mark.cluster

SPEC: dict[str, Any] = {
    "mqtt": {"host": "m"},
    "kafka": {"bootstrapServers": "k:9092"},
    "database": {"urlSecret": {"name": "pg"}},
}
API_CHILDREN = {
    ("Deployment", "demo-api"),
    ("Service", "demo-api"),
    ("PodDisruptionBudget", "demo-api"),
}
RBAC = "rbac.authorization.k8s.io"
KINDS = {"Deployment": "apps/v1", "Service": "v1", "PodDisruptionBudget": "policy/v1"}


def spec(api: bool) -> dict[str, Any]:
    return {**SPEC, "api": {"enabled": api}}


def adopt(children: list[dict[str, Any]], owner: Mapping[str, Any]) -> None:
    for child in children:
        child["metadata"]["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


@pytest.fixture
def namespace(kube: KubeControlPlane) -> Iterator[str]:
    name = f"children-{uuid.uuid4().hex[:8]}"
    client = Kube(kube.api_client)
    client.request(
        "POST",
        "/api/v1/namespaces",
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    yield name
    client.request("DELETE", f"/api/v1/namespaces/{name}")


def owner(client: Kube, namespace: str, name: str) -> dict[str, Any]:
    return client.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
        }
    )


def present(client: Kube, namespace: str, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(k, n) for k, n in wanted if client.get(KINDS[k], k, namespace, n) is not None}


def apply(client: Kube, body: dict[str, Any], wanted: dict[str, Any], restoring: bool,
          fresh: frozenset[str] = frozenset()) -> Outcome:
    """One `apply_children` step, with what it reported."""
    outcome = Outcome()
    apply_children(client, body, wanted, adopt, outcome, restoring=restoring, fresh=fresh)
    return outcome


def test_enabling_creates_and_disabling_deletes_the_api_children(
    kube: KubeControlPlane, namespace: str
) -> None:
    client = Kube(kube.api_client)
    body = owner(client, namespace, "demo")
    out = apply(client, body, spec(False), False)
    assert not out.problems and not present(client, namespace, API_CHILDREN)
    assert [e.reason for e in out.events] == ["Created"]

    # Enabled on a running pipeline: created (not "restored", which means someone deleted it).
    out = apply(client, body, spec(True), True, frozenset({"api"}))
    assert not out.problems and present(client, namespace, API_CHILDREN) == API_CHILDREN
    assert [e.reason for e in out.events] == ["Created"]
    assert "Deployment demo-api" in out.events[0].message

    # Nothing changed: nothing to report, nothing deleted.
    out = apply(client, body, spec(True), True)
    assert (out.events, out.problems, out.changes) == ([], [], [])
    assert present(client, namespace, API_CHILDREN) == API_CHILDREN

    out = apply(client, body, spec(False), True)
    assert not out.problems
    assert not present(client, namespace, API_CHILDREN)
    assert [e.reason for e in out.events] == ["Deleted"]
    assert "Deployment demo-api" in out.events[0].message and "spec" in out.events[0].message
    assert any(c.startswith("deleted ") for c in out.changes)
    assert present(client, namespace, {("Service", "demo-inference")})


def test_a_missing_api_child_of_an_enabled_api_is_restored(
    kube: KubeControlPlane, namespace: str
) -> None:
    client = Kube(kube.api_client)
    body = owner(client, namespace, "demo")
    apply(client, body, spec(True), False)
    client.request("DELETE", f"/api/v1/namespaces/{namespace}/services/demo-api")
    out = apply(client, body, spec(True), True)
    assert not out.problems and [e.reason for e in out.events] == ["Restored"]
    assert out.events[0].message == "recreated missing Service demo-api"


def test_objects_it_does_not_control_are_never_deleted(
    kube: KubeControlPlane, namespace: str
) -> None:
    client = Kube(kube.api_client)
    body = owner(client, namespace, "demo")
    apply(client, body, spec(False), False)
    labels = client.get("apps/v1", "Deployment", namespace, "demo-bridge")["metadata"]["labels"]
    # Someone else's Service with the same labels and the name the API would have.
    client.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "demo-api", "namespace": namespace, "labels": labels},
            "spec": {"ports": [{"port": 80}]},
        }
    )
    # A Deployment with our labels, controlled by another owner.
    other = owner(client, namespace, "another-pipeline")
    foreign = client.get("apps/v1", "Deployment", namespace, "demo-bridge")
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        foreign["metadata"].pop(key, None)
    foreign.pop("status", None)
    foreign["metadata"]["name"] = "demo-old"
    adopt([foreign], other)
    client.create(foreign)
    out = apply(client, body, spec(False), True)
    assert not out.problems and not out.events
    assert present(client, namespace, {("Service", "demo-api"), ("Deployment", "demo-old")}) == {
        ("Service", "demo-api"),
        ("Deployment", "demo-old"),
    }


def test_a_refused_delete_is_reported_naming_the_object(
    kube: KubeControlPlane, namespace: str
) -> None:
    admin = Kube(kube.api_client)
    body = owner(admin, namespace, "demo")
    apply(admin, body, spec(True), False)
    # A user who may do everything in the namespace except delete.
    rbac = f"/apis/{RBAC}/v1/namespaces/{namespace}"
    admin.request(
        "POST",
        f"{rbac}/roles",
        body={
            "apiVersion": f"{RBAC}/v1",
            "kind": "Role",
            "metadata": {"name": "no-delete", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": ["*"],
                    "resources": ["*"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch"],
                }
            ],
        },
    )
    admin.request(
        "POST",
        f"{rbac}/rolebindings",
        body={
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "no-delete", "namespace": namespace},
            "roleRef": {
                "apiGroup": RBAC,
                "kind": "Role",
                "name": "no-delete",
            },
            "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "no-delete"}],
        },
    )
    api = config.new_client_from_config(config_file=str(kube.kubeconfig))
    api.set_default_header("Impersonate-User", "no-delete")
    problems = apply(Kube(api), body, spec(False), True).problems
    assert {p.reason for p in problems} == {"DeleteFailed"}
    assert not any(p.blocking for p in problems)  # the data still flows
    assert any("Deployment demo-api" in p.message and "forbidden" in p.message for p in problems)
    assert present(admin, namespace, API_CHILDREN) == API_CHILDREN


def test_a_missing_mqtt_ca_secret_is_a_problem_naming_its_fix(
    kube: KubeControlPlane, namespace: str
) -> None:
    client = Kube(kube.api_client)
    with_ca = crd.with_defaults(
        {**SPEC, "mqtt": {"host": "m", "port": 8883, "tls": {"caSecret": {"name": "mqtt-ca"}}}})
    missing = Outcome()
    check_mqtt_ca(client, namespace, with_ca, missing)
    (problem,) = missing.problems
    assert problem.reason == "SecretMissing" and problem.blocking
    assert problem.message == (
        f"Secret {namespace}/mqtt-ca with key 'ca.crt' (spec.mqtt.tls.caSecret) not found; "
        "create it, e.g. kubectl create secret generic mqtt-ca --from-literal=ca.crt=...")
    # The children are applied all the same: the bridge pods start once the Secret exists.
    out = apply(client, owner(client, namespace, "demo"), with_ca, False)
    assert not out.problems
    pod = client.get("apps/v1", "Deployment", namespace, "demo-bridge")["spec"]["template"]["spec"]
    assert {"name": "mqtt-ca", "secret": {
        "secretName": "mqtt-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}],
        "defaultMode": 420}} in pod["volumes"]

    # A Secret without the key is no better: the kubelet would not mount the item.
    client.create({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "mqtt-ca", "namespace": namespace},
                   "stringData": {"tls.crt": "x"}})
    no_key = Outcome()
    check_mqtt_ca(client, namespace, with_ca, no_key)
    assert [p.reason for p in no_key.problems] == ["SecretMissing"]

    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    client.merge_patch("v1", "Secret", namespace, "mqtt-ca", {"stringData": {"ca.crt": pem}})
    found = Outcome()
    check_mqtt_ca(client, namespace, with_ca, found)
    assert not found.problems
    # Without spec.mqtt.tls there is nothing to check.
    plain = Outcome()
    check_mqtt_ca(client, namespace, crd.with_defaults(SPEC), plain)
    assert not plain.problems


@pytest.fixture
def pod_monitor_kind(kube: KubeControlPlane) -> Iterator[None]:
    """The Prometheus Operator's real PodMonitor CRD (from the Go module proxy), removed after
    the test so that other tests see a cluster without it."""
    from energy_harness.localstack.kube_install import pod_monitor_crd

    kube.kubectl("apply", "--server-side", "-f", str(pod_monitor_crd()))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/podmonitors.monitoring.coreos.com")
    # Established comes before discovery lists the kind (the API server updates discovery on
    # its own; seen once in CI: the operator's first question answered "not served").
    served = Kube(kube.api_client)
    wait_for(lambda: served.serves("monitoring.coreos.com/v1", "PodMonitor"), 60,
             "discovery serving PodMonitor", interval=0.5)
    yield
    kube.kubectl("delete", "crd", "podmonitors.monitoring.coreos.com", "--wait=true")


def test_a_pod_monitor_follows_its_crd_and_the_spec_under_the_operators_own_rbac(
    kube: KubeControlPlane, namespace: str, operator_kubeconfig: Any,
    pod_monitor_kind: None,
) -> None:
    from energy_operator.kube import new_api_client

    admin = Kube(kube.api_client)
    # The operator's ServiceAccount with the RBAC the chart ships: discovery and the
    # PodMonitor rule are enough.
    operator = Kube(new_api_client(str(operator_kubeconfig)))
    body = owner(admin, namespace, "demo")
    wanted = {**SPEC, "monitoring": {"podMonitor": {"labels": {"release": "prom"}}}}
    assert operator.serves("monitoring.coreos.com/v1", "PodMonitor")
    out = apply(operator, body, wanted, False)
    assert not out.problems
    monitor = admin.get("monitoring.coreos.com/v1", "PodMonitor", namespace, "demo")
    # The API server validated it against the Prometheus Operator's own schema.
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "http", "path": "/metrics", "scheme": "http", "interval": "30s"}]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    # The workers it selects are this pipeline's Deployments' pods, found by the API server.
    selector = monitor["spec"]["selector"]
    terms = [f"{k}={v}" for k, v in selector["matchLabels"].items()]
    terms += [f"{e['key']} in ({','.join(e['values'])})" for e in selector["matchExpressions"]]
    expression = ",".join(terms)
    selected = admin.list("apps/v1", "Deployment", namespace, expression)
    assert sorted(d["metadata"]["name"] for d in selected) == [
        "demo-bridge", "demo-inference", "demo-ingest"]

    out = apply(operator, body, {**SPEC, "monitoring": {"podMonitor": {"enabled": False}}}, True)
    assert not out.problems
    assert [e.reason for e in out.events] == ["Deleted"]
    assert "PodMonitor demo" in out.events[0].message
    assert admin.get("monitoring.coreos.com/v1", "PodMonitor", namespace, "demo") is None


def test_without_the_pod_monitor_crd_nothing_is_asked_of_it(
    kube: KubeControlPlane, namespace: str
) -> None:
    client = Kube(kube.api_client)
    assert not client.serves("monitoring.coreos.com/v1", "PodMonitor")
    assert client.serves("apps/v1", "Deployment")
    body = owner(client, namespace, "demo")
    out = apply(client, body, SPEC, False)
    assert not out.problems and [e.reason for e in out.events] == ["Created"]
    assert "PodMonitor" not in out.events[0].message
