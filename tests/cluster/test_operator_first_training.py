"""The operator starts a pipeline's first training by itself once enough history is stored.

Against a real API server, PostgreSQL and Kafka, with `energy-pipeline operator` running as
its ServiceAccount (the chart's RBAC), as in test_operator.py. The history is written
into `hourly_features` the way ingest leaves it. kwok plays the kubelets, and its Job pods
"complete" at once without running anything, so the test runs the Job's container itself
(`energy-pipeline train` with the Job's environment, as the kubelet would resolve it).
"""

from __future__ import annotations

import base64
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from confluent_kafka.admin import AdminClient
from energy_harness.localstack import KafkaCluster, PostgresServer
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.localstack.postgres import dsn
from energy_harness.localstack.workers import WorkerProcess
from energy_harness.operator_local import OperatorProcess
from energy_harness.synthetic import synthetic_building
from energy_harness.testing import admin_sql, wait_for
from energy_operator import render
from energy_operator.kube import Kube
from energy_operator.naming import FIRST_TRAINING_ATTEMPT_ANNOTATION, labels
from energy_operator.reconcile import registry_facts
from energy_pipeline.dataplane.topics import delete_topics
from energy_pipeline.forecasting.hourly_db import read_site_rows, write_hourly_frame

from .conftest import leading_operator

pytestmark = pytest.mark.cluster

API = "energy.pipeline.dev/v1alpha1"
KIND = "EnergyPipeline"
NAME = "demo"
JOB = f"{NAME}-train-first"
INTERVAL = 2  # RECONCILE_INTERVAL_S of the operator under test
START = datetime(2025, 1, 6, tzinfo=UTC)  # synthetic_building's first hour
# Few boosting rounds: this is about when training starts, not about the model's quality.
FAST_MODEL = {"num_boost_round": 30, "early_stopping_rounds": 5, "max_rows": 8000}


@pytest.fixture(scope="module")
def operator(kube: KubeControlPlane, operator_kubeconfig: Path, kafka_cluster: KafkaCluster,
             postgres: PostgresServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with leading_operator(operator_kubeconfig, tmp_path_factory.mktemp("operator-logs"),
                          INTERVAL) as proc:
        yield proc


@dataclass
class Pipeline:
    client: Kube
    namespace: str
    database_url: str
    bootstrap: str
    prefix: str

    def spec(self, **forecast: Any) -> dict[str, Any]:
        return {
            # The test's own names (see tests/cluster/test_operator.py's Pipeline.spec).
            "mqtt": {"host": "127.0.0.1", "topicRoot": self.prefix},
            "kafka": {"bootstrapServers": self.bootstrap, "topicPrefix": self.prefix,
                      "consumerGroup": f"{self.prefix}-ingest", "brokers": 3},
            "database": {"urlSecret": {"name": "pg", "key": "url"}, "schema": "public"},
            "forecast": {"modelParameters": FAST_MODEL, **forecast},
        }

    def apply(self, spec: dict[str, Any]) -> None:
        self.client.create({"apiVersion": API, "kind": KIND,
                            "metadata": {"name": NAME, "namespace": self.namespace},
                            "spec": spec})

    def get(self) -> dict[str, Any]:
        return dict(self.client.get(API, KIND, self.namespace, NAME))

    def condition(self, type_: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        status = (body or self.get()).get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == type_), {})

    def first_training(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return dict(((body or self.get()).get("status") or {}).get("firstTraining") or {})

    def wait_until(self, check: Callable[[dict[str, Any]], bool], timeout: float,
                   what: str) -> dict[str, Any]:
        """The pipeline as soon as `check` holds for it."""
        def found() -> dict[str, Any] | None:
            body = self.get()
            return body if check(body) else None

        return wait_for(found, timeout, what)

    def wait_state(self, state: str, timeout: float = 30) -> dict[str, Any]:
        return self.wait_until(lambda b: self.first_training(b).get("state") == state,
                               timeout, f"status.firstTraining.state {state}")

    def events(self, reason: str) -> list[dict[str, Any]]:
        return [e for e in self.client.list("v1", "Event", self.namespace)
                if e["involvedObject"]["kind"] == KIND and e["reason"] == reason]

    def wait_event(self, reason: str, timeout: float = 15) -> dict[str, Any]:
        return wait_for(lambda: (self.events(reason) or [None])[-1], timeout, f"event {reason}")

    def jobs(self) -> list[dict[str, Any]]:
        return self.client.list("batch/v1", "Job", self.namespace)

    def job(self) -> dict[str, Any] | None:
        return self.client.get("batch/v1", "Job", self.namespace, JOB)

    def sql(self, statement: str, *args: Any) -> None:
        with psycopg2.connect(self.database_url) as conn, conn.cursor() as cur:
            cur.execute(statement, args)
        conn.close()

    def seed(self, site: str, hours: int) -> None:
        """`hours` hours of a site from START, as ingest leaves them in hourly_features."""
        with psycopg2.connect(self.database_url) as conn:
            write_hourly_frame(conn, site, synthetic_building(hours, seed=len(site)))
        conn.close()

    def closed_known_hours(self, site: str, days: int = 90) -> int:
        """What `train` itself reads of the site: its closed hours with a consumption value."""
        with psycopg2.connect(self.database_url) as conn:
            rows, _ = read_site_rows(conn, site, days)
        conn.close()
        return sum(not math.isnan(r.avg_energyconsumption) for r in rows)


@pytest.fixture
def pipeline(kube: KubeControlPlane, operator: OperatorProcess, kafka_cluster: KafkaCluster,
             postgres: PostgresServer) -> Iterator[Pipeline]:
    suffix = uuid.uuid4().hex[:8]
    namespace, database = f"first-{suffix}", f"first_{suffix}"
    client = Kube(kube.api_client)
    client.request("POST", "/api/v1/namespaces",
                   body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    admin_sql(postgres, f'CREATE DATABASE "{database}"')
    url = dsn(postgres.port, postgres.password, database)
    client.create({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "pg", "namespace": namespace},
                   "stringData": {"url": url}})
    result = Pipeline(client, namespace, url, kafka_cluster.bootstrap_servers, f"ft{suffix}")
    try:
        yield result
    finally:
        for item in client.list(API, KIND, namespace):
            client.request("DELETE", f"/apis/{API}/namespaces/{namespace}/energypipelines/"
                           f"{item['metadata']['name']}")
        wait_for(lambda: not client.list(API, KIND, namespace), 30, "pipelines deleted")
        client.request("DELETE", f"/api/v1/namespaces/{namespace}")
        delete_topics(AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers}),
                      render.topic_names(result.spec()))
        admin_sql(postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def resolved_env(client: Kube, namespace: str, container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet resolves it (ConfigMap and Secret keys)."""
    out: dict[str, str] = {}
    for entry in container["env"]:
        source = entry.get("valueFrom") or {}
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            out[entry["name"]] = client.get("v1", "ConfigMap", namespace, ref["name"])["data"][
                ref["key"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = client.get("v1", "Secret", namespace, ref["name"])
            out[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        else:
            out[entry["name"]] = entry["value"]
    return out


def owned_by_pipeline(obj: dict[str, Any], pipeline: Pipeline) -> bool:
    (owner,) = obj["metadata"]["ownerReferences"]
    return (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        KIND, NAME, pipeline.get()["metadata"]["uid"], True)


def test_first_training_starts_once_enough_history_is_stored(
    pipeline: Pipeline, operator: OperatorProcess, tmp_path: Path
) -> None:
    needed = render.first_training_hours(pipeline.spec())
    pipeline.apply(pipeline.spec())
    body = pipeline.wait_state("WaitingForHistory")
    # No model and no history: Ready all the same (ingestion does not need inference); the
    # message says what inference waits for and the status how far the history is.
    body = pipeline.wait_until(lambda b: pipeline.condition("Ready", b).get("status") == "True",
                               60, "Ready")
    ready = pipeline.condition("Ready", body)
    assert ready["reason"] == "Ready"
    assert (f"inference waits for its first model: the operator starts Job {JOB} once a site "
            f"has {needed} hours of history (now: 0 of {needed} hours)"
            in ready["message"]), ready["message"]
    assert f"kubectl create job --from=cronjob/{NAME}-train {NAME}-train-now" in ready["message"]
    assert pipeline.first_training(body) == {"state": "WaitingForHistory", "historyHours": 0,
                                             "neededHours": needed}
    assert f"0 of {needed} hours" in pipeline.wait_event("WaitingForHistory")["message"]

    # One hour short, two ways: site-a's newest hour is still open (no watermark); site-b has
    # more hours stored but ingest's forecasting watermark closed fewer of them.
    # (site-b's watermark first: an operator pass between its hours and its watermark would
    # count all of them closed and rightly start the training.)
    pipeline.seed("site-a", needed)
    pipeline.sql("INSERT INTO forecast_sites (site_id, watermark, closed_through) "
                 "VALUES ('site-b', %s, %s)", START + timedelta(hours=needed - 1),
                 START + timedelta(hours=needed - 2))
    pipeline.seed("site-b", needed + 48)
    # The operator counts as the training reads: the same hours for both sites.
    assert pipeline.closed_known_hours("site-a") == pipeline.closed_known_hours("site-b") == (
        needed - 1)
    assert registry_facts(pipeline.database_url, 90).history == ("site-a", needed - 1)
    body = pipeline.wait_until(
        lambda b: pipeline.first_training(b).get("historyHours") == needed - 1, 30,
        f"{needed - 1} hours in the status")
    assert pipeline.first_training(body) == {"state": "WaitingForHistory", "site": "site-a",
                                             "historyHours": needed - 1, "neededHours": needed}
    assert f"site-a has {needed - 1} of {needed} hours" in pipeline.condition(
        "Ready", body)["message"]
    time.sleep(3 * INTERVAL)  # several passes with too little history: no Job
    assert not pipeline.jobs()
    assert len(pipeline.events("WaitingForHistory")) == 1  # said once, not on every pass

    # The missing hour arrives: the first training starts, as the CronJob's Job would.
    pipeline.seed("site-a", needed + 1)
    job = wait_for(pipeline.job, 30, f"Job {JOB}")
    started = pipeline.wait_event("FirstTrainingStarted")
    assert f"started Job {JOB} to train the first model: site-a has {needed} of {needed}" in (
        started["message"])
    assert owned_by_pipeline(job, pipeline)
    assert job["metadata"]["labels"] == labels(NAME, "train")
    assert job["metadata"]["annotations"][FIRST_TRAINING_ATTEMPT_ANNOTATION] == "1"
    cron = pipeline.client.get("batch/v1", "CronJob", pipeline.namespace, f"{NAME}-train")
    template = cron["spec"]["jobTemplate"]["spec"]["template"]
    assert job["spec"]["template"]["spec"] == template["spec"]
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        assert job["spec"][key] == cron["spec"]["jobTemplate"]["spec"][key]

    # kwok "completes" the pod without training: the operator says so and starts no other.
    body = pipeline.wait_state("NoModel")
    degraded = pipeline.condition("Degraded", body)
    assert (degraded["status"], degraded["reason"]) == ("True", "FirstTrainingNoModel")
    assert f"kubectl logs job/{JOB}" in degraded["message"]
    assert f"kubectl delete job {JOB}" in degraded["message"]
    assert pipeline.condition("Ready", body)["status"] == "True"
    pipeline.wait_event("FirstTrainingNoModel")
    uid = job["metadata"]["uid"]
    time.sleep(2 * INTERVAL)
    assert [j["metadata"]["uid"] for j in pipeline.jobs()] == [uid]

    # The fix the message names: delete the Job, and the operator starts it anew.
    pipeline.client.delete("batch/v1", "Job", pipeline.namespace, JOB)
    job = wait_for(lambda: [j for j in pipeline.jobs() if j["metadata"]["uid"] != uid], 30,
                   f"a new Job {JOB}")[0]
    assert owned_by_pipeline(job, pipeline)

    # What the Job's pod would do on a kubelet: `energy-pipeline train` with its environment.
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["energy-pipeline", "train"]
    env = resolved_env(pipeline.client, pipeline.namespace, container)
    assert env["DATABASE_URL"] == pipeline.database_url
    basics = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TZ"}}
    train = WorkerProcess("train", ["train"], {**basics, **env}, tmp_path / "logs")
    train.start(wait_ready=False)
    assert train.wait(240) == 0, train.process.log_tail() if train.process else ""

    # With exactly the hours the operator waited for, site-a got a real model, not the
    # seasonal-naive fallback; both sites' models are promoted.
    with psycopg2.connect(pipeline.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT site_id, promoted, params FROM models ORDER BY site_id")
        models = {site: (promoted, params) for site, promoted, params in cur.fetchall()}
    conn.close()
    assert set(models) == {"site-a", "site-b"} and all(p for p, _ in models.values())
    assert "fallback" not in models["site-a"][1]["training"], models["site-a"][1]["training"]
    assert models["site-a"][1]["training"]["known_hours"] == needed

    promoted = pipeline.wait_event("FirstModelPromoted", timeout=30)
    assert f"2 model(s) promoted (trained by Job {JOB})" in promoted["message"]
    body = pipeline.wait_until(
        lambda b: not pipeline.first_training(b)
        and pipeline.condition("Degraded", b).get("status") == "False",
        30, "the first training done and Degraded cleared")
    assert body["status"]["promotedModels"] == 2
    assert "inference waits" not in pipeline.condition("Ready", body)["message"]
    assert [j["metadata"]["uid"] for j in pipeline.jobs()] == [job["metadata"]["uid"]]
    denied = [line for line in operator.log_text().splitlines() if "is forbidden" in line]
    assert not denied, denied[:3]

    # Ingest records what a site's newest forecast lacked; the status names it (the API
    # server keeps only fields the CRD's status schema declares) and drops it once none is.
    def record_missing(site: str, missing: list[str]) -> None:
        with psycopg2.connect(pipeline.database_url) as conn, conn.cursor() as cur:
            cur.execute(
                """INSERT INTO forecast_sites (site_id, watermark, closed_through,
                                              missing_inputs, inputs_origin)
                   VALUES (%s, now(), now(), %s, now())
                   ON CONFLICT (site_id) DO UPDATE SET missing_inputs = EXCLUDED.missing_inputs""",
                (site, missing))
        conn.close()

    record_missing("site-a", [])
    record_missing("site-b", ["weather_forecast"])
    body = pipeline.wait_until(lambda b: "missingInputs" in b["status"], 30,
                               "status.missingInputs")
    assert body["status"]["missingInputs"] == [
        {"input": "weather_forecast", "sites": 1, "siteNames": ["site-b"]}]
    record_missing("site-b", [])
    pipeline.wait_until(lambda b: "missingInputs" not in b["status"], 30,
                        "status.missingInputs gone")


def test_a_failed_first_training_is_reported_with_its_logs_and_retried_later(
    pipeline: Pipeline, kube: KubeControlPlane
) -> None:
    # A pod no kwok node fits stays Pending, so the Job is still running when it is failed.
    spec = pipeline.spec()
    spec["forecast"]["trainingResources"] = {"requests": {"cpu": "64"}}
    pipeline.apply(spec)
    pipeline.wait_state("WaitingForHistory", timeout=60)
    pipeline.seed("site-a", render.first_training_hours(spec) + 1)
    job = wait_for(pipeline.job, 30, f"Job {JOB}")
    body = pipeline.wait_state("Running")
    assert pipeline.first_training(body)["job"] == JOB
    assert f"Job {JOB} is training it (attempt 1; kubectl logs job/{JOB})" in (
        pipeline.condition("Ready", body)["message"])

    # The Job controller's verdict, as it would write it after the pod's retries failed.
    failed_at = datetime.now(UTC).replace(microsecond=0)
    stamp = failed_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    start = job["status"].get("startTime") or stamp
    verdict = {"status": "True", "lastProbeTime": stamp, "lastTransitionTime": stamp,
               "reason": "BackoffLimitExceeded", "message": "Job has reached the specified "
               "backoff limit"}
    kube.kubectl("patch", "job", JOB, "-n", pipeline.namespace, "--subresource=status",
                 "--type=merge", "-p", json.dumps({"status": {
                     "startTime": start, "active": 0, "ready": 0,
                     "conditions": [{"type": "FailureTarget", **verdict},
                                    {"type": "Failed", **verdict}]}}))

    body = pipeline.wait_state("Failed")
    retry_at = (failed_at + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert pipeline.first_training(body)["retryAt"] == retry_at
    degraded = pipeline.condition("Degraded", body)
    assert (degraded["status"], degraded["reason"]) == ("True", "FirstTrainingFailed")
    assert f"kubectl logs job/{JOB}" in degraded["message"]
    assert "BackoffLimitExceeded" in degraded["message"]
    assert f"tries again after {retry_at}" in degraded["message"]
    ready = pipeline.condition("Ready", body)
    assert ready["status"] == "True"  # ingestion goes on
    assert f"its first training failed (Job {JOB}, attempt 1)" in ready["message"]
    warning = pipeline.wait_event("FirstTrainingFailed")
    assert warning["type"] == "Warning"
    # Not before the backoff: the failed Job stays (its logs with it), no second one, and the
    # warning is not repeated on every pass.
    time.sleep(3 * INTERVAL)
    assert [j["metadata"]["uid"] for j in pipeline.jobs()] == [job["metadata"]["uid"]]
    assert len(pipeline.events("FirstTrainingFailed")) == 1
    assert pipeline.first_training()["state"] == "Failed"
