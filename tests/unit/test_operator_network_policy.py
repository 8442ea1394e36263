"""The NetworkPolicies the operator renders for a pipeline's workers: exact selectors, ports
and peers, and that they select the very pods the Deployments and the CronJob make."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from energy_operator import crd, network_policy, render

pytestmark = pytest.mark.unit

SPEC: dict[str, Any] = {
    "mqtt": {"host": "hivemq.energy.svc"},
    "kafka": {"bootstrapServers": "kafka:9092"},
    "database": {"urlSecret": {"name": "pg", "key": "DATABASE_URL"}},
}
INGRESS_NGINX = {"namespaceSelector": {"matchLabels": {
    "kubernetes.io/metadata.name": "ingress-nginx"}}}
PROMETHEUS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
              "podSelector": {"matchLabels": {"app": "prometheus"}}}


def spec(**sections: Any) -> dict[str, Any]:
    out = copy.deepcopy(SPEC)
    out.update(sections)
    return out


def policies(s: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in render.render_children("demo", "energy", s or SPEC)
            if c["kind"] == "NetworkPolicy"}


def selects(policy: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"]["matchLabels"]
    return all(pod_labels.get(k) == v for k, v in wanted.items())


def test_one_policy_per_worker_with_exactly_its_clients() -> None:
    found = policies()
    assert sorted(found) == ["demo-bridge", "demo-inference", "demo-ingest", "demo-train"]
    for name, policy in found.items():
        worker = name.removeprefix("demo-")
        assert policy["apiVersion"] == "networking.k8s.io/v1"
        assert policy["metadata"]["namespace"] == "energy"
        assert policy["spec"]["podSelector"] == {"matchLabels": {
            "app.kubernetes.io/name": "energy-pipeline",
            "app.kubernetes.io/instance": "demo",
            "app.kubernetes.io/component": worker,
        }}
        assert policy["spec"]["policyTypes"] == ["Ingress"]
    # gRPC of inference from this pipeline's ingest pods, and nothing else to anyone.
    assert found["demo-inference"]["spec"]["ingress"] == [{
        "from": [{"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "energy-pipeline",
            "app.kubernetes.io/instance": "demo",
            "app.kubernetes.io/component": "ingest",
        }}}],
        "ports": [{"port": 50051, "protocol": "TCP"}],
    }]
    for worker in ("bridge", "ingest", "train"):
        # policyTypes Ingress without rules: admits no one.
        assert found[f"demo-{worker}"]["spec"] == {
            "podSelector": found[f"demo-{worker}"]["spec"]["podSelector"],
            "policyTypes": ["Ingress"]}


def test_policies_select_the_pods_the_workloads_make() -> None:
    objs = {(c["kind"], c["metadata"]["name"]): c
            for c in render.render_children("demo", "energy", spec(api={"enabled": True}))}
    found = policies(spec(api={"enabled": True}))
    for worker in ("bridge", "ingest", "inference", "api"):
        pod = objs[("Deployment", f"demo-{worker}")]["spec"]["template"]["metadata"]["labels"]
        assert [n for n, p in found.items() if selects(p, pod)] == [f"demo-{worker}"]
    train = objs[("CronJob", "demo-train")]["spec"]["jobTemplate"]["spec"]["template"]
    assert [n for n, p in found.items() if selects(p, train["metadata"]["labels"])] == [
        "demo-train"]
    first = render.first_training_job("demo", "energy", SPEC)["spec"]["template"]
    assert selects(found["demo-train"], first["metadata"]["labels"])
    # The ingest peer of inference's rule matches ingest's pods, and only those.
    (peer,) = found["demo-inference"]["spec"]["ingress"][0]["from"]
    ingest = objs[("Deployment", "demo-ingest")]["spec"]["template"]["metadata"]["labels"]
    bridge = objs[("Deployment", "demo-bridge")]["spec"]["template"]["metadata"]["labels"]
    wanted = peer["podSelector"]["matchLabels"]
    assert all(ingest.get(k) == v for k, v in wanted.items())
    assert not all(bridge.get(k) == v for k, v in wanted.items())
    # Another pipeline's ingest in the same namespace is not a client.
    other = render.render_children("other", "energy", SPEC)
    other_ingest = next(c for c in other if c["kind"] == "Deployment"
                        and c["metadata"]["name"] == "other-ingest")
    assert not all(other_ingest["spec"]["template"]["metadata"]["labels"].get(k) == v
                   for k, v in wanted.items())


def test_the_read_api_port_is_open_to_the_ingress_controller_only() -> None:
    assert "demo-api" not in policies()
    api = policies(spec(api={"enabled": True}))["demo-api"]
    assert api["spec"]["ingress"] == [
        {"from": [INGRESS_NGINX], "ports": [{"port": 8000, "protocol": "TCP"}]}]
    custom = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
              "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}}}
    api = policies(spec(api={"enabled": True},
                        networkPolicy={"apiFrom": [custom]}))["demo-api"]
    assert api["spec"]["ingress"] == [
        {"from": [custom], "ports": [{"port": 8000, "protocol": "TCP"}]}]


def test_no_peers_means_no_rule_never_an_empty_from() -> None:
    """An ingress rule without `from` admits everyone: an empty peer list must drop the rule."""
    api = policies(spec(api={"enabled": True}, networkPolicy={"apiFrom": []}))["demo-api"]
    assert "ingress" not in api["spec"] and api["spec"]["policyTypes"] == ["Ingress"]
    for policy in policies(spec(api={"enabled": True})).values():
        for rule in policy["spec"].get("ingress", []):
            assert rule["from"], policy["metadata"]["name"]


def test_metrics_port_open_to_metrics_from_on_every_worker_with_a_server() -> None:
    found = policies(spec(api={"enabled": True}, networkPolicy={"metricsFrom": [PROMETHEUS]}))
    metrics = {"from": [PROMETHEUS], "ports": [{"port": 8080, "protocol": "TCP"}]}
    for worker in ("bridge", "ingest", "inference", "api"):
        assert found[f"demo-{worker}"]["spec"]["ingress"][-1] == metrics, worker
    assert "ingress" not in found["demo-train"]["spec"]
    assert len(found["demo-inference"]["spec"]["ingress"]) == 2
    assert len(found["demo-api"]["spec"]["ingress"]) == 2


def test_disabled_renders_none_and_the_reconciler_prunes_them() -> None:
    assert policies(spec(networkPolicy={"enabled": False})) == {}
    assert (network_policy.API_VERSION, network_policy.KIND) in render.PRUNABLE_KINDS
    # The reconciler lists and deletes them by kind.
    from energy_operator.kube import resource_path

    assert resource_path(network_policy.API_VERSION, network_policy.KIND, "energy", "x") == (
        "/apis/networking.k8s.io/v1/namespaces/energy/networkpolicies/x")


def test_crd_defaults_and_schema() -> None:
    defaults = crd.with_defaults(SPEC)["networkPolicy"]
    assert defaults == {"enabled": True, "apiFrom": [INGRESS_NGINX], "metricsFrom": []}
    schema = crd.spec_schema()["properties"]["networkPolicy"]["properties"]
    peer = schema["apiFrom"]["items"]
    assert set(peer["properties"]) == {"podSelector", "namespaceSelector", "ipBlock"}
    assert peer["minProperties"] == 1  # an empty peer is refused by the API server
