"""The first training: when the operator starts Job <name>-train-first, what it renders, and
what the status and events say. Pure functions, no cluster (tests/cluster has the real one)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from energy_operator import crd, render
from energy_operator.naming import FIRST_TRAINING_ATTEMPT_ANNOTATION
from energy_operator.status import (
    FirstTraining,
    History,
    Observed,
    TopicsObserved,
    TrainingJob,
    Workload,
    build_status,
    first_training_events,
    first_training_retry_delay,
    plan_first_training,
    status_patch,
    training_job_from,
)
from energy_pipeline.core.contracts import SENSOR_NAMES
from energy_pipeline.core.timeutil import parse_duration
from energy_pipeline.forecasting.models import DefaultParams

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "mqtt": {"host": "hivemq"},
    "kafka": {"bootstrapServers": "kafka:9092"},
    "database": {"urlSecret": {"name": "pg", "key": "url"}},
}
NEEDED = render.first_training_hours(SPEC)
ENOUGH = History("site-1", NEEDED, NEEDED)
SHORT = History("site-1", NEEDED - 1, NEEDED)


def plan(promoted: int | None = 0, history: History | None = ENOUGH,
         jobs: tuple[TrainingJob, ...] = (), paused: bool = False,
         now: datetime = T0) -> FirstTraining | None:
    return plan_first_training("demo", promoted, history, jobs, paused, now)


def failed(attempt: int = 1, at: datetime = T0) -> TrainingJob:
    return TrainingJob("demo-train-first", "uid-1", failed=True, attempt=attempt,
                       finished_at=at, reason="BackoffLimitExceeded")


# -- how much history ---------------------------------------------------------------------------

def test_the_threshold_is_what_the_default_model_needs_to_fit() -> None:
    # Taken from the training code (not a number of the operator's own).
    assert NEEDED == DefaultParams().min_train_hours == 336
    spec = copy.deepcopy(SPEC)
    spec["forecast"] = {"modelParameters": {"min_train_hours": 200}}
    assert render.first_training_hours(spec) == 200
    # Never more than a training run reads: it would wait forever.
    spec["forecast"] = {"trainHistoryDays": 7}
    assert render.first_training_hours(spec) == 7 * 24
    spec["forecast"] = {"modelParameters": {"min_train_hours": 0}}
    assert render.first_training_hours(spec) == 1  # `train` skips a site without any hour


# -- the decision -------------------------------------------------------------------------------

def test_nothing_is_owed_once_a_model_is_promoted_or_while_that_is_unknown() -> None:
    assert plan(promoted=1) is None
    assert plan(promoted=None) is None


def test_too_little_history_waits_and_says_how_much_there_is() -> None:
    for history in (SHORT, History(None, 0, NEEDED), None):
        waiting = plan(history=history)
        assert waiting is not None
        assert (waiting.state, waiting.action, waiting.problem) == ("WaitingForHistory", "", None)
        assert "starts Job demo-train-first once a site has" in waiting.message
        # The manual route stays open, under a name that does not block the automatic one.
        assert "kubectl create job --from=cronjob/demo-train demo-train-now" in waiting.message
    assert f"site-1 has {NEEDED - 1} of {NEEDED} hours" in plan(history=SHORT).message
    assert f"0 of {NEEDED} hours" in plan(history=History(None, 0, NEEDED)).message


def test_enough_history_and_no_job_creates_the_first_attempt() -> None:
    start = plan()
    assert start is not None
    assert (start.state, start.action, start.attempt, start.job) == (
        "Running", "create", 1, "demo-train-first")
    assert "kubectl logs job/demo-train-first" in start.message
    assert start.problem is None


def test_paused_starts_nothing() -> None:
    paused = plan(paused=True)
    assert paused is not None and (paused.state, paused.action) == ("Paused", "")


def test_a_running_job_is_waited_for() -> None:
    ours = TrainingJob("demo-train-first", "u", attempt=2)
    running = plan(jobs=(ours,))
    assert running is not None
    assert (running.state, running.action, running.attempt) == ("Running", "", 2)
    # One the CronJob started (on schedule, or by hand) trains the first model just as well.
    cron = TrainingJob("demo-train-29400000", "u2")
    running = plan(jobs=(cron,))
    assert running is not None
    assert (running.state, running.action, running.job) == ("Running", "", "demo-train-29400000")
    assert "started by CronJob" in running.message
    # A finished CronJob Job is no reason to wait.
    done = TrainingJob("demo-train-29400000", "u2", succeeded=True)
    assert plan(jobs=(done,)).action == "create"


def test_a_failed_job_is_retried_after_a_growing_bounded_backoff() -> None:
    assert [first_training_retry_delay(n) for n in (1, 2, 3)] == [
        timedelta(minutes=10), timedelta(minutes=20), timedelta(minutes=40)]
    assert first_training_retry_delay(10) == first_training_retry_delay(1000) == timedelta(
        hours=6)

    recent = plan(jobs=(failed(),), now=T0 + timedelta(minutes=9))
    assert recent is not None
    assert (recent.state, recent.action) == ("Failed", "")
    assert recent.retry_at == T0 + timedelta(minutes=10)
    assert recent.problem is not None and not recent.problem.blocking  # ingestion works on
    assert recent.problem.reason == "FirstTrainingFailed"
    assert "kubectl logs job/demo-train-first" in recent.problem.message
    assert "BackoffLimitExceeded" in recent.problem.message
    assert "2026-01-01T12:10:00Z" in recent.problem.message

    due = plan(jobs=(failed(),), now=T0 + timedelta(minutes=10))
    assert due is not None
    assert (due.state, due.action, due.attempt) == ("Running", "retry", 2)
    # The third failure waits 40 minutes.
    third = plan(jobs=(failed(attempt=3),), now=T0 + timedelta(minutes=39))
    assert third is not None and third.action == ""
    assert plan(jobs=(failed(attempt=3),), now=T0 + timedelta(minutes=40)).action == "retry"
    # Due, but paused or the history gone: no new Job.
    assert plan(jobs=(failed(),), now=T0 + timedelta(hours=1), paused=True).action == ""
    assert plan(jobs=(failed(),), now=T0 + timedelta(hours=1), history=SHORT).action == ""


def test_a_job_that_succeeded_without_a_model_is_reported_not_repeated() -> None:
    done = TrainingJob("demo-train-first", "u", succeeded=True)
    result = plan(jobs=(done,))
    assert result is not None
    assert (result.state, result.action) == ("NoModel", "")
    assert result.problem is not None and result.problem.reason == "FirstTrainingNoModel"
    assert "kubectl delete job demo-train-first" in result.problem.message
    assert "kubectl logs job/demo-train-first" in result.problem.message


def test_threshold_is_inclusive() -> None:
    assert plan(history=History("s", NEEDED, NEEDED)).action == "create"
    assert plan(history=History("s", NEEDED - 1, NEEDED)).action == ""


# -- reading a Job ----------------------------------------------------------------------------

def job(conditions: list[dict[str, str]], attempt: str | None = "2") -> dict[str, Any]:
    annotations = {FIRST_TRAINING_ATTEMPT_ANNOTATION: attempt} if attempt else {}
    return {"metadata": {"name": "demo-train-first", "uid": "u1", "annotations": annotations,
                         "creationTimestamp": "2026-01-01T11:00:00Z"},
            "status": {"conditions": conditions}}


def test_a_jobs_verdict_comes_from_its_terminal_conditions() -> None:
    pending = training_job_from(job([], attempt=None))
    assert (pending.active, pending.attempt, pending.finished_at) == (True, 1, None)
    # FailureTarget alone: pods still terminating, no verdict yet.
    assert training_job_from(job([{"type": "FailureTarget", "status": "True"}])).active
    gone = training_job_from(job([
        {"type": "FailureTarget", "status": "True"},
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
         "message": "Job was active longer than specified deadline",
         "lastTransitionTime": "2026-01-01T12:00:00Z"}]))
    assert (gone.failed, gone.succeeded, gone.active, gone.attempt) == (True, False, False, 2)
    assert gone.finished_at == T0
    assert gone.reason.startswith("DeadlineExceeded: Job was active")
    ok = training_job_from(job([{"type": "Complete", "status": "True",
                                 "lastTransitionTime": "2026-01-01T12:00:00Z"}]))
    assert (ok.succeeded, ok.failed, ok.active) == (True, False, False)
    assert training_job_from(job([], attempt="x")).attempt == 1


# -- the rendered Job -----------------------------------------------------------------------

def test_the_job_is_the_cronjobs_job_template() -> None:
    children = {(c["kind"], c["metadata"]["name"]): c
                for c in render.render_children("demo", "energy", SPEC)}
    cron = children[("CronJob", "demo-train")]
    rendered = render.first_training_job("demo", "energy", SPEC, attempt=3)
    assert (rendered["apiVersion"], rendered["kind"]) == ("batch/v1", "Job")
    assert rendered["metadata"]["name"] == "demo-train-first"
    assert rendered["metadata"]["namespace"] == "energy"
    assert rendered["metadata"]["labels"] == cron["metadata"]["labels"]
    assert rendered["metadata"]["labels"]["app.kubernetes.io/component"] == "train"
    assert rendered["metadata"]["annotations"] == {FIRST_TRAINING_ATTEMPT_ANNOTATION: "3"}
    assert rendered["spec"] == cron["spec"]["jobTemplate"]["spec"]
    pod = rendered["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"] == ["energy-pipeline", "train"]
    assert container["image"] == crd.DEFAULT_IMAGE
    # Not a child that apply_children keeps: the reconciler creates it once.
    assert "Job" not in {c["kind"] for c in render.render_children("demo", "energy", SPEC)}
    # A later spec (new image) renders a later Job the same way.
    newer = render.first_training_job("demo", "energy", {**SPEC, "image": "x/y:2"})
    assert newer["spec"]["template"]["spec"]["containers"][0]["image"] == "x/y:2"


# -- status and events --------------------------------------------------------------------------

READY = {"bridge": Workload(2, 2, 2), "ingest": Workload(2, 2, 2),
         "inference": Workload(2, 0, 2)}


def observed(first: FirstTraining | None, promoted: int | None = 0) -> Observed:
    problems = (first.problem,) if first is not None and first.problem else ()
    return Observed(generation=1, paused=False, workloads=READY,
                    topics=TopicsObserved(("e.t",), "Ready", 4, 2), schema_version=2,
                    schema_latest=2, promoted_models=promoted, first_training=first,
                    problems=problems)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_status_says_where_the_first_training_stands() -> None:
    waiting = build_status(observed(plan(history=SHORT)), "demo", None, T0)
    c = conditions(waiting)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("True", "Ready")
    assert f"site-1 has {NEEDED - 1} of {NEEDED} hours" in c["Ready"]["message"]
    assert waiting["firstTraining"] == {"state": "WaitingForHistory", "site": "site-1",
                                        "historyHours": NEEDED - 1, "neededHours": NEEDED}

    running = build_status(observed(plan()), "demo", waiting, T0)
    c = conditions(running)
    assert c["Ready"]["status"] == "True"
    assert "Job demo-train-first is training it (attempt 1" in c["Ready"]["message"]
    assert running["firstTraining"]["state"] == "Running"
    assert running["firstTraining"]["job"] == "demo-train-first"

    failing = build_status(observed(plan(jobs=(failed(),))), "demo", running, T0)
    c = conditions(failing)
    # Ingestion still works: Ready stays True, Degraded names the fix.
    assert c["Ready"]["status"] == "True"
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "FirstTrainingFailed")
    assert "kubectl logs job/demo-train-first" in c["Degraded"]["message"]
    assert failing["firstTraining"]["retryAt"] == "2026-01-01T12:10:00Z"

    # A model: the section goes (and so does the Ready note); unknown keeps the last seen.
    promoted = build_status(observed(None, promoted=1), "demo", failing, T0)
    assert "firstTraining" not in promoted
    assert status_patch(promoted, failing)["firstTraining"] is None
    unknown = build_status(observed(None, promoted=None), "demo", failing, T0)
    assert unknown["firstTraining"] == failing["firstTraining"]


def test_events_on_waiting_and_on_the_first_model() -> None:
    waiting = plan(history=SHORT)
    [(reason, message)] = first_training_events(waiting, 0, {})
    assert reason == "WaitingForHistory" and f"{NEEDED - 1} of {NEEDED}" in message
    # Once per wait, not on every pass.
    assert first_training_events(waiting, 0, {"firstTraining": {"state": "WaitingForHistory"}
                                              }) == []
    before = {"promotedModels": 0,
              "firstTraining": {"state": "Running", "job": "demo-train-first"}}
    [(reason, message)] = first_training_events(None, 4, before)
    assert reason == "FirstModelPromoted"
    assert "4 model(s) promoted (trained by Job demo-train-first)" in message
    assert first_training_events(None, 4, {"promotedModels": 4}) == []
    assert first_training_events(None, None, before) == []


# -- the chart's simulator feeds it ---------------------------------------------------------

def test_the_charts_simulator_backfills_what_the_first_training_waits_for() -> None:
    chart = Path(__file__).resolve().parents[2] / "charts" / "energy-platform"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    simulator = values["simulator"]
    needed = render.first_training_hours({**SPEC, **values["example"]["extraSpec"]})
    backfill = parse_duration(simulator["backfill"])
    interval = parse_duration(simulator["interval"])
    # Every hour gets consumption readings, and a day more than needed: the first and newest
    # hours are partly filled, the newest still open, and the margin keeps it robust.
    assert interval <= timedelta(hours=1)
    assert backfill >= timedelta(hours=needed + 24)
    # Small enough for a 2-core node to take in within minutes.
    readings = simulator["sites"] * len(SENSOR_NAMES) * simulator["devices"] * (
        backfill // interval)
    assert readings <= 60_000, readings
