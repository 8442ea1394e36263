"""The reconciler's child bookkeeping against an in-memory API: what it creates, restores and
deletes (the read API's children when spec.api.enabled turns false), and what it leaves alone.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest
from energy_operator.kube import KubeError
from energy_operator.reconcile import apply_children

pytestmark = pytest.mark.unit

UID = "uid-of-demo"
BODY = {
    "apiVersion": "energy.pipeline.dev/v1alpha1",
    "kind": "EnergyPipeline",
    "metadata": {"name": "demo", "namespace": "energy", "uid": UID, "generation": 1},
}
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


class FakeKube:
    """Server-side apply, list by kind (every object carries the pipeline's labels), delete."""

    def __init__(self, forbid_delete: bool = False) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted: list[tuple[str, str, str | None]] = []
        self.forbid_delete = forbid_delete
        self._uids = 0

    def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (k, _), o in sorted(self.objects.items()) if k == kind]

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"]["name"])
        old = self.objects.get(key)
        new = copy.deepcopy(dict(obj))
        if old is None:
            self._uids += 1
            new["metadata"].update(uid=f"uid-{self._uids}", generation=1)
        else:
            same = json.dumps(old.get("spec"), sort_keys=True) == json.dumps(
                new.get("spec"), sort_keys=True
            )
            new["metadata"].update(
                uid=old["metadata"]["uid"],
                generation=old["metadata"]["generation"] + (0 if same else 1),
            )
        self.objects[key] = new
        return copy.deepcopy(new)

    def delete(
        self, api_version: str, kind: str, namespace: str | None, name: str, uid: str | None = None
    ) -> bool:
        if self.forbid_delete:
            raise KubeError(403, "Forbidden", f"{kind.lower()}s {name!r} is forbidden")
        self.deleted.append((kind, name, uid))
        return self.objects.pop((kind, name), None) is not None


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


def spec(api: bool) -> dict[str, Any]:
    return {**SPEC, "api": {"enabled": api}}


def test_enabling_creates_and_disabling_deletes_the_api_children() -> None:
    kube = FakeKube()
    events, problems, changes = apply_children(kube, BODY, spec(False), adopt, False)
    assert not problems and not API_CHILDREN & set(kube.objects)
    assert [e.reason for e in events] == ["Created"]

    # Enabled on a running pipeline: created (not "restored", which means someone deleted it).
    events, problems, changes = apply_children(
        kube, BODY, spec(True), adopt, True, frozenset({"api"})
    )
    assert not problems and set(kube.objects) >= API_CHILDREN
    assert [e.reason for e in events] == ["Created"]
    assert "Deployment demo-api" in events[0].message
    uids = {k: kube.objects[k]["metadata"]["uid"] for k in API_CHILDREN}

    # Nothing changed: nothing to report, nothing deleted.
    events, problems, changes = apply_children(kube, BODY, spec(True), adopt, True)
    assert (events, problems, changes) == ([], [], [])
    assert not kube.deleted

    events, problems, changes = apply_children(kube, BODY, spec(False), adopt, True)
    assert not problems
    assert not API_CHILDREN & set(kube.objects)
    # Exactly the objects it saw (uid preconditions), nothing else.
    assert sorted(kube.deleted) == sorted((k, n, uids[(k, n)]) for k, n in API_CHILDREN)
    assert [e.reason for e in events] == ["Deleted"]
    assert "Deployment demo-api" in events[0].message and "spec" in events[0].message
    assert any(c.startswith("deleted ") for c in changes)
    assert ("Service", "demo-inference") in kube.objects


def test_a_missing_api_child_of_an_enabled_api_is_restored() -> None:
    kube = FakeKube()
    apply_children(kube, BODY, spec(True), adopt, False)
    del kube.objects[("Service", "demo-api")]
    events, problems, _ = apply_children(kube, BODY, spec(True), adopt, True)
    assert not problems and [e.reason for e in events] == ["Restored"]
    assert events[0].message == "recreated missing Service demo-api"


def test_objects_it_does_not_control_are_never_deleted() -> None:
    kube = FakeKube()
    apply_children(kube, BODY, spec(False), adopt, False)
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "demo-api",
            "namespace": "energy",
            "uid": "u",
            "generation": 1,
            "labels": {"app.kubernetes.io/instance": "demo"},
        },
    }
    kube.objects[("Service", "demo-api")] = foreign  # someone else's, same labels and name
    other_owner = copy.deepcopy(kube.objects[("Deployment", "demo-bridge")])
    other_owner["metadata"]["name"] = "demo-old"
    other_owner["metadata"]["ownerReferences"][0]["uid"] = "uid-of-another-pipeline"
    kube.objects[("Deployment", "demo-old")] = other_owner
    events, problems, _ = apply_children(kube, BODY, spec(False), adopt, True)
    assert not kube.deleted and not problems and not events


def test_a_refused_delete_is_reported_naming_the_object() -> None:
    kube = FakeKube()
    apply_children(kube, BODY, spec(True), adopt, False)
    kube.forbid_delete = True
    _, problems, _ = apply_children(kube, BODY, spec(False), adopt, True)
    assert {p.reason for p in problems} == {"DeleteFailed"}
    assert not any(p.blocking for p in problems)  # the data still flows
    assert any("Deployment demo-api" in p.message and "forbidden" in p.message for p in problems)
