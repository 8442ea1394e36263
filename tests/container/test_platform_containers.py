"""The platform on one Docker network, each pod started as its chart or the operator starts it.

charts/kafka's three pods, charts/postgres's and charts/hivemq's pod come from `helm template`
(only the images are the harness's stand-ins); the workers come from the operator's own
render of the EnergyPipeline that charts/energy-platform creates for these charts
(`energy_operator.render.render_children`): the worker image with each Deployment's command,
environment (its ConfigMap keys, DATABASE_URL from the postgres chart's Secret, the pod name
for the bridge's MQTT client id), hardening and memory limit. Kubernetes DNS is played by
network aliases, so every name in that environment is the one a cluster resolves
(energy_harness.chart_containers).

`topics create`, `migrate` and `simulate` run to their end in the pipeline's one-shot pod
(the train CronJob's: same image, same hardening) with the pipeline's ConfigMap as their
environment. The test ends in the data plane's exact equality: the rows in `readings`, read
from the host through PostgreSQL's port published on 127.0.0.1, are the readings the
simulator generated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from energy_harness.chart_containers import Manifests, PodRunner, Workload, properties
from energy_harness.localstack.docker import DockerEngine
from energy_harness.testing import expected_rows, stored_rows, wait_for
from energy_operator.render import render_children
from energy_pipeline.core.contracts import all_kafka_topics
from energy_pipeline.db.connect import with_schema
from energy_pipeline.db.migrate import latest_version

pytestmark = pytest.mark.container

PIPELINE = "energy"  # charts/energy-platform's example.name
WORKERS = ("bridge", "ingest", "inference")
# Five JVM and PostgreSQL pods and four Python containers share two cores: small heaps, as a
# user may set them (HiveMQ's heap is the chart's share of its memory limit).
KAFKA_ARGS = ("--set", "heapOpts=-Xms256m -Xmx256m")
HIVEMQ_ARGS = ("--set", "resources.limits.memory=512Mi")
START_TIMEOUT = 180.0
SIMULATION = [
    "--sites", "2", "--devices", "3", "--interval", "10m", "--duration", "8h",
    "--start", "2025-03-10T00:00:00Z", "--seed", "17",
]  # fmt: skip
# Until every broker of the chart is in the cluster's metadata (topics need 2 replicas).
BROKERS_UP = """
import sys, time
from confluent_kafka.admin import AdminClient
bootstrap, want, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        seen = len(AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
                   .list_topics(timeout=5).brokers)
    except Exception as exc:
        seen = repr(exc)
    if seen == want:
        break
    if time.monotonic() > deadline:
        sys.exit(f"{want} brokers wanted, metadata says: {seen}")
    time.sleep(1)
"""


def app_secret_name(postgres: Manifests) -> str:
    """The postgres chart's Secret of the application role (one Secret per role)."""
    (name,) = [s["metadata"]["name"] for s in postgres.of_kind("Secret")
               if s["metadata"]["labels"].get("energy.pipeline.dev/database-role") == "app"]
    return name


def pipeline_spec(
    kafka: Workload, postgres: Manifests, hivemq: Workload, image: str
) -> dict[str, Any]:
    """The EnergyPipeline charts/energy-platform creates (templates/energypipeline.yaml),
    wired to these charts' Services and Secret, with the image under test and one pod per
    worker (a short run on two cores)."""
    broker = properties(kafka.manifests.config_map(f"{kafka.name}-config")["server.properties"])
    bootstrap, kafka_port = kafka.service_address()
    mqtt_host, mqtt_port = hivemq.service_address()
    return {
        "image": image,
        "mqtt": {"host": mqtt_host, "port": mqtt_port},
        "kafka": {
            "bootstrapServers": f"{bootstrap}:{kafka_port}",
            "partitions": int(broker["num.partitions"]),
            "replicationFactor": int(broker["default.replication.factor"]),
            "minInSyncReplicas": int(broker["min.insync.replicas"]),
            "brokers": kafka.replicas,
        },
        "database": {
            "urlSecret": {
                "name": app_secret_name(postgres),
                "key": "DATABASE_URL",
            },
        },
        "ingestion": {"replicas": 1, "bridge": {"replicas": 1}},
        # Plaintext gRPC, knowingly: these containers get no operator to issue the
        # certificates (mutual TLS between real pods, with the operator's certificates, is
        # the node suite's, tests/node/test_platform.py).
        "inference": {"replicas": 1, "tls": {"enabled": False}},
    }


@pytest.fixture
def pods(docker_engine: DockerEngine, docker_network: str, tmp_path: Path) -> Iterator[PodRunner]:
    runner = PodRunner(docker_engine, tmp_path, docker_network)
    try:
        yield runner
    finally:
        for container in runner.containers:
            print(f"----- {container.name} -----\n{container.logs()[-3000:]}")
        runner.cleanup()


def test_the_worker_image_stores_every_reading_through_the_charts_pods(
    pods: PodRunner, image: Callable[[str], str], helm_template: Callable[..., str]
) -> None:
    kafka = Manifests.parse(helm_template("kafka", *KAFKA_ARGS)).workload()
    postgres = Manifests.parse(helm_template("postgres"))
    hivemq = Manifests.parse(helm_template("hivemq", *HIVEMQ_ARGS)).workload()
    worker_image = image("worker")

    # As `helm install` creates them: every pod at once, then each ready by its chart's probes.
    brokers = [pods.start(pod, image("kafka")) for pod in kafka.pods]
    server = postgres.workload(kind="StatefulSet").pod(0)  # not the backup CronJob
    database = pods.start(server, image("postgres"), publish=["postgres"])
    mqtt = pods.start(hivemq.pod(0), image("hivemq"))
    for container in [*brokers, database, mqtt]:
        print(f"{container.name} ready: {container.wait_ready(START_TIMEOUT):.1f}s")

    spec = pipeline_spec(kafka, postgres, hivemq, worker_image)
    operator = Manifests(tuple(render_children(PIPELINE, kafka.namespace, spec)))
    children = operator + postgres  # the Secret the pipeline's spec names
    config = operator.config_map(f"{PIPELINE}-config")
    secret = postgres.secret(app_secret_name(postgres))
    workers = {worker: children.workload(f"{PIPELINE}-{worker}") for worker in WORKERS}
    assert [workload.replicas for workload in workers.values()] == [1, 1, 1]
    # The names a cluster resolves, and the application role's URL, not the superuser's.
    bootstrap, kafka_port = kafka.service_address()
    assert workers["bridge"].pod(0).env["MQTT_HOST"] == hivemq.service_address()[0]
    # No client id from the operator: the bridge names its persistent session after its pod
    # (HOSTNAME: the pod's name, as the pod runner sets it like a kubelet), after its MQTT
    # user when it has one.
    assert "MQTT_CLIENT_ID" not in workers["bridge"].pod(0).env
    ingest_env = workers["ingest"].pod(0).env
    assert ingest_env["KAFKA_BOOTSTRAP_SERVERS"] == f"{bootstrap}:{kafka_port}"
    assert ingest_env["DATABASE_URL"] == secret["DATABASE_URL"]
    assert urlsplit(secret["DATABASE_URL"]).username == server.env["APP_USER"]
    assert ingest_env["INFERENCE_TARGET"] == (
        f"dns:///{PIPELINE}-inference.{kafka.namespace}.svc.cluster.local:{config['GRPC_PORT']}"
    )

    one_shot = children.workload(f"{PIPELINE}-train").pod(0)

    def run(*command: str) -> str:
        return pods.run_once(one_shot, worker_image, command, extra_env=config)

    run("python", "-c", BROKERS_UP, f"{bootstrap}:{kafka_port}", str(kafka.replicas), "120")
    topics = json.loads(run("energy-pipeline", "topics", "create").splitlines()[-1])
    assert topics == {"created": all_kafka_topics(config["KAFKA_TOPIC_PREFIX"]), "existing": []}
    migrated = json.loads(run("energy-pipeline", "migrate").splitlines()[-1])
    assert migrated == {"schema_version": latest_version()}

    started = {worker: pods.start(w.pod(0), worker_image) for worker, w in workers.items()}
    for worker, container in started.items():
        seconds = container.wait_for_probe("startupProbe", START_TIMEOUT)
        if worker != "inference":
            seconds = container.wait_for_probe("readinessProbe", START_TIMEOUT)
        print(f"{container.name} ready: {seconds:.1f}s")
        # Hardened as the operator's pod spec says: uid 10001, read-only root, a tmpfs /tmp,
        # no capabilities, no privilege escalation.
        inspected = container.inspect()
        hardening = inspected["HostConfig"]
        assert inspected["Config"]["User"] == "10001:10001"
        assert (hardening["GroupAdd"], hardening["ReadonlyRootfs"]) == (["10001"], True)
        assert (hardening["CapDrop"], hardening["SecurityOpt"]) == (["ALL"], ["no-new-privileges"])
        assert hardening["Tmpfs"] == {"/tmp": "size=256m"}
    # No model is promoted yet: inference is alive, and says it is not ready.
    inference = started["inference"]
    assert inference.probe("livenessProbe")
    assert not inference.probe("readinessProbe")

    expected = expected_rows(SIMULATION)
    run("energy-pipeline", "simulate", *SIMULATION)
    app = urlsplit(secret["DATABASE_URL"])
    host, port = database.address("postgres")
    # In the pipeline's schema (DATABASE_SCHEMA, derived from its name), as its workers read.
    local_url = with_schema(urlunsplit(app._replace(
        netloc=f"{app.username}:{app.password}@{host}:{port}")), config["DATABASE_SCHEMA"])
    assert config["DATABASE_SCHEMA"] == PIPELINE.replace("-", "_")
    wait_for(lambda: len(stored_rows(local_url)) >= len(expected), 180,
             f"{len(expected)} readings stored", interval=1.0)  # fmt: skip
    assert stored_rows(local_url) == expected
