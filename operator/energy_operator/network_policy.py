"""NetworkPolicies of an EnergyPipeline's workers: each port open only to its clients.

Pure: a defaulted spec in, manifests out; `render.render_children` appends them, so they are
adopted and applied like every other child. One policy per worker, `<name>-<worker>`,
selecting that worker's pods by the labels `render` gives them:

    worker     port              from
    inference  grpc 50051        this pipeline's ingest pods
    api        api 8000          spec.networkPolicy.apiFrom (the ingress controller)
    every one  http 8080         spec.networkPolicy.metricsFrom (/metrics; empty: no one)
    bridge, ingest, train        nothing else: they only make connections

Ingress only: what the workers connect to (MQTT, Kafka, PostgreSQL, inference, DNS) is left
to the policies of those servers (the charts render them). The kubelet's probes pass: traffic
from a pod's own node is always allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from energy_operator.naming import (
    API_PORT,
    GRPC_PORT,
    HTTP_PORT,
    ChildNames,
    labels,
    selector_labels,
)

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
# The workers listening on the http port (train has no server).
HTTP_WORKERS = ("bridge", "ingest", "inference", "api")


def _rule(peers: list[dict[str, Any]], port: int) -> dict[str, Any]:
    return {"from": peers, "ports": [{"port": port, "protocol": "TCP"}]}


def ingress_rules(name: str, worker: str, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Who may connect to `worker`'s pods, and on which port.

    A rule is left out rather than given an empty `from`: an empty `from` admits everyone.
    """
    policy = spec["networkPolicy"]
    rules = []
    if worker == "inference":
        rules.append(_rule([{"podSelector": {"matchLabels": selector_labels(name, "ingest")}}],
                           GRPC_PORT))
    if worker == "api" and policy["apiFrom"]:
        rules.append(_rule([dict(p) for p in policy["apiFrom"]], API_PORT))
    if worker in HTTP_WORKERS and policy["metricsFrom"]:
        rules.append(_rule([dict(p) for p in policy["metricsFrom"]], HTTP_PORT))
    return rules


def network_policy(name: str, namespace: str, worker: str,
                   spec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "podSelector": {"matchLabels": selector_labels(name, worker)},
        "policyTypes": ["Ingress"],
    }
    rules = ingress_rules(name, worker, spec)
    # No rules: the key is left out (policyTypes Ingress alone admits no one). The API server
    # stores an empty list as absent, and applying `ingress: []` again would be a change on
    # every pass.
    if rules:
        out["ingress"] = rules
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": ChildNames(name).deployment(worker), "namespace": namespace,
                     "labels": labels(name, worker)},
        "spec": out,
    }


def network_policies(name: str, namespace: str, spec: Mapping[str, Any],
                     workers: tuple[str, ...]) -> list[dict[str, Any]]:
    """One policy per worker of this (defaulted) spec, train included; none when disabled."""
    if not spec["networkPolicy"]["enabled"]:
        return []
    return [network_policy(name, namespace, w, spec) for w in (*workers, "train")]
