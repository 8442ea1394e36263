"""Status and conditions from what a reconcile observed: pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from energy_operator.status import (
    History,
    Observed,
    Problem,
    TopicsObserved,
    Workload,
    build_status,
    is_settling,
    plan_first_training,
    status_patch,
    workload_from_deployment,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TOPICS = TopicsObserved(("e.temperature", "e.deadletter"), "Ready", 4, 2)
READY = {"bridge": Workload(2, 2, 2), "ingest": Workload(2, 2, 2),
         "inference": Workload(2, 2, 2)}


def observed(**changes: object) -> Observed:
    base: dict[str, object] = dict(generation=3, paused=False, workloads=READY, topics=TOPICS,
                                   schema_version=2, schema_latest=2)
    base.update(changes)
    return Observed(**base)  # type: ignore[arg-type]


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def test_all_ready() -> None:
    status = build_status(observed(last_forecast=T0), "demo", None, T0)
    c = conditions(status)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("True", "Ready")
    assert (c["Progressing"]["status"], c["Degraded"]["status"]) == ("False", "False")
    assert all(x["observedGeneration"] == 3 for x in status["conditions"])
    assert status["observedGeneration"] == 3
    assert status["ingestion"] == "4/4" and status["inference"] == "2/2"
    assert status["topics"] == {"names": ["e.temperature", "e.deadletter"], "state": "Ready",
                                "partitions": 4, "replicationFactor": 2}
    assert status["schemaVersion"] == 2
    assert status["lastForecastTime"] == "2026-01-01T12:00:00Z"
    assert status["workloads"]["ingest"] == {"desired": 2, "ready": 2, "updated": 2}


def test_transition_time_moves_only_when_the_status_does() -> None:
    first = build_status(observed(), "demo", None, T0)
    later = T0 + timedelta(minutes=5)
    same = build_status(observed(), "demo", first, later)
    assert same == first  # nothing changed: nothing to write
    rolling = {**READY, "ingest": Workload(3, 2, 1, rolled_out=False)}
    changed = build_status(observed(workloads=rolling), "demo", first, later)
    c = conditions(changed)
    assert c["Ready"]["lastTransitionTime"] == "2026-01-01T12:05:00Z"
    assert c["Progressing"]["status"] == "True"
    assert c["Progressing"]["reason"] == "RollingOut"
    assert "demo-ingest" in c["Ready"]["message"]
    assert c["Degraded"]["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert changed["ingestion"] == "4/5"


def test_blocking_problem_makes_not_ready_and_degraded() -> None:
    problem = Problem("KafkaUnreachable", "Kafka at k:9092 (spec.kafka.bootstrapServers): down")
    c = conditions(build_status(observed(problems=[problem]), "demo", None, T0))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "KafkaUnreachable")
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "KafkaUnreachable")
    assert "spec.kafka.bootstrapServers" in c["Degraded"]["message"]


def test_partition_shrink_is_degraded_but_data_still_flows() -> None:
    problem = Problem("PartitionShrinkRefused", "topics ... set spec.kafka.partitions to at "
                      "least 6", blocking=False)
    topics = TopicsObserved(TOPICS.names, "Degraded", 6, 2)
    c = conditions(build_status(observed(problems=[problem], topics=topics), "demo", None, T0))
    assert c["Ready"]["status"] == "True"
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True",
                                                                  "PartitionShrinkRefused")


def test_paused_says_so() -> None:
    status = build_status(observed(paused=True), "demo", None, T0)
    c = conditions(status)
    assert status["paused"] is True
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("False", "Paused")
    assert "spec.paused" in c["Progressing"]["message"]
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("True", "Paused")
    missing = {**READY, "inference": Workload(2, 0, 0, exists=False, rolled_out=False)}
    c = conditions(build_status(observed(paused=True, workloads=missing), "demo", None, T0))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "WorkloadMissing")
    assert "demo-inference" in c["Ready"]["message"]


def test_pending_topics_and_old_schema_are_not_ready() -> None:
    pending = TopicsObserved(TOPICS.names, "Pending")
    assert conditions(build_status(observed(topics=pending), "d", None, T0))["Ready"][
        "reason"] == "TopicsNotReady"
    assert conditions(build_status(observed(schema_version=1), "d", None, T0))["Ready"][
        "reason"] == "SchemaNotCurrent"


def test_changes_this_pass_are_progress() -> None:
    c = conditions(build_status(observed(changes=["updated Deployment demo-ingest"]), "d",
                                None, T0))
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("True", "Reconciling")


def test_unknown_values_keep_the_last_seen() -> None:
    first = build_status(observed(last_forecast=T0), "demo", None, T0)
    again = build_status(observed(schema_version=None, last_forecast=None), "demo", first, T0)
    assert again["schemaVersion"] == 2 and again["lastForecastTime"] == first["lastForecastTime"]


def test_workload_from_deployment_follows_rollout_status() -> None:
    assert not workload_from_deployment(None, 2).exists
    done = {"metadata": {"generation": 4}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2,
                       "readyReplicas": 2, "availableReplicas": 2}}
    assert workload_from_deployment(done, 2).is_ready
    stale = {**done, "metadata": {"generation": 5}}
    assert not workload_from_deployment(stale, 2).is_ready
    surge = {**done, "status": {**done["status"], "replicas": 3}}
    assert not workload_from_deployment(surge, 2).rolled_out
    assert not workload_from_deployment(done, 3).is_ready  # spec not applied yet


def test_status_patch_removes_keys_that_went_away() -> None:
    assert status_patch({"a": 1}, {"a": 0, "b": 2}) == {"a": 1, "b": None}
    # Also inside objects: a merge patch would otherwise keep workloads.api forever.
    assert status_patch({"w": {"x": 1}, "l": [1]}, {"w": {"x": 1, "api": 2}, "l": [1, 2]}) == {
        "w": {"x": 1, "api": None}, "l": [1]}


def test_settling_means_look_again_soon() -> None:
    ready = build_status(observed(), "d", None, T0)
    assert not is_settling(ready)
    rolling = {**READY, "bridge": Workload(2, 1, 1, rolled_out=False)}
    assert is_settling(build_status(observed(workloads=rolling), "d", None, T0))


def test_inference_waiting_for_its_first_model_does_not_block_ready() -> None:
    waiting = {**READY, "inference": Workload(2, 0, 2)}
    first = plan_first_training("demo", 0, History("site-0", 20, 336), (), False, T0)
    status = build_status(observed(workloads=waiting, promoted_models=0, first_training=first),
                          "demo", None, T0)
    c = conditions(status)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("True", "Ready")
    assert "inference waits for its first model: the operator starts Job demo-train-first" in (
        c["Ready"]["message"])
    assert "kubectl create job --from=cronjob/demo-train demo-train-now" in c["Ready"]["message"]
    assert status["inference"] == "0/2" and status["promotedModels"] == 0
    assert status["firstTraining"]["state"] == "WaitingForHistory"
    # With a model promoted (or unknown), unready inference pods are a problem again.
    for promoted in (1, None):
        c = conditions(build_status(observed(workloads=waiting, promoted_models=promoted),
                                    "demo", None, T0))
        assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "WorkloadsNotReady")


def test_the_api_is_reported_only_while_enabled() -> None:
    without = build_status(observed(), "demo", None, T0)
    assert "api" not in without and "api" not in without["workloads"]
    with_api = {**READY, "api": Workload(1, 1, 1)}
    status = build_status(observed(workloads=with_api), "demo", without, T0)
    assert status["api"] == "1/1"
    assert status["workloads"]["api"] == {"desired": 1, "ready": 1, "updated": 1}
    assert status["ingestion"] == "4/4" and status["inference"] == "2/2"
    c = conditions(status)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("True", "Ready")
    assert "api 1/1" in c["Ready"]["message"]
    # Switched off again: the keys go, also from the stored status.
    off = build_status(observed(), "demo", status, T0)
    assert "api" not in off
    patch = status_patch(off, status)
    assert patch["api"] is None and patch["workloads"]["api"] is None


def test_an_unready_or_missing_api_blocks_ready() -> None:
    waiting = {**READY, "api": Workload(2, 1, 2)}
    c = conditions(build_status(observed(workloads=waiting), "demo", None, T0))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "WorkloadsNotReady")
    assert "demo-api 1/2 ready" in c["Ready"]["message"]
    missing = {**READY, "api": Workload(1, 0, 0, exists=False, rolled_out=False)}
    c = conditions(build_status(observed(workloads=missing), "demo", None, T0))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "WorkloadMissing")
    assert "demo-api" in c["Ready"]["message"]
    rolling = {**READY, "api": Workload(1, 1, 0, rolled_out=False)}
    c = conditions(build_status(observed(workloads=rolling), "demo", None, T0))
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("True", "RollingOut")
    assert "demo-api" in c["Progressing"]["message"]


def test_the_api_tokens_secret_and_how_to_read_its_token_are_reported() -> None:
    read = "kubectl -n energy get secret demo-api-tokens -o jsonpath='{.data.token}' | base64 -d"
    workloads = {**READY, "api": Workload(1, 1, 1)}
    status = build_status(observed(workloads=workloads, api_tokens={
        "secret": "demo-api-tokens", "read": read}), "demo", None, T0)
    assert status["apiTokens"] == {"secret": "demo-api-tokens", "read": read}
    ready = conditions(status)["Ready"]
    assert ready["status"] == "True" and ready["message"].endswith(f"; read API token: {read}")
    # A Secret the user named: no command (its tokens are the user's), nothing in Ready.
    named = build_status(observed(workloads=workloads, api_tokens={"secret": "readers"}),
                         "demo", None, T0)
    assert named["apiTokens"] == {"secret": "readers"}
    assert "API token" not in conditions(named)["Ready"]["message"]
    # The API turned off: the field goes away.
    off = build_status(observed(), "demo", status, T0)
    assert "apiTokens" not in off and status_patch(off, status)["apiTokens"] is None
