"""The operator chart's RBAC, installed exactly as `helm template` renders it, asked with
`kubectl auth can-i --as system:serviceaccount:<ns>:<sa>` against the real API server: what
the operator needs is allowed, nothing else is (no Secret list or watch anywhere; in
namespaced mode nothing outside the watched namespaces). Then the operator itself runs in
namespaced mode under that RBAC and reconciles only its watched namespace, unrefused.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.operator_local import (
    OperatorProcess,
    install_chart_rbac,
    service_account_kubeconfig,
    service_account_token,
)
from energy_harness.testing import wait_for
from energy_operator import rbac
from energy_operator.kube import Kube

pytestmark = pytest.mark.cluster

API = "energy.pipeline.dev/v1alpha1"


class Subject:
    """What a ServiceAccount may do, asked as its token would be (its groups included):
    `kubectl auth can-i --as ...` for the statements the README makes, and the API server's
    SubjectAccessReview (the same authorizer, without a process per question) for sweeps."""

    def __init__(self, kube: KubeControlPlane, namespace: str, name: str) -> None:
        self.kube = kube
        self.client = Kube(kube.api_client)
        self.user = f"system:serviceaccount:{namespace}:{name}"
        self.groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                       "system:authenticated"]

    def can_i(self, verb: str, resource: str, namespace: str | None = None) -> bool:
        """`kubectl auth can-i VERB RESOURCE --as ...`; namespace None: --all-namespaces."""
        args = ["auth", "can-i", verb, resource, "--as", self.user]
        for group in self.groups:
            args += ["--as-group", group]
        args += ["--all-namespaces"] if namespace is None else ["--namespace", namespace]
        result = self.kube.kubectl(*args, check=False)
        answer = result.stdout.strip()
        # 0 "yes", 1 "no"; anything else is a failed question, not an answer.
        assert (result.returncode, answer) in {(0, "yes"), (1, "no")}, result.stderr
        assert "doesn't have a resource type" not in result.stderr, result.stderr
        return answer == "yes"

    def allowed(self, verb: str, group: str, resource: str, namespace: str | None,
                subresource: str = "", name: str = "") -> bool:
        attributes = {"verb": verb, "group": group, "resource": resource,
                      "subresource": subresource, "name": name}
        if namespace is not None:
            attributes["namespace"] = namespace
        review = self.client.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                     body={"apiVersion": "authorization.k8s.io/v1",
                                           "kind": "SubjectAccessReview",
                                           "spec": {"user": self.user, "groups": self.groups,
                                                    "resourceAttributes": attributes}})
        return bool(review["status"].get("allowed"))


@pytest.fixture
def namespaces(kube: KubeControlPlane) -> Iterator[Callable[[str], str]]:
    client = Kube(kube.api_client)
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        client.request("POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        made.append(name)
        return name

    yield make
    for name in made:
        client.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture
def installed(kube: KubeControlPlane) -> Iterator[Callable[..., list[dict[str, Any]]]]:
    """install_chart_rbac, and afterwards the removal of what it made (cluster-scoped too)."""
    docs: list[dict[str, Any]] = []

    def install(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        found = install_chart_rbac(kube, *args, **kwargs)
        docs.extend(found)
        return found

    yield install
    if docs:
        kube.kubectl("delete", "--ignore-not-found", "-f", "-",
                     input="\n---\n".join(yaml.safe_dump(d) for d in docs), check=False)


def grants(rules: tuple[rbac.Rule, ...]) -> list[tuple[str, str, str, str]]:
    """(verb, group, resource, subresource) for every verb of every rule without a name."""
    return [(verb, group, *resource.partition("/")[::2])
            for rule in rules if not rule.resource_names
            for group in rule.api_groups for resource in rule.resources for verb in rule.verbs]


RBAC = "rbac.authorization.k8s.io"
# Never granted, in any namespace: reading Secrets in bulk, patching or deleting them (create
# is granted for the read API's tokens and the gRPC certificates, update for the latter's
# renewal), running arbitrary pods or workloads it does not own, touching RBAC (which would
# let it grant itself anything).
NEVER = [
    ("list", "", "secrets"), ("watch", "", "secrets"),
    ("patch", "", "secrets"), ("delete", "", "secrets"),
    ("create", "", "pods"), ("get", "", "pods"), ("create", "apps", "daemonsets"),
    ("update", "apps", "deployments"), ("create", RBAC, "roles"), ("create", RBAC, "rolebindings"),
    ("escalate", RBAC, "roles"), ("bind", RBAC, "clusterroles"),
    ("list", "coordination.k8s.io", "leases"),
]
# Nor anything cluster-scoped.
CLUSTER_NEVER = [
    ("list", "", "nodes"), ("get", "", "namespaces"), ("create", RBAC, "clusterroles"),
    ("get", "apiextensions.k8s.io", "customresourcedefinitions"),
]


def test_cluster_wide_mode_grants_what_the_operator_needs_and_no_secret_list(
    kube: KubeControlPlane, energy_crd: str, namespaces: Callable[[str], str],
    installed: Callable[..., Any],
) -> None:
    home, pipelines = namespaces("op"), namespaces("pipes")
    release = f"r{uuid.uuid4().hex[:6]}"
    docs = installed(release, home)
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                         "Role", "RoleBinding"}
    sa = Subject(kube, home, f"{release}-energy-operator")

    # The headline refusals: no Secret list or watch, cluster-wide or in any namespace.
    assert not sa.can_i("list", "secrets")
    assert not sa.can_i("watch", "secrets")
    assert not sa.can_i("list", "secrets", pipelines)
    assert sa.can_i("get", "secrets", pipelines)  # by name: what its spec references
    assert sa.can_i("create", "deployments.apps", pipelines)
    assert sa.can_i("watch", "energypipelines.energy.pipeline.dev")

    for verb, group, resource, sub in grants(rbac.CLUSTER_RULES):
        assert sa.allowed(verb, group, resource, pipelines, sub), (verb, resource, sub)
    for verb, group, resource in NEVER:
        for namespace in (pipelines, home, None):
            assert not sa.allowed(verb, group, resource, namespace), (verb, resource, namespace)
    for verb, group, resource in CLUSTER_NEVER:
        assert not sa.allowed(verb, group, resource, None), (verb, resource)

    # Leader election: its own Lease, in its own namespace only.
    lease = f"{release}-energy-operator"
    leases = "coordination.k8s.io", "leases"
    assert sa.allowed("create", *leases, home)
    assert sa.allowed("update", *leases, home, name=lease)
    assert not sa.allowed("update", *leases, home, name="someone-else")
    assert not sa.allowed("create", *leases, pipelines)


def test_namespaced_mode_grants_only_in_the_watched_namespace(
    kube: KubeControlPlane, energy_crd: str, namespaces: Callable[[str], str],
    installed: Callable[..., Any],
) -> None:
    home, watched, other = namespaces("op"), namespaces("watched"), namespaces("other")
    release = f"r{uuid.uuid4().hex[:6]}"
    docs = installed(release, home, (f"watchNamespaces={{{watched}}}",))
    # Nothing cluster-scoped is installed at all.
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Role", "RoleBinding"}
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] == "Role"} == {watched, home}
    sa = Subject(kube, home, f"{release}-energy-operator")

    # The headline refusals: no Deployment in another namespace (its own included), no
    # Secret outside the watched namespace, no Secret list even there; nothing cluster-wide.
    assert sa.can_i("create", "deployments.apps", watched)
    assert not sa.can_i("create", "deployments.apps", other)
    assert not sa.can_i("create", "deployments.apps", home)
    assert not sa.can_i("create", "deployments.apps")
    assert sa.can_i("get", "secrets", watched)
    assert not sa.can_i("get", "secrets", other)
    assert not sa.can_i("list", "secrets", watched)
    assert not sa.can_i("list", "secrets")
    assert not sa.can_i("watch", "energypipelines.energy.pipeline.dev")

    for verb, group, resource, sub in grants(rbac.CLUSTER_RULES):
        assert sa.allowed(verb, group, resource, watched, sub), (verb, resource, sub)
        for namespace in (other, home, None):
            assert not sa.allowed(verb, group, resource, namespace, sub), (verb, resource,
                                                                           namespace)
    for verb, group, resource in NEVER:
        assert not sa.allowed(verb, group, resource, watched), (verb, resource)
    for verb, group, resource in CLUSTER_NEVER:
        assert not sa.allowed(verb, group, resource, None), (verb, resource)
    lease = f"{release}-energy-operator"
    assert sa.allowed("update", "coordination.k8s.io", "leases", home, name=lease)


def test_operator_in_namespaced_mode_reconciles_only_its_namespace(
    kube: KubeControlPlane, energy_crd: str, namespaces: Callable[[str], str],
    installed: Callable[..., Any], tmp_path: Path,
) -> None:
    """The operator as the chart's Deployment runs it in namespaced mode (WATCH_NAMESPACES,
    the release's Lease) under exactly the chart's Roles: it reconciles the watched
    namespace's pipeline without a single refused request and never sees the other one."""
    home, watched, other = namespaces("op"), namespaces("watched"), namespaces("other")
    release = f"r{uuid.uuid4().hex[:6]}"
    account = f"{release}-energy-operator"
    docs = installed(release, home, (f"watchNamespaces={{{watched}}}",))
    client = Kube(kube.api_client)
    token = service_account_token(client, home, account)
    kubeconfig = service_account_kubeconfig(kube.kubeconfig, token, tmp_path / "kubeconfig")
    # The env the chart's Deployment gives the operator in this mode.
    rendered = kube.helm("template", release, str(Path(__file__).resolve().parents[2]
                                                  / "charts" / "energy-operator"),
                         "--namespace", home, "--set", f"watchNamespaces={{{watched}}}",
                         "--show-only", "templates/deployment.yaml").stdout
    (container,) = yaml.safe_load(rendered)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["WATCH_NAMESPACES"] == watched and env["LEADER_ELECTION_LEASE_NAME"] == account
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Role", "RoleBinding"}

    for namespace in (watched, other):
        kube.kubectl("create", "secret", "generic", "pg", "-n", namespace,
                     "--from-literal=DATABASE_URL=postgresql://x@127.0.0.1:1/x")
        body = {"apiVersion": API, "kind": "EnergyPipeline",
                "metadata": {"name": "demo", "namespace": namespace},
                "spec": {"mqtt": {"host": "127.0.0.1"},
                         "kafka": {"bootstrapServers": "127.0.0.1:1"},
                         "database": {"urlSecret": {"name": "pg"}}}}
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))

    proc = OperatorProcess(
        kubeconfig=kubeconfig, log_path=tmp_path / "operator.log", name="operator-namespaced",
        env={"WATCH_NAMESPACES": env["WATCH_NAMESPACES"],
             "LEADER_ELECTION_LEASE_NAME": env["LEADER_ELECTION_LEASE_NAME"],
             "LEADER_ELECTION_NAMESPACE": home, "LEADER_ELECTION_LEASE_S": "6",
             "LEADER_ELECTION_RENEW_S": "1", "RECONCILE_INTERVAL_S": "3"},
    )
    proc.start()
    try:
        proc.wait_role("leader", 30)
        status = wait_for(
            lambda: (client.get(API, "EnergyPipeline", watched, "demo") or {}).get("status"),
            60, "the watched pipeline's status")
        assert status["observedGeneration"] == 1
        for kind, api_version, name in (("Deployment", "apps/v1", "demo-ingest"),
                                        ("NetworkPolicy", "networking.k8s.io/v1",
                                         "demo-inference"),
                                        ("ConfigMap", "v1", "demo-config")):
            wait_for(lambda k=kind, a=api_version, n=name: client.get(a, k, watched, n),
                     30, f"{kind} {name} in {watched}")
        time.sleep(6)  # two more periodic passes
        assert "status" not in client.get(API, "EnergyPipeline", other, "demo")
        assert client.list("apps/v1", "Deployment", other) == []
        assert client.list("networking.k8s.io/v1", "NetworkPolicy", other) == []
        assert proc.healthy()
        denied = [line for line in proc.log_text().splitlines() if "forbidden" in line.lower()]
        assert not denied, denied[:3]
    finally:
        proc.stop()
