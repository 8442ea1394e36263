"""The operator against a real API server, real Kafka (3 brokers) and real PostgreSQL.

`energy-pipeline operator` runs as a local process with the ServiceAccount token and the
RBAC of the operator chart as helm renders it (so what ships is what is exercised); kwok
plays the kubelets, so pods turn Ready without running. The operator itself reaches Kafka
and PostgreSQL on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from confluent_kafka.admin import AdminClient
from energy_harness.localstack import KafkaCluster, MosquittoBroker, PostgresServer
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.localstack.postgres import dsn
from energy_harness.localstack.process import free_port
from energy_harness.localstack.workers import WorkerProcess
from energy_harness.operator_local import OperatorProcess
from energy_harness.testing import admin_sql, wait_for
from energy_operator import certificates, crd, render
from energy_operator.kube import Kube
from energy_operator.reconcile import Outcome, kafka_config
from energy_pipeline.core.settings import KafkaSettings, load
from energy_pipeline.dataplane.topics import delete_topics, describe_topics
from energy_pipeline.db.connect import with_schema
from energy_pipeline.db.migrate import latest_version, schema_version

from .conftest import leading_operator

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "examples" / "energypipeline.yaml"
API = "energy.pipeline.dev/v1alpha1"
KIND = "EnergyPipeline"
INTERVAL = 3  # RECONCILE_INTERVAL_S of the operator under test


def contains(live: Any, want: Any, path: str = "") -> list[str]:
    """Where `live` differs from `want`, ignoring what the server added (defaults, status)."""
    if isinstance(want, dict):
        if not isinstance(live, dict):
            return [f"{path}: {live!r} is not an object"]
        out: list[str] = []
        for key, value in want.items():
            if key not in live:
                out.append(f"{path}.{key}: missing")
            else:
                out += contains(live[key], value, f"{path}.{key}")
        return out
    if isinstance(want, list):
        if not isinstance(live, list) or len(live) != len(want):
            return [f"{path}: {live!r} != {want!r}"]
        return [m for i, (a, b) in enumerate(zip(live, want, strict=True))
                for m in contains(a, b, f"{path}[{i}]")]
    return [] if live == want else [f"{path}: {live!r} != {want!r}"]


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def operator(
    kube: KubeControlPlane,
    operator_kubeconfig: Path,
    kafka_cluster: KafkaCluster,
    postgres: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    with leading_operator(operator_kubeconfig, tmp_path_factory.mktemp("operator-logs"),
                          INTERVAL) as proc:
        yield proc


@dataclass
class Pipeline:
    """One EnergyPipeline in a namespace of its own, with its own database and topic prefix."""

    kube: KubeControlPlane
    client: Kube
    namespace: str
    database_url: str
    prefix: str
    bootstrap: str
    name: str = "demo"
    mqtt: tuple[str, int] = ("127.0.0.1", 1883)
    created: list[str] = field(default_factory=list)
    # PostgreSQL roles a test created; dropped after the database.
    roles: list[str] = field(default_factory=list)

    def spec(self, **sections: Any) -> dict[str, Any]:
        # The test's own topic root, prefix and group (not the ones derived from the shared
        # name "demo"): a pipeline of an earlier test, still being deleted, never clashes.
        # Its own database too, in the default schema.
        spec: dict[str, Any] = {
            "mqtt": {"host": self.mqtt[0], "port": self.mqtt[1], "topicRoot": self.prefix},
            "kafka": {"bootstrapServers": self.bootstrap, "topicPrefix": self.prefix,
                      "consumerGroup": f"{self.prefix}-ingest", "brokers": 3},
            "database": {"urlSecret": {"name": "pg", "key": "url"}, "schema": "public"},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(spec.get(key), dict):
                spec[key].update(value)
            else:
                spec[key] = value
        return spec

    def apply(self, spec: dict[str, Any], name: str | None = None) -> None:
        body = {"apiVersion": API, "kind": KIND,
                "metadata": {"name": name or self.name, "namespace": self.namespace},
                "spec": spec}
        self.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))

    def patch(self, spec: dict[str, Any]) -> None:
        self.client.merge_patch(API, KIND, self.namespace, self.name, {"spec": spec})

    def get(self) -> dict[str, Any]:
        body = self.client.get(API, KIND, self.namespace, self.name)
        assert body is not None
        return dict(body)

    def condition(self, type_: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        status = (body or self.get()).get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == type_), {})

    def wait_condition(self, type_: str, status: str, reason: str | None = None,
                       timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            body = self.get()
            c = self.condition(type_, body)
            generation = body["metadata"]["generation"]
            if (c.get("status") == status and (reason is None or c.get("reason") == reason)
                    and body["status"].get("observedGeneration") == generation):
                return body
            return None

        return wait_for(check, timeout, f"{type_}={status} {reason or ''} of {self.name}")

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        return self.wait_condition("Ready", "True", timeout=timeout)

    def children(self) -> dict[tuple[str, str], dict[str, Any]]:
        found = {}
        for api_version, kind in (("v1", "ConfigMap"), ("v1", "ServiceAccount"),
                                  ("v1", "Service"), ("apps/v1", "Deployment"),
                                  ("batch/v1", "CronJob"), ("policy/v1", "PodDisruptionBudget"),
                                  ("networking.k8s.io/v1", "NetworkPolicy")):
            for item in self.client.list(api_version, kind, self.namespace,
                                         f"app.kubernetes.io/instance={self.name}"):
                found[(kind, item["metadata"]["name"])] = item
        return found

    def versions(self) -> dict[tuple[str, str], str]:
        return {k: v["metadata"]["resourceVersion"] for k, v in self.children().items()}

    def deployment(self, worker: str) -> dict[str, Any]:
        found = self.client.get("apps/v1", "Deployment", self.namespace, f"{self.name}-{worker}")
        assert found is not None, f"{self.name}-{worker} missing"
        return dict(found)

    def events(self) -> list[dict[str, Any]]:
        events = self.client.list("v1", "Event", self.namespace)
        return [e for e in events if e["involvedObject"]["kind"] == KIND]

    def event_reasons(self) -> list[str]:
        return [e["reason"] for e in self.events()]

    def wait_event(self, reason: str, timeout: float = 10) -> None:
        wait_for(lambda: reason in self.event_reasons(), timeout, f"event {reason}")

    def topics(self) -> dict[str, Any]:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return describe_topics(admin, render.topic_names(self.spec()))


@pytest.fixture
def pipeline(
    kube: KubeControlPlane,
    operator: OperatorProcess,
    kafka_cluster: KafkaCluster,
    postgres: PostgresServer,
) -> Iterator[Pipeline]:
    suffix = uuid.uuid4().hex[:8]
    namespace, database, prefix = f"op-{suffix}", f"op_{suffix}", f"op{suffix}"
    client = Kube(kube.api_client)
    client.request("POST", "/api/v1/namespaces",
                   body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    admin_sql(postgres, f'CREATE DATABASE "{database}"')
    url = dsn(postgres.port, postgres.password, database)
    client.create({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "pg", "namespace": namespace},
                   "stringData": {"url": url}})
    result = Pipeline(kube, client, namespace, url, prefix, kafka_cluster.bootstrap_servers)
    try:
        yield result
    finally:
        # The pipelines first, so the operator stops acting before the namespace goes away.
        for item in client.list(API, KIND, namespace):
            client.request("DELETE", f"/apis/{API}/namespaces/{namespace}/energypipelines/"
                           f"{item['metadata']['name']}")
        wait_for(lambda: not client.list(API, KIND, namespace), 30, "pipelines deleted")
        client.request("DELETE", f"/api/v1/namespaces/{namespace}")
        delete_topics(AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers}),
                      render.topic_names(result.spec()))
        admin_sql(postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in result.roles:
            admin_sql(postgres, f'DROP ROLE IF EXISTS "{role}"')


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

def test_example_becomes_ready_with_children_topics_and_schema(pipeline: Pipeline) -> None:
    """manifests/examples/energypipeline.yaml, pointed at the local Kafka and PostgreSQL."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    spec = doc["spec"]
    # The local services of this test: a plain Kafka, and PostgreSQL under the harness's own
    # CA (no broker runs: the pods are kwok's); the chart's secured ones are the node suite's
    # (tests/node/test_platform.py).
    for key in ("securityProtocol", "tls", "sasl"):
        del spec["kafka"][key]
    del spec["database"]["caSecret"]
    del spec["mqtt"]["tls"], spec["mqtt"]["credentialsSecret"]
    spec["mqtt"]["port"] = 1883
    # The example's names are the chart's (its ACLs name them); here the test's own.
    spec["mqtt"].update(topicRoot=pipeline.prefix, sharedGroup=pipeline.prefix)
    spec["kafka"].update(bootstrapServers=pipeline.bootstrap, topicPrefix=pipeline.prefix,
                         consumerGroup=f"{pipeline.prefix}-ingest")
    secret = spec["database"]["urlSecret"]
    pipeline.client.create({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": secret["name"], "namespace": pipeline.namespace},
                            "stringData": {secret["key"]: pipeline.database_url}})
    pipeline.name = doc["metadata"]["name"]
    started = time.monotonic()
    pipeline.kube.kubectl("apply", "-n", pipeline.namespace, "-f", "-", input=yaml.safe_dump(doc))
    waited = pipeline.kube.kubectl(
        "wait", "--for=condition=Ready", f"energypipeline/{pipeline.name}",
        "-n", pipeline.namespace, "--timeout=60s", timeout=70)
    assert "condition met" in waited.stdout
    assert time.monotonic() - started < 60

    body = pipeline.get()
    status = body["status"]
    assert status["observedGeneration"] == body["metadata"]["generation"]
    ready = pipeline.condition("Ready", body)
    assert ready["reason"] == "Ready" and ready["observedGeneration"] == status[
        "observedGeneration"]
    assert pipeline.condition("Degraded", body)["status"] == "False"

    # Every child exists, owned by the pipeline, with exactly the rendered spec.
    live = pipeline.children()
    rendered = render.render_children(pipeline.name, pipeline.namespace, spec)
    assert {(c["kind"], c["metadata"]["name"]) for c in rendered} == set(live)
    for child in rendered:
        obj = live[(child["kind"], child["metadata"]["name"])]
        (owner,) = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            KIND, pipeline.name, body["metadata"]["uid"], True)
        for section in ("spec", "data"):
            if section in child:
                assert not contains(obj[section], child[section]), (
                    child["kind"], contains(obj[section], child[section]))

    # Kafka: 7 topics with 4 partitions, each replicated twice; PostgreSQL: migrated.
    topics = pipeline.topics()
    assert len(topics) == 7
    assert {(t.partitions, t.replication_factor) for t in topics.values()} == {(4, 2)}
    # The example leaves spec.database.schema to the default: the pipeline's name.
    assert "schema" not in spec["database"]
    assert schema_version(with_schema(pipeline.database_url, "demo")) == latest_version()
    assert schema_version(pipeline.database_url) == 0  # nothing in public
    assert status["schemaVersion"] == latest_version()
    assert status["topics"]["state"] == "Ready"
    assert (status["ingestion"], status["inference"]) == ("4/4", "2/2")

    table = pipeline.kube.kubectl("get", "energypipeline", pipeline.name, "-n",
                                  pipeline.namespace).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "READY", "INGESTION", "INFERENCE"]
    assert table[1].split()[:4] == [pipeline.name, "True", "4/4", "2/2"]
    assert {"Created", "TopicsCreated", "Migrated"} <= set(pipeline.event_reasons())


def resolve_env(client: Kube, namespace: str, container: dict[str, Any],
                pod_name: str) -> dict[str, str]:
    """What the kubelet would put into the container's environment."""
    out: dict[str, str] = {}
    for entry in container["env"]:
        source = entry.get("valueFrom")
        if source is None:
            out[entry["name"]] = entry["value"]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            config = client.get("v1", "ConfigMap", namespace, ref["name"])
            out[entry["name"]] = config["data"][ref["key"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = client.get("v1", "Secret", namespace, ref["name"])
            out[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        else:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", source
            out[entry["name"]] = pod_name
    return out


def test_rendered_workers_run_locally_with_the_rendered_environment(
    pipeline: Pipeline, mqtt_broker: MosquittoBroker, postgres: PostgresServer, tmp_path: Path
) -> None:
    """The contract test: each rendered container's command, with exactly its environment
    (as the kubelet resolves it from the ConfigMap and Secrets), against the local stack.

    Only what a cluster provides is replaced: the ports the workers listen on (all pods have
    their own 8080 and 50051) and the inference Service's DNS name.
    """
    pipeline.mqtt = (mqtt_broker.host, mqtt_broker.port)
    pipeline.apply(pipeline.spec())
    pipeline.wait_ready()  # the operator migrated the schema: a read-only role can be granted
    reader_url = read_only_role(pipeline, postgres)
    pipeline.client.create({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": "pg-reader", "namespace": pipeline.namespace},
                            "stringData": {"url": reader_url}})
    pipeline.patch({"api": {"enabled": True, "databaseUrlSecret": {"name": "pg-reader"}}})
    pipeline.wait_ready()
    containers = {
        worker: pipeline.deployment(worker)["spec"]["template"]["spec"]["containers"][0]
        for worker in ("bridge", "ingest", "inference", "api")
    }
    cron = pipeline.client.get("batch/v1", "CronJob", pipeline.namespace, f"{pipeline.name}-train")
    containers["train"] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]

    # The Secrets the operator made, as the kubelet mounts them: the API's tokens file and
    # (mutual TLS is the default) each gRPC side's certificate, key and CA.
    tokens = mount_secret_volume(pipeline, "api", "api-tokens", tmp_path / "api")
    tokens_secret = pipeline.client.get("v1", "Secret", pipeline.namespace,
                                        f"{pipeline.name}-api-tokens")
    api_token = base64.b64decode(tokens_secret["data"]["token"]).decode()
    grpc_files = {
        worker: mount_secret_volume(pipeline, worker, "grpc-tls", tmp_path / f"{worker}-grpc")
        for worker in ("ingest", "inference")
    }

    grpc_port, api_port = free_port(), free_port()
    plumbing = {
        "inference": {"GRPC_PORT": str(grpc_port), **grpc_tls_files(grpc_files["inference"])},
        "ingest": {"INFERENCE_TARGET": f"dns:///127.0.0.1:{grpc_port}",
                   **grpc_tls_files(grpc_files["ingest"])},
        "api": {"API_PORT": str(api_port), "API_TOKENS_FILE": str(tokens["tokens"])},
    }
    # The one addition: in a cluster the target's host is the Service name the server's
    # certificate carries; here it is 127.0.0.1, so ingest is told which name to expect.
    added = {"ingest": {"GRPC_TLS_SERVER_NAME": certificates.server_names(
        pipeline.name, pipeline.namespace)[-1]}}
    basics = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TZ"}}
    envs: dict[str, dict[str, str]] = {}
    for worker, container in containers.items():
        assert container["command"] == ["energy-pipeline", worker]
        env = resolve_env(pipeline.client, pipeline.namespace, container, f"{worker}-0")
        assert set(plumbing.get(worker, {})) <= set(env)  # replaced, never added
        assert not set(added.get(worker, {})) & set(env)
        envs[worker] = {**basics, **env, **plumbing.get(worker, {}), **added.get(worker, {})}
    assert envs["ingest"]["GRPC_TLS"] == envs["inference"]["GRPC_TLS"] == "true"
    assert envs["ingest"]["DATABASE_URL"] == pipeline.database_url
    assert envs["api"]["DATABASE_URL"] == reader_url
    assert envs["bridge"]["MQTT_PORT"] == str(mqtt_broker.port)

    workers: list[WorkerProcess] = []
    try:
        for worker in ("api", "inference", "ingest", "bridge"):
            process = WorkerProcess(worker, [*containers[worker]["command"][1:]], envs[worker],
                                    tmp_path / "logs")
            workers.append(process.start(timeout=90))
        workers[-1].wait_ready(60)  # the bridge is subscribed
        publish = WorkerProcess("simulate", ["simulate", "--sites", "1", "--devices", "2",
                                             "--interval", "15m", "--duration", "6h",
                                             "--start", "2026-01-01T00:00:00Z",
                                             "--fault-rate", "0"],
                                {**basics, "MQTT_HOST": mqtt_broker.host,
                                 "MQTT_PORT": str(mqtt_broker.port),
                                 # Under the pipeline's topic root, as its devices publish.
                                 "MQTT_TOPIC_ROOT": envs["bridge"]["MQTT_TOPIC_ROOT"]},
                                tmp_path / "logs")
        publish.start(wait_ready=False)
        assert publish.wait(60) == 0
        expected = 5 * 2 * 24

        def stored() -> int:
            with psycopg2.connect(pipeline.database_url) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM readings")
                return int(cur.fetchone()[0])

        wait_for(lambda: stored() >= expected, 90, f"{expected} readings in PostgreSQL")
        assert stored() == expected
        # The read API, as the read-only role, serves what ingest stored.
        workers[0].wait_ready(30)
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{api_port}/api/v1/sites",
                headers={"Authorization": f"Bearer {api_token}"}), timeout=10) as response:
            sites = json.loads(response.read())
        assert [s["site"] for s in sites["data"]] == ["site-0"], sites
        for process in workers:
            process.require_alive()
            assert process.healthy()
    finally:
        for process in reversed(workers):
            process.stop(30)

    # The training CronJob's container, run once to completion like its Job would.
    train = WorkerProcess("train", ["train"], envs["train"], tmp_path / "logs")
    train.start(wait_ready=False)
    assert train.wait(180) == 0, train.process.log_tail() if train.process else ""
    for worker in ("bridge", "ingest", "inference", "api"):
        # Every worker accepted its environment: no settings error in its log.
        assert "invalid settings" not in (tmp_path / "logs" / f"{worker}.log").read_text()


def mount_secret_volume(pipeline: Pipeline, worker: str, volume: str,
                        directory: Path) -> dict[str, Path]:
    """The files of `worker`'s Secret volume `volume`, written under `directory` as the
    kubelet would mount them (its items, or every key); {path in the volume: file}."""
    pod = pipeline.deployment(worker)["spec"]["template"]["spec"]
    (source,) = [v["secret"] for v in pod["volumes"] if v["name"] == volume]
    secret = pipeline.client.get("v1", "Secret", pipeline.namespace, source["secretName"])
    items = source.get("items") or [{"key": k, "path": k} for k in secret["data"]]
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for item in items:
        path = directory / item["path"]
        path.write_bytes(base64.b64decode(secret["data"][item["key"]]))
        files[item["path"]] = path
    return files


def grpc_tls_files(files: dict[str, Path]) -> dict[str, str]:
    """GRPC_TLS_*_FILE pointed at a mounted gRPC certificate Secret's files."""
    return {env: str(files[key]) for env, key in certificates.TLS_FILES.items()}


def read_only_role(pipeline: Pipeline, postgres: PostgresServer) -> str:
    """A role like the postgres chart's reader (SELECT only, read-only transactions); its URL."""
    role = f"reader_{pipeline.prefix}"
    password = uuid.uuid4().hex
    admin_sql(postgres, f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    pipeline.roles.append(role)
    database = pipeline.database_url.rsplit("/", 1)[1].split("?")[0]
    conn = psycopg2.connect(pipeline.database_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
            cur.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
            cur.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
            cur.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
    finally:
        conn.close()
    return dsn(postgres.port, password, database, user=role)


def test_changes_update_the_right_child_and_roll_pods_on_config_changes(
    pipeline: Pipeline,
) -> None:
    pipeline.apply(pipeline.spec())
    pipeline.wait_ready()
    before = pipeline.versions()

    pipeline.patch({"ingestion": {"replicas": 3}})
    pipeline.wait_ready()
    assert pipeline.deployment("ingest")["spec"]["replicas"] == 3
    after = pipeline.versions()
    changed = {k for k in before if before[k] != after.get(k)}
    # Scaling is not configuration: same template, no roll, nothing else touched.
    assert ("Deployment", "demo-ingest") in changed
    assert not {("Deployment", "demo-bridge"), ("Deployment", "demo-inference"),
                ("ConfigMap", "demo-config"), ("CronJob", "demo-train")} & changed

    def template_hash(worker: str) -> str:
        return pipeline.deployment(worker)["spec"]["template"]["metadata"]["annotations"][
            "energy.pipeline.dev/config-hash"]

    hashes = {w: template_hash(w) for w in ("bridge", "ingest", "inference")}
    pipeline.patch({"forecast": {"horizons": 24}})
    body = pipeline.wait_ready()
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    config = pipeline.client.get("v1", "ConfigMap", pipeline.namespace, "demo-config")
    assert config["data"]["FORECAST_HORIZONS"] == "24"
    assert template_hash("ingest") != hashes["ingest"]
    assert template_hash("bridge") == hashes["bridge"]
    assert template_hash("inference") == hashes["inference"]
    # The new template rolled out: a second ReplicaSet for ingest, still one for bridge.
    rs = json.loads(pipeline.kube.kubectl(
        "get", "replicasets", "-n", pipeline.namespace, "-o", "json").stdout)["items"]
    per_component: dict[str, int] = {}
    for item in rs:
        component = item["metadata"]["labels"]["app.kubernetes.io/component"]
        per_component[component] = per_component.get(component, 0) + 1
    assert per_component == {"bridge": 1, "ingest": 2, "inference": 1}

    pipeline.patch({"image": "registry.example/energy-pipeline:9.9.9"})
    pipeline.wait_ready()
    for worker in ("bridge", "ingest", "inference"):
        image = pipeline.deployment(worker)["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "registry.example/energy-pipeline:9.9.9"
    cron = pipeline.client.get("batch/v1", "CronJob", pipeline.namespace, "demo-train")
    assert cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
        "image"] == "registry.example/energy-pipeline:9.9.9"
    pipeline.wait_event("Updated")


API_CHILDREN = {("Deployment", "demo-api"), ("Service", "demo-api"),
                ("PodDisruptionBudget", "demo-api"), ("NetworkPolicy", "demo-api")}


def test_the_read_api_comes_and_goes_with_spec_api_enabled(pipeline: Pipeline) -> None:
    pipeline.apply(pipeline.spec())
    body = pipeline.wait_ready()
    assert not API_CHILDREN & set(pipeline.children())
    assert "api" not in body["status"] and "api" not in body["status"]["workloads"]
    hashes = {w: pipeline.deployment(w)["spec"]["template"]["metadata"]["annotations"][
        "energy.pipeline.dev/config-hash"] for w in ("bridge", "ingest", "inference")}

    pipeline.patch({"api": {"enabled": True, "maxPageSize": 5000}})
    body = pipeline.wait_ready()
    children = pipeline.children()
    assert set(children) >= API_CHILDREN
    for key in API_CHILDREN:
        (owner,) = children[key]["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            KIND, body["metadata"]["uid"], True)
    pod = children[("Deployment", "demo-api")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["energy-pipeline", "api"]
    assert {(p["name"], p["containerPort"]) for p in container["ports"]} == {
        ("api", 8000), ("http", 8080)}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http",
                                                     "scheme": "HTTP"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http",
                                                      "scheme": "HTTP"}
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert pod["terminationGracePeriodSeconds"] >= 20
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = resolve_env(pipeline.client, pipeline.namespace, container, "api-0")
    assert env["DATABASE_URL"] == pipeline.database_url  # no api.databaseUrlSecret: the workers'
    assert (env["API_PORT"], env["API_MAX_PAGE_SIZE"], env["API_DEFAULT_PAGE_SIZE"]) == (
        "8000", "5000", "1000")
    service = children[("Service", "demo-api")]["spec"]
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["ports"]} == {
        ("api", 8000, "api"), ("http", 8080, "http")}
    assert service["selector"]["app.kubernetes.io/component"] == "api"
    assert body["status"]["api"] == "1/1"
    assert body["status"]["workloads"]["api"]["desired"] == 1
    # No spec.api.tokensSecret: the operator made one, mounted it, and says how to read it.
    assert body["status"]["apiTokens"]["secret"] == "demo-api-tokens"
    assert body["status"]["apiTokens"]["read"] in pipeline.condition("Ready", body)["message"]
    assert env["API_TOKENS_FILE"] == "/var/run/secrets/energy-pipeline/api-tokens/tokens"
    assert {"name": "api-tokens", "mountPath": "/var/run/secrets/energy-pipeline/api-tokens",
            "readOnly": True} in container["volumeMounts"]
    assert "api 1/1" in pipeline.condition("Ready", body)["message"]
    # Newly enabled is "created", not "restored"; the other workers did not roll.
    created = [e["message"] for e in pipeline.events() if e["reason"] == "Created"]
    assert any("Deployment demo-api" in m for m in created), created
    assert not [e for e in pipeline.events() if e["reason"] == "Restored"]
    for worker, digest in hashes.items():
        assert pipeline.deployment(worker)["spec"]["template"]["metadata"]["annotations"][
            "energy.pipeline.dev/config-hash"] == digest

    # Drift: a deleted API Service comes back.
    pipeline.client.delete("v1", "Service", pipeline.namespace, "demo-api")
    wait_for(lambda: ("Service", "demo-api") in pipeline.children(), 6 * INTERVAL,
             "the API Service to be restored")

    pipeline.patch({"api": {"enabled": False}})
    wait_for(lambda: not API_CHILDREN & set(pipeline.children()), 6 * INTERVAL,
             "the API's Deployment, Service, PodDisruptionBudget and NetworkPolicy to be deleted")
    body = pipeline.wait_ready()
    assert "api" not in body["status"] and "api" not in body["status"]["workloads"]
    assert "api 1/1" not in pipeline.condition("Ready", body)["message"]
    pipeline.wait_event("Deleted")
    assert {("Deployment", "demo-ingest"), ("Service", "demo-inference")} <= set(
        pipeline.children())


def test_operator_restart_changes_nothing(pipeline: Pipeline, operator: OperatorProcess) -> None:
    pipeline.apply(pipeline.spec())
    pipeline.wait_ready()
    pipeline.wait_condition("Progressing", "False", "UpToDate")
    time.sleep(INTERVAL)  # one more periodic pass: settled
    before = pipeline.versions()
    status = pipeline.get()["status"]
    operator.restart()
    operator.wait_role("leader", 20)
    wait_for(lambda: operator.log_text().count("Resuming is processed") >= 1, 30,
             "the resume handler")
    time.sleep(2 * INTERVAL + 1)  # and a couple of periodic passes
    assert pipeline.versions() == before
    assert pipeline.get()["status"] == status


def test_deleted_or_edited_children_are_restored(pipeline: Pipeline) -> None:
    pipeline.apply(pipeline.spec())
    pipeline.wait_ready()
    uid = pipeline.deployment("ingest")["metadata"]["uid"]
    pipeline.client.request("DELETE",
                            f"/apis/apps/v1/namespaces/{pipeline.namespace}/deployments/demo-ingest")
    pipeline.client.request("DELETE",
                            f"/api/v1/namespaces/{pipeline.namespace}/configmaps/demo-config")
    pipeline.kube.kubectl("scale", "deployment/demo-bridge", "--replicas=5",
                          "-n", pipeline.namespace)
    pipeline.kube.kubectl("patch", "cronjob/demo-train", "-n", pipeline.namespace, "--type",
                          "merge", "-p", '{"spec":{"schedule":"* * * * *"}}')

    def repaired() -> bool:
        children = pipeline.children()
        ingest = children.get(("Deployment", "demo-ingest"))
        return bool(
            ingest and ingest["metadata"]["uid"] != uid
            and ("ConfigMap", "demo-config") in children
            and children[("Deployment", "demo-bridge")]["spec"]["replicas"] == 2
            and children[("CronJob", "demo-train")]["spec"]["schedule"] == "0 3 * * *"
        )

    wait_for(repaired, 6 * INTERVAL, "the operator to restore its children")
    pipeline.wait_ready()
    pipeline.wait_event("Restored")


def test_paused_leaves_children_alone_and_says_so(pipeline: Pipeline) -> None:
    pipeline.apply(pipeline.spec())
    pipeline.wait_ready()
    pipeline.patch({"paused": True})
    body = pipeline.wait_condition("Progressing", "False", "Paused")
    assert body["status"]["paused"] is True
    assert "spec.paused" in pipeline.condition("Progressing", body)["message"]
    before = pipeline.deployment("ingest")["metadata"]["resourceVersion"]

    pipeline.patch({"ingestion": {"replicas": 1}})
    pipeline.client.request(
        "DELETE", f"/apis/apps/v1/namespaces/{pipeline.namespace}/deployments/demo-inference")
    time.sleep(3 * INTERVAL)
    assert pipeline.deployment("ingest")["metadata"]["resourceVersion"] == before
    assert ("Deployment", "demo-inference") not in pipeline.children()
    body = pipeline.wait_condition("Ready", "False", "WorkloadMissing")
    assert "demo-inference" in pipeline.condition("Ready", body)["message"]

    pipeline.patch({"paused": False})
    pipeline.wait_ready()
    assert pipeline.deployment("ingest")["spec"]["replicas"] == 1
    assert ("Deployment", "demo-inference") in pipeline.children()
    pipeline.wait_event("Paused")
    pipeline.wait_event("Resumed")


def test_partitions_grow_and_a_shrink_is_refused(pipeline: Pipeline) -> None:
    pipeline.apply(pipeline.spec())
    pipeline.wait_ready()
    pipeline.patch({"kafka": {"partitions": 6}})
    pipeline.wait_ready()
    assert {t.partitions for t in pipeline.topics().values()} == {6}
    pipeline.wait_event("PartitionsIncreased")

    pipeline.patch({"kafka": {"partitions": 4}})
    body = pipeline.wait_condition("Degraded", "True", "PartitionShrinkRefused")
    message = pipeline.condition("Degraded", body)["message"]
    assert f"{pipeline.prefix}.temperature (6)" in message
    assert "spec.kafka.partitions to at least 6" in message
    # Refused, not ignored and not applied: topics keep 6, data keeps flowing (Ready).
    assert {t.partitions for t in pipeline.topics().values()} == {6}
    assert pipeline.condition("Ready", body)["status"] == "True"
    assert body["status"]["topics"]["state"] == "Degraded"
    pipeline.wait_event("PartitionShrinkRefused")

    pipeline.patch({"kafka": {"partitions": 6}})
    pipeline.wait_condition("Degraded", "False", "AsExpected")


def test_missing_secret_and_unreachable_kafka_are_reported(pipeline: Pipeline) -> None:
    pipeline.apply(pipeline.spec(database={"urlSecret": {"name": "later", "key": "url"}},
                                 kafka={"bootstrapServers": "127.0.0.1:1"}))
    body = pipeline.wait_condition("Degraded", "True", "SecretMissing")
    message = pipeline.condition("Degraded", body)["message"]
    assert "Secret" in message and "later" in message and "spec.database.urlSecret" in message
    assert "spec.kafka.bootstrapServers" in message  # both problems are listed
    assert pipeline.condition("Ready", body)["status"] == "False"
    # The children exist regardless: they wait for their dependencies themselves.
    assert ("Deployment", "demo-ingest") in pipeline.children()

    pipeline.client.create({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": "later", "namespace": pipeline.namespace},
                            "stringData": {"url": pipeline.database_url}})
    pipeline.patch({"kafka": {"bootstrapServers": pipeline.bootstrap}})
    pipeline.wait_ready()
    assert pipeline.condition("Degraded")["status"] == "False"


def test_the_operator_reaches_kafka_with_the_workers_credentials(kube: KubeControlPlane) -> None:
    """SASL user and password from the Secret, through the builder the workers use."""
    client = Kube(kube.api_client)
    namespace = f"sasl-{uuid.uuid4().hex[:8]}"
    client.request("POST", "/api/v1/namespaces", body={
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    try:
        spec = crd.with_defaults({
            "mqtt": {"host": "m"},
            "database": {"urlSecret": {"name": "pg"}},
            "kafka": {"bootstrapServers": "k:9093", "securityProtocol": "SASL_SSL",
                      "sasl": {"mechanism": "SCRAM-SHA-256",
                               "credentialsSecret": {"name": "kafka-user"}}},
        })
        missing = Outcome()
        assert kafka_config(client, namespace, spec, missing) is None
        assert [p.reason for p in missing.problems] == ["SecretMissing", "SecretMissing"]
        assert "kubectl create secret generic kafka-user" in missing.problems[0].message

        client.create({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "kafka-user", "namespace": namespace},
                       "stringData": {"username": "ingest", "password": "s3cret"}})
        found = Outcome()
        config = kafka_config(client, namespace, spec, found)
        assert not found.problems
        workers = load(KafkaSettings, {
            "KAFKA_BOOTSTRAP_SERVERS": "k:9093", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "KAFKA_SASL_USERNAME": "ingest",
            "KAFKA_SASL_PASSWORD": "s3cret"})
        assert config == {**workers.kafka_client_config(),
                          "socket.connection.setup.timeout.ms": "5000"}

        # The brokers' CA: the workers get the Secret as a file, the operator its text.
        with_ca = crd.with_defaults({**spec, "kafka": {
            **spec["kafka"], "tls": {"caSecret": {"name": "kafka-ca"}}}})
        unread = Outcome()
        assert kafka_config(client, namespace, with_ca, unread) is None
        assert [p.reason for p in unread.problems] == ["SecretMissing"]
        assert "spec.kafka.tls.caSecret" in unread.problems[0].message
        pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        client.create({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "kafka-ca", "namespace": namespace},
                       "stringData": {"ca.crt": pem}})
        trusted = Outcome()
        config = kafka_config(client, namespace, with_ca, trusted)
        assert not trusted.problems
        assert config is not None and config["ssl.ca.pem"] == pem
    finally:
        client.request("DELETE", f"/api/v1/namespaces/{namespace}")


def test_deleting_removes_children_and_keeps_topics(pipeline: Pipeline) -> None:
    pipeline.apply(pipeline.spec())
    pipeline.wait_ready()
    assert not pipeline.get()["metadata"].get("finalizers")  # deletion never waits for us
    pipeline.kube.kubectl("delete", "energypipeline", "demo", "-n", pipeline.namespace,
                          "--wait=true", "--timeout=30s")
    wait_for(lambda: not pipeline.children(), 30, "the garbage collector to remove children")
    assert len(pipeline.topics()) == 7
    assert schema_version(pipeline.database_url) == latest_version()


def test_delete_topics_on_delete_uses_a_finalizer(pipeline: Pipeline) -> None:
    pipeline.apply(pipeline.spec(kafka={"deleteTopicsOnDelete": True}))
    pipeline.wait_ready()
    wait_for(lambda: pipeline.get()["metadata"].get("finalizers"), 10, "the finalizer")
    assert pipeline.get()["metadata"]["finalizers"] == ["energy.pipeline.dev/delete-topics"]
    assert len(pipeline.topics()) == 7

    # Switched off again, the finalizer goes away (deletion no longer waits for us)...
    pipeline.patch({"kafka": {"deleteTopicsOnDelete": False}})
    wait_for(lambda: not pipeline.get()["metadata"].get("finalizers"), 10, "no finalizer")
    # ... and on: deleting now removes the topics before the resource goes.
    pipeline.patch({"kafka": {"deleteTopicsOnDelete": True}})
    wait_for(lambda: pipeline.get()["metadata"].get("finalizers"), 10, "the finalizer")
    pipeline.kube.kubectl("delete", "energypipeline", "demo", "-n", pipeline.namespace,
                          "--wait=true", "--timeout=60s", timeout=70)
    assert pipeline.client.get(API, KIND, pipeline.namespace, "demo") is None
    wait_for(lambda: not pipeline.topics(), 30, "the topics to be deleted")
    wait_for(lambda: not pipeline.children(), 30, "the garbage collector to remove children")


def test_liveness_and_metrics(operator: OperatorProcess) -> None:
    assert operator.healthy()
    assert operator.role() == "leader"
    metrics = operator._get("/metrics")[1].decode()
    assert "energy_operator_reconciles_total" in metrics
    assert "energy_operator_leader 1.0" in metrics


def test_operator_runs_with_least_privilege(operator: OperatorProcess) -> None:
    """It ran every test above with only the chart's RBAC: no request was forbidden."""
    denied = [line for line in operator.log_text().splitlines() if "is forbidden: User" in line]
    assert not denied, denied[:3]
