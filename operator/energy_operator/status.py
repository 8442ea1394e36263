"""The EnergyPipeline's status from what a reconcile observed: pure functions.

Conditions follow the Kubernetes API conventions (type, status, reason, message,
lastTransitionTime, observedGeneration); lastTransitionTime only moves when the status of
a condition changes, so an unchanged pipeline writes an unchanged status.

Ready      the children exist, every workload is rolled out and ready, the topics exist and
           the schema is current; nothing blocks the data flow.
Progressing the operator (or a rollout it started) is still moving towards the spec.
Degraded   something needs a person: its reason and message say what and what to do.

While no model is promoted, `plan_first_training` decides about the first training (wait for
history, start Job <name>-train-first, retry a failed one after a backoff) and says so in
`status.firstTraining` and the Ready message; inference is then not counted against Ready.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from energy_operator.naming import FIRST_TRAINING_ATTEMPT_ANNOTATION, ChildNames


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


# ---------------------------------------------------------------------------------------------
# The first training: a pipeline without a model trains one as soon as the history allows
# ---------------------------------------------------------------------------------------------

# After a failed first training the operator tries again this long after it failed, doubled
# with every further failure up to the cap (the Job's own pod retries came before that).
FIRST_TRAINING_RETRY = timedelta(minutes=10)
FIRST_TRAINING_RETRY_MAX = timedelta(hours=6)


def first_training_retry_delay(attempt: int) -> timedelta:
    """How long after failed try `attempt` (1, 2, ...) the next one starts."""
    return min(FIRST_TRAINING_RETRY * 2 ** max(0, min(attempt - 1, 16)),
               FIRST_TRAINING_RETRY_MAX)


@dataclass(frozen=True)
class TrainingJob:
    """One training Job of the pipeline (its first-training Job, or one of the CronJob's)."""

    name: str
    uid: str = ""
    succeeded: bool = False
    failed: bool = False
    attempt: int = 1
    # When it finished (or, for a Job that never got a verdict time, was created).
    finished_at: datetime | None = None
    reason: str = ""  # the Failed condition's reason and message

    @property
    def active(self) -> bool:
        # Pending pods count: a Job without a verdict may still start a training.
        return not (self.succeeded or self.failed)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def training_job_from(job: Mapping[str, Any]) -> TrainingJob:
    """A Job's verdict as its terminal conditions (Complete, Failed) state it."""
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    verdicts = {c.get("type"): c for c in status.get("conditions") or ()
                if c.get("status") == "True" and c.get("type") in ("Complete", "Failed")}
    verdict = verdicts.get("Failed") or verdicts.get("Complete") or {}
    try:
        attempt = max(1, int((meta.get("annotations") or {}).get(
            FIRST_TRAINING_ATTEMPT_ANNOTATION, 1)))
    except ValueError:
        attempt = 1
    failed = "Failed" in verdicts
    reason = ": ".join(x for x in (verdict.get("reason"), verdict.get("message")) if x)
    return TrainingJob(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        succeeded="Complete" in verdicts and not failed,
        failed=failed,
        attempt=attempt,
        finished_at=(_time(verdict.get("lastTransitionTime")) or _time(status.get("completionTime"))
                     or _time(meta.get("creationTimestamp"))) if verdicts else None,
        reason=reason,
    )


@dataclass(frozen=True)
class History:
    """Closed hours with a consumption value in the window `train` reads, of the site with the
    most, and how many the first training waits for."""

    site: str | None
    hours: int
    needed: int

    @property
    def enough(self) -> bool:
        return self.hours >= self.needed


@dataclass(frozen=True)
class FirstTraining:
    """Where a pipeline without a promoted model stands with its first training.

    state: WaitingForHistory, Running, Failed (a retry is due at `retry_at`), NoModel (the Job
    succeeded yet no model is promoted), Paused, or NotStarted (the reconciler could not create
    the Job it was told to). action: what the reconciler does now:
    "create" the Job, "retry" (delete the failed Job, create the next attempt) or nothing.
    """

    state: str
    message: str  # why inference waits, for the Ready condition
    action: str = ""
    job: str | None = None
    attempt: int = 0
    history: History | None = None
    retry_at: datetime | None = None
    problem: Problem | None = None

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.job:
            out["job"] = self.job
        if self.attempt:
            out["attempt"] = self.attempt
        if self.history is not None:
            if self.history.site is not None:
                out["site"] = self.history.site
            out["historyHours"] = self.history.hours
            out["neededHours"] = self.history.needed
        if self.retry_at is not None:
            out["retryAt"] = _stamp(self.retry_at)
        return out


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _history_text(history: History | None) -> str:
    if history is None:
        return "not known yet"
    if history.site is None:
        return f"0 of {history.needed} hours"
    return f"{history.site} has {history.hours} of {history.needed} hours"


def plan_first_training(
    pipeline: str,
    promoted_models: int | None,
    history: History | None,
    jobs: Sequence[TrainingJob],
    paused: bool,
    now: datetime,
) -> FirstTraining | None:
    """What to do about the first model; None when none is owed (or that is unknown).

    `jobs` are the pipeline's training Jobs, read before the registry was (so a Job that
    finished has its model counted); `history` is None when it could not be read.
    """
    if promoted_models is None or promoted_models > 0:
        return None
    first = ChildNames(pipeline).first_training
    logs = f"kubectl logs job/{first}"
    ours = next((j for j in jobs if j.name == first), None)
    others = sorted(j.name for j in jobs if j.name != first and j.active)
    enough = history is not None and history.enough

    def running(job: str, attempt: int, action: str = "") -> FirstTraining:
        detail = f"attempt {attempt}; {logs}" if job == first else "started by CronJob"
        return FirstTraining("Running", f"Job {job} is training it ({detail})", action=action,
                             job=job, attempt=attempt if job == first else 0, history=history)

    if ours is not None and ours.active:
        return running(first, ours.attempt)
    if others:
        return running(others[0], 0)
    if ours is not None and ours.succeeded:
        return FirstTraining(
            "NoModel", f"Job {first} finished without promoting a model", job=first,
            attempt=ours.attempt, history=history,
            problem=Problem(
                "FirstTrainingNoModel",
                f"first training Job {first} succeeded but no model is promoted; see {logs}; "
                f"to train again: kubectl delete job {first} (the operator starts it anew)",
                blocking=False,
            ),
        )
    if ours is not None:  # failed
        retry_at = (ours.finished_at or now) + first_training_retry_delay(ours.attempt)
        if now >= retry_at and enough and not paused:
            return running(first, ours.attempt + 1, action="retry")
        why = f" ({ours.reason})" if ours.reason else ""
        return FirstTraining(
            "Failed",
            f"its first training failed (Job {first}, attempt {ours.attempt}); the operator "
            f"tries again after {_stamp(retry_at)}",
            job=first, attempt=ours.attempt, history=history, retry_at=retry_at,
            problem=Problem(
                "FirstTrainingFailed",
                f"first training Job {first} failed{why} (attempt {ours.attempt}); see {logs}; "
                f"the operator tries again after {_stamp(retry_at)}",
                blocking=False,
            ),
        )
    if paused:
        return FirstTraining("Paused", "spec.paused is true: the first training waits",
                             history=history)
    if enough:
        return running(first, 1, action="create")
    needed = f"{history.needed} hours" if history is not None else "enough hours"
    return FirstTraining(
        "WaitingForHistory",
        f"the operator starts Job {first} once a site has {needed} of history "
        f"(now: {_history_text(history)}); to train on less now: kubectl create job "
        f"--from=cronjob/{ChildNames(pipeline).train} {pipeline}-train-now",
        history=history,
    )


def first_training_events(first: FirstTraining | None, promoted: int | None,
                          previous: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(reason, message) of what changed about the first model since the last status: now
    waiting for history, or a model promoted. A started Job and a failure have their own."""
    before = previous.get("firstTraining") or {}
    if first is not None and first.state == "WaitingForHistory" and (
            before.get("state") != first.state):
        return [("WaitingForHistory", "inference waits for its first model: " + first.message)]
    if promoted and previous.get("promotedModels") == 0:
        trained = f" (trained by Job {before['job']})" if before.get("job") else ""
        return [("FirstModelPromoted",
                 f"{promoted} model(s) promoted{trained}: inference loads them and serves "
                 "forecasts")]
    return []


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
    # Per model input, the sites whose newest forecast was made without it (None: unknown).
    missing_inputs: Mapping[str, Sequence[str]] | None = None
    # Where the first training stands while no model is promoted (None: nothing owed/unknown).
    first_training: FirstTraining | None = None
    problems: Sequence[Problem] = ()
    # Human-readable changes this reconcile made ("Deployment demo-ingest updated").
    changes: Sequence[str] = field(default_factory=tuple)
    # While spec.api.enabled: status.apiTokens (the Secret; `read`, the command printing the
    # token of one the operator made).
    api_tokens: Mapping[str, str] | None = None


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
    if observed.api_tokens and observed.api_tokens.get("read"):
        message += f"; read API token: {observed.api_tokens['read']}"
    # Whether or not its pods claim to be ready: without a model there is nothing to serve.
    if observed.promoted_models == 0:
        message += "; inference waits for its first model"
        if observed.first_training is not None:
            message += ": " + observed.first_training.message
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


# Sites named per missing input in the status; the count says how many there are in all.
MISSING_INPUT_SITES_SHOWN = 10


def missing_inputs_status(missing: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """status.missingInputs: per input, how many sites' newest forecast lacked it and the
    first of them by name."""
    return [
        {"input": name, "sites": len(sites),
         "siteNames": list(sites[:MISSING_INPUT_SITES_SHOWN])}
        for name, sites in sorted(missing.items())
    ]


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
    if observed.api_tokens:
        status["apiTokens"] = dict(observed.api_tokens)
    if observed.schema_version is not None:
        status["schemaVersion"] = observed.schema_version
    elif "schemaVersion" in previous:
        status["schemaVersion"] = previous["schemaVersion"]  # unknown now: keep the last seen
    if observed.promoted_models is not None:
        status["promotedModels"] = observed.promoted_models
    elif "promotedModels" in previous:
        status["promotedModels"] = previous["promotedModels"]
    if observed.first_training is not None:
        status["firstTraining"] = observed.first_training.as_status()
    elif observed.promoted_models is None and "firstTraining" in previous:
        status["firstTraining"] = previous["firstTraining"]  # unknown now: keep the last seen
    if observed.missing_inputs is not None:
        if observed.missing_inputs:
            status["missingInputs"] = missing_inputs_status(observed.missing_inputs)
    elif "missingInputs" in previous:
        status["missingInputs"] = previous["missingInputs"]  # unknown now: keep the last seen
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
    "FirstTraining",
    "History",
    "Observed",
    "Problem",
    "TopicsObserved",
    "TrainingJob",
    "Workload",
    "build_status",
    "conditions",
    "first_training_events",
    "first_training_retry_delay",
    "is_settling",
    "plan_first_training",
    "ready_condition",
    "status_patch",
    "training_job_from",
    "workload_from_deployment",
]
