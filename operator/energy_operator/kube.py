"""A thin, dict-in dict-out Kubernetes client for the operator's own calls.

kopf watches and dispatches; the reconciler applies children with server-side apply, reads
Secrets and Deployments, writes status and posts Events through this. Plain dicts keep the
rendering and the comparisons free of the generated model classes.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from energy_operator.naming import FIELD_MANAGER

# (apiVersion, kind) -> plural, for every kind the operator touches.
PLURALS: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Secret"): "secrets",
    ("v1", "Service"): "services",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("batch/v1", "CronJob"): "cronjobs",
    ("batch/v1", "Job"): "jobs",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("coordination.k8s.io/v1", "Lease"): "leases",
    ("energy.pipeline.dev/v1alpha1", "EnergyPipeline"): "energypipelines",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitors",
}

REQUEST_TIMEOUT = 15.0


class KubeError(RuntimeError):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def resource_path(api_version: str, kind: str, namespace: str | None,
                  name: str | None = None, subresource: str | None = None) -> str:
    plural = PLURALS[(api_version, kind)]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    if name:
        base += f"/{quote(name)}"
    if subresource:
        base += f"/{subresource}"
    return base


def new_api_client(kubeconfig: str | None = None) -> k8s.ApiClient:
    """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        return k8s.ApiClient(configuration)
    return k8s_config.new_client_from_config(config_file=kubeconfig)


class Kube:
    def __init__(self, api: k8s.ApiClient, field_manager: str = FIELD_MANAGER) -> None:
        self.api = api
        self.field_manager = field_manager

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        _, url, headers, body, _ = self.api.param_serialize(
            method, path, query_params=query or [], header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, headers, body, _request_timeout=REQUEST_TIMEOUT)
        data = response.read()
        if response.status >= 400:
            message = data.decode(errors="replace")
            with contextlib.suppress(ValueError):
                message = json.loads(message).get("message", message)
            raise KubeError(response.status, str(response.reason), message)
        return json.loads(data) if data else None

    # -- reads ----------------------------------------------------------------------------

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Any:
        """The object, or None if it does not exist."""
        try:
            return self.request("GET", resource_path(api_version, kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None,
             label_selector: str | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        found = self.request("GET", resource_path(api_version, kind, namespace), query=query)
        return list(found.get("items", []))

    def serves(self, api_version: str, kind: str) -> bool:
        """Whether the API server serves this kind now (discovery: a CRD may come and go).
        Discovery is open to every authenticated user, so this needs no RBAC rule. An answer
        other than the list (404: no such group; 503: an aggregated API down) counts as not
        served: the caller then neither creates nor deletes that kind's children."""
        path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        try:
            found = self.request("GET", path)
        except KubeError:
            return False
        return any(r.get("kind") == kind and "/" not in r.get("name", "")
                   for r in (found or {}).get("resources", []))

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """A Secret's value, or None when the Secret or the key is missing."""
        import base64

        secret = self.get("v1", "Secret", namespace, name)
        if secret is None:
            return None
        if key in (secret.get("stringData") or {}):
            return str(secret["stringData"][key])
        raw = (secret.get("data") or {}).get(key)
        return None if raw is None else base64.b64decode(raw).decode()

    # -- writes ---------------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as our field manager; an unchanged object is not written again."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return dict(self.request(
            "PATCH", path, body=dict(obj),
            query=[("fieldManager", self.field_manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        ))

    def merge_patch(self, api_version: str, kind: str, namespace: str | None, name: str,
                    patch: Mapping[str, Any], subresource: str | None = None) -> Any:
        return self.request(
            "PATCH", resource_path(api_version, kind, namespace, name, subresource),
            body=dict(patch), content_type="application/merge-patch+json",
        )

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str,
               uid: str | None = None) -> bool:
        """Delete in the background (dependents go through the garbage collector).

        With `uid`, only that very object (a precondition): never one recreated meanwhile.
        False if it was already gone.
        """
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions",
                                "propagationPolicy": "Background"}
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", resource_path(api_version, kind, namespace, name), body=body)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        return dict(self.request("POST", path, body=dict(obj)))

    def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """PUT: fails with 409 if metadata.resourceVersion is stale (optimistic locking)."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return dict(self.request("PUT", path, body=dict(obj)))

    def post_event(self, involved: Mapping[str, Any], reason: str, message: str,
                   type_: str = "Normal") -> None:
        """A core/v1 Event on `involved`, as `kubectl describe` shows them."""
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}",
                         "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": os.environ.get("HOSTNAME", FIELD_MANAGER),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.create(event)
