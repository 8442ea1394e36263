"""The EnergyPipeline's status from what a reconcile observed: pure functions.

Conditions follow the Kubernetes API conventions (type, status, reason, message,
lastTransitionTime, observedGeneration); lastTransitionTime only moves when the status of
a condition changes, so an unchanged pipeline writes an unchanged status.

Ready      the children exist, every workload is rolled out and ready, the topics exist and
           the schema is current; nothing blocks the data flow.
Progressing the operator (or a rollout it started) is still moving towards the spec.
Degraded   something needs a person: its reason and message say what and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Problem:
    """Something that needs a person. Blocking problems stop the data flow (Ready=False)."""

    reason: str
    message: str
    blocking: bool = True


@dataclass(frozen=True)
class Workload:
    desired: int
    ready: int
    updated: int
    exists: bool = True
    rolled_out: bool = True

    @property
    def is_ready(self) -> bool:
        return self.exists and self.rolled_out and self.ready >= self.desired

    def as_status(self) -> dict[str, int]:
        return {"desired": self.desired, "ready": self.ready, "updated": self.updated}


def workload_from_deployment(deployment: Mapping[str, Any] | None, desired: int) -> Workload:
    """Readiness as `kubectl rollout status` judges it."""
    if deployment is None:
        return Workload(desired, 0, 0, exists=False, rolled_out=False)
    spec_replicas = int(deployment.get("spec", {}).get("replicas", 1))
    status = deployment.get("status") or {}
    generation = int(deployment.get("metadata", {}).get("generation", 0))
    ready = int(status.get("readyReplicas", 0))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    # The current template is on every pod and no old pod is left (readiness is separate).
    rolled_out = (
        int(status.get("observedGeneration", 0)) >= generation
        and spec_replicas == desired
        and updated == desired
        and total == desired
    )
    return Workload(desired, ready, updated, exists=True, rolled_out=rolled_out)


@dataclass(frozen=True)
class TopicsObserved:
    names: tuple[str, ...]
    state: str  # Ready, Pending, Degraded or Unknown (Kafka unreachable)
    partitions: int | None = None
    replication_factor: int | None = None

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"names": list(self.names), "state": self.state}
        if self.partitions is not None:
            out["partitions"] = self.partitions
        if self.replication_factor is not None:
            out["replicationFactor"] = self.replication_factor
        return out


@dataclass(frozen=True)
class Observed:
    generation: int
    paused: bool
    workloads: Mapping[str, Workload]
    topics: TopicsObserved
    schema_version: int | None
    schema_latest: int
    last_forecast: datetime | None = None
    # None: unknown (database unreachable); 0: inference has nothing to serve yet.
    promoted_models: int | None = None
    problems: Sequence[Problem] = ()
    # Human-readable changes this reconcile made ("Deployment demo-ingest updated").
    changes: Sequence[str] = field(default_factory=tuple)


def _ratio(workloads: Mapping[str, Workload], names: Sequence[str]) -> str:
    ready = sum(workloads[n].ready for n in names if n in workloads)
    desired = sum(workloads[n].desired for n in names if n in workloads)
    return f"{ready}/{desired}"


def _workload_summary(workloads: Mapping[str, Workload]) -> str:
    return ", ".join(
        f"{name} {w.ready}/{w.desired}" + ("" if w.exists else " (missing)")
        for name, w in workloads.items()
    )


def _ready(observed: Observed, pipeline: str) -> tuple[str, str, str]:
    blocking = [p for p in observed.problems if p.blocking]
    if blocking:
        return "False", blocking[0].reason, "; ".join(p.message for p in blocking)
    missing = [n for n, w in observed.workloads.items() if not w.exists]
    if missing:
        names = ", ".join(f"{pipeline}-{n}" for n in missing)
        hint = " (set spec.paused to false to restore)" if observed.paused else ""
        return "False", "WorkloadMissing", f"Deployment {names} does not exist{hint}"
    waiting = [n for n, w in observed.workloads.items() if not w.is_ready]
    # Inference turns ready once a model is promoted, and the first training needs data; until
    # then ingestion works (forecasts are owed and caught up later), so the pipeline is ready.
    first_model = "inference" in waiting and observed.promoted_models == 0
    if first_model:
        waiting.remove("inference")
    if waiting:
        detail = ", ".join(
            f"{pipeline}-{n} {observed.workloads[n].ready}/{observed.workloads[n].desired} ready"
            for n in waiting
        )
        return ("False", "WorkloadsNotReady",
                f"waiting for pods: {detail}; "
                f"see kubectl describe deployment {pipeline}-{waiting[0]}")
    # Degraded topics (more partitions than asked for) still carry the data.
    if observed.topics.state not in ("Ready", "Degraded"):
        return "False", "TopicsNotReady", f"Kafka topics are {observed.topics.state}"
    if observed.schema_version is None or observed.schema_version < observed.schema_latest:
        return ("False", "SchemaNotCurrent",
                f"database schema version {observed.schema_version}, "
                f"this release needs {observed.schema_latest}")
    if observed.paused:
        return ("True", "Paused",
                "ready when last observed; spec.paused is true, so children are left untouched")
    message = (f"{_workload_summary(observed.workloads)}; {len(observed.topics.names)} topics "
               f"with {observed.topics.partitions} partitions; schema version "
               f"{observed.schema_version}")
    if first_model:
        message += (
            f"; inference waits for its first model, trained by CronJob {pipeline}-train "
            f"(now: kubectl create job --from=cronjob/{pipeline}-train {pipeline}-train-first)"
        )
    return "True", "Ready", message


def _progressing(observed: Observed, pipeline: str) -> tuple[str, str, str]:
    if observed.paused:
        return ("False", "Paused",
                "spec.paused is true: the operator leaves the children, topics and schema "
                "untouched; set it to false to resume")
    rolling = [n for n, w in observed.workloads.items() if w.exists and not w.rolled_out]
    if rolling:
        return ("True", "RollingOut",
                "rolling out " + ", ".join(f"{pipeline}-{n}" for n in rolling))
    if observed.changes:
        return "True", "Reconciling", "; ".join(observed.changes)[:1000]
    return "False", "UpToDate", f"generation {observed.generation} is fully applied"


def _degraded(observed: Observed) -> tuple[str, str, str]:
    if observed.problems:
        return ("True", observed.problems[0].reason,
                "; ".join(p.message for p in observed.problems))
    return "False", "AsExpected", "nothing needs attention"


def conditions(
    observed: Observed,
    pipeline: str,
    previous: Sequence[Mapping[str, Any]] | None,
    now: datetime,
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous or ()}
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for type_, (status, reason, message) in (
        ("Ready", _ready(observed, pipeline)),
        ("Progressing", _progressing(observed, pipeline)),
        ("Degraded", _degraded(observed)),
    ):
        old = before.get(type_)
        changed = old is None or old.get("status") != status
        out.append({
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": stamp if changed else old.get("lastTransitionTime", stamp),
            "observedGeneration": observed.generation,
        })
    return out


def build_status(
    observed: Observed,
    pipeline: str,
    previous: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    previous = previous or {}
    status: dict[str, Any] = {
        "observedGeneration": observed.generation,
        "conditions": conditions(observed, pipeline, previous.get("conditions"), now),
        "paused": observed.paused,
        "ingestion": _ratio(observed.workloads, ("bridge", "ingest")),
        "inference": _ratio(observed.workloads, ("inference",)),
        "workloads": {n: w.as_status() for n, w in observed.workloads.items()},
        "topics": observed.topics.as_status(),
    }
    if "api" in observed.workloads:  # only while spec.api.enabled
        status["api"] = _ratio(observed.workloads, ("api",))
    if observed.schema_version is not None:
        status["schemaVersion"] = observed.schema_version
    elif "schemaVersion" in previous:
        status["schemaVersion"] = previous["schemaVersion"]  # unknown now: keep the last seen
    if observed.promoted_models is not None:
        status["promotedModels"] = observed.promoted_models
    elif "promotedModels" in previous:
        status["promotedModels"] = previous["promotedModels"]
    if observed.last_forecast is not None:
        status["lastForecastTime"] = observed.last_forecast.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif "lastForecastTime" in previous:
        status["lastForecastTime"] = previous["lastForecastTime"]
    return status


def status_patch(new: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """A merge patch turning `previous` into `new` (keys gone from `new` are removed, also
    in nested objects such as `workloads`; lists are replaced whole)."""
    patch: dict[str, Any] = dict(new)
    for key, old in (previous or {}).items():
        if key not in new:
            patch[key] = None
        elif isinstance(old, Mapping) and isinstance(new[key], Mapping):
            patch[key] = status_patch(new[key], old)
    return patch


def ready_condition(status: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    for condition in (status or {}).get("conditions", []):
        if condition.get("type") == "Ready":
            return condition
    return None


def is_settling(status: Mapping[str, Any]) -> bool:
    """Worth a quick re-check: a rollout in flight, or not ready for a transient reason."""
    by_type = {c["type"]: c for c in status.get("conditions", [])}
    return (
        by_type.get("Progressing", {}).get("status") == "True"
        or by_type.get("Ready", {}).get("status") != "True"
    )


__all__ = [
    "Observed",
    "Problem",
    "TopicsObserved",
    "Workload",
    "build_status",
    "conditions",
    "is_settling",
    "ready_condition",
    "status_patch",
    "workload_from_deployment",
]
