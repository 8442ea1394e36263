"""What the operator may do in the cluster: its RBAC rules, each with the reason it needs it.

The one source of the operator's permissions. `manifests/rbac.yaml` and the chart's
`charts/energy-operator/templates/rbac.yaml` are both rendered from these rules by
`python -m energy_harness.generate` (a unit test fails when either is stale), so the chart
grants exactly what the tested manifests grant. Least privilege: a rule is here only because
some code path of the operator makes that call; the cluster tests run the operator under
these rules as its ServiceAccount.

Two scopes, one set of rules: by default a ClusterRole grants CLUSTER_RULES in every
namespace; the chart's namespaced mode (`watchNamespaces`) grants the very same rules with a
Role in each watched namespace, and the operator watches only those (WATCH_NAMESPACES, kopf's
`--namespace`). Nothing the operator does needs a cluster-scoped object: no rule here is about
nodes, namespaces or CRDs.

Pure data only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from energy_operator.crd import GROUP, PLURAL
from energy_operator.settings import OperatorSettings

NAME = "energy-operator"  # ServiceAccount, ClusterRole and their binding in manifests/
NAMESPACE = "energy-system"  # the operator's namespace in manifests/ (the chart: its release's)
LEADER_ELECTION_SUFFIX = "-leader-election"  # the Role and RoleBinding for the Lease
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "energy-pipeline"}
# The Lease the operator holds unless LEADER_ELECTION_LEASE_NAME names another.
LEASE_NAME: str = OperatorSettings.lease_name


@dataclass(frozen=True)
class Rule:
    """One PolicyRule and why the operator needs it."""

    why: str
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    resource_names: tuple[str, ...] = ()

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiGroups": list(self.api_groups),
                               "resources": list(self.resources)}
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        out["verbs"] = list(self.verbs)
        return out


# What the operator does, as the header of the rendered files says it.
SUMMARY = (
    "Per EnergyPipeline, in any namespace (the chart's namespaced mode: in the watched ones",
    "only), the operator watches the resource, writes its status, server-side applies its",
    "children and lists them by label, reads the Secrets the spec references (get by name:",
    "never list or watch), creates the read API's tokens Secret once, writes its gRPC",
    "certificate Secrets and posts Events; while a pipeline has no model it starts (and",
    "retries) its first training Job. It holds a Lease in its own namespace for leader",
    "election. It needs no access to pods, nodes, namespaces or CRDs (kopf's resource",
    "scanning is off; whether the PodMonitor kind exists, it learns from discovery), nor",
    "update on its children other than those certificate Secrets (server-side apply",
    "patches them).",
)

# What the operator does for each EnergyPipeline: a ClusterRole (every namespace) or, in the
# chart's namespaced mode, a Role in each watched namespace.
CLUSTER_RULES = (
    Rule("watch every EnergyPipeline and patch it (kopf's annotations, the optional "
         "delete-topics finalizer)",
         (GROUP,), (PLURAL,), ("get", "list", "watch", "patch")),
    Rule("write the status (conditions, workloads, topics, schema version)",
         (GROUP,), (f"{PLURAL}/status",), ("get", "patch")),
    Rule("set blockOwnerDeletion on the children it owns (the API server asks for update on "
         "the owner's finalizers)",
         (GROUP,), (f"{PLURAL}/finalizers",), ("update",)),
    Rule("server-side apply the ConfigMap and the workers' ServiceAccount, list them by label "
         "to report what it created, changed or restored; the garbage collector deletes them",
         ("",), ("configmaps", "serviceaccounts"), ("get", "list", "create", "patch")),
    Rule("apply the inference and read API Services; delete the read API's once "
         "spec.api.enabled turns false",
         ("",), ("services",), ("get", "list", "create", "patch", "delete")),
    Rule("apply the worker Deployments; delete the read API's once spec.api.enabled turns "
         "false",
         ("apps",), ("deployments",), ("get", "list", "create", "patch", "delete")),
    Rule("apply the training CronJob",
         ("batch",), ("cronjobs",), ("get", "list", "create", "patch")),
    Rule("start the first training (Job <name>-train-first) once enough history is stored, "
         "list the pipeline's training Jobs to see whether one runs, succeeded or failed, and "
         "delete a failed first training before its next try",
         ("batch",), ("jobs",), ("list", "create", "delete")),
    Rule("apply the PodDisruptionBudgets; delete the read API's once spec.api.enabled turns "
         "false",
         ("policy",), ("poddisruptionbudgets",), ("get", "list", "create", "patch", "delete")),
    Rule("apply the NetworkPolicies that admit only each worker's clients; delete the read "
         "API's once spec.api.enabled turns false (all of them once spec.networkPolicy.enabled "
         "does)",
         ("networking.k8s.io",), ("networkpolicies",), ("get", "list", "create", "patch",
                                                         "delete")),
    Rule("apply the PodMonitor that points a Prometheus Operator at the workers' /metrics, "
         "where its CRD is installed; delete it once spec.monitoring.podMonitor.enabled turns "
         "false",
         ("monitoring.coreos.com",), ("podmonitors",), ("get", "list", "create", "patch",
                                                        "delete")),
    Rule("read the Secrets the spec references (database URL, Kafka SASL credentials) for its "
         "own migrations and topic administration",
         ("",), ("secrets",), ("get",)),
    Rule("create the read API's tokens Secret <name>-api-tokens once, when spec.api names "
         "none (never updated: create cannot be limited to a name, so no update or patch)",
         ("",), ("secrets",), ("create",)),
    Rule("create the gRPC CA once and issue and renew the inference and ingest "
         "certificates in their Secrets (spec.inference.tls)",
         ("",), ("secrets",), ("create", "update")),
    Rule("post Events on the resource",
         ("",), ("events",), ("create",)),
)

# Role in the operator's own namespace: leader election on one Lease.
LEADER_ELECTION_RULES = (
    Rule("create the Lease when there is none (create cannot be limited to a name)",
         ("coordination.k8s.io",), ("leases",), ("create",)),
    Rule(f"read, renew and take over only its own Lease, {LEASE_NAME}",
         ("coordination.k8s.io",), ("leases",), ("get", "update"), (LEASE_NAME,)),
)
