"""The platform installed on a real kubelet node, for the node tests and `make bench`.

`install_from_readme` runs the README's "On your own cluster" block line by line, as
written, in a copy of the repository's charts and manifests without built chart
dependencies (what a fresh clone has); the `helm install` line only gets a values file with
the stand-in images and `grafana.enabled=false` (no Grafana image can be had here).
`Platform` is what tests and benchmarks then ask of the installation: pods, SQL on the
pipeline's database, memory of each pod from the node's cgroups.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import yaml
from energy_pipeline.core.contracts import format_ts
from energy_pipeline.db.connect import with_schema

from energy_harness.images import REPO
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.localstack.node import CGROUP_PARENT
from energy_harness.readme_blocks import README, command_lines, recipe_blocks
from energy_harness.testing import Reading, expected_rows, wait_for

NAMESPACE = "energy"
# The README's `helm install energy ...`.
RELEASE = "energy"
PIPELINE = "demo"
# The project image's user (Dockerfile).
WORKER_UID = 10001

Resources = dict[str, dict[str, str]]


def readme_commands(readme: Path = README) -> list[str]:
    """The README's "On your own cluster" block (`<!-- recipe: own-cluster -->`), one
    command per line, as written."""
    return [line for block in recipe_blocks("own-cluster", readme)
            for line in command_lines(block)]


def image_overrides(images: dict[str, str]) -> dict[str, Any]:
    """The values the node tests add: the stand-in images (and the project image where the
    platform chart names it), and no Grafana."""

    def split(tag: str) -> dict[str, str]:
        repository, _, version = tag.rpartition(":")
        return {"repository": repository, "tag": version}

    return {
        "grafana": {"enabled": False},
        "kafka": {"image": split(images["kafka"])},
        "postgres": {"image": split(images["postgres"])},
        # The auth extension comes from the project image (its default: the operator's).
        "hivemq": {"image": split(images["hivemq"]),
                   "auth": {"extension": {"image": images["worker"]}}},
        "operator": {"image": split(images["worker"])},
    }


# What the chart's hook Job made for MQTT (the platform chart's secure HiveMQ by default).
MQTT_TLS_SECRET = f"{RELEASE}-hivemq-tls"
MQTT_USERS_SECRET = f"{RELEASE}-mqtt-users"
MQTT_TLS_PORT = 8883


def simulator_pod(name: str, image: str, args: list[str]) -> dict[str, Any]:
    """A one-shot `energy-pipeline simulate` pod, hardened like the chart's simulator and
    logging in like it: the user `simulator`, over TLS verified against the broker's CA.

    Labelled as a simulator (an instance of its own): the chart's HiveMQ NetworkPolicy
    admits the pods so labelled as devices, and no other pod may publish.
    """
    labels = {"app.kubernetes.io/name": "simulator", "app.kubernetes.io/component": "simulator",
              "app.kubernetes.io/instance": name}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": WORKER_UID,
                                "runAsGroup": WORKER_UID,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "simulate", "image": image,
                "args": ["simulate", *args, f"--client-id=simulator-{name}",
                         "--hold-until-subscribed"],
                "env": [{"name": "MQTT_HOST", "value": f"energy-hivemq.{NAMESPACE}.svc"},
                        {"name": "MQTT_PORT", "value": str(MQTT_TLS_PORT)},
                        {"name": "MQTT_CA_FILE", "value": "/etc/mqtt-ca/ca.crt"},
                        {"name": "MQTT_USERNAME", "valueFrom": {"secretKeyRef": {
                            "name": MQTT_USERS_SECRET, "key": "simulator-username"}}},
                        {"name": "MQTT_PASSWORD", "valueFrom": {"secretKeyRef": {
                            "name": MQTT_USERS_SECRET, "key": "simulator-password"}}}],
                "volumeMounts": [{"name": "mqtt-ca", "mountPath": "/etc/mqtt-ca",
                                  "readOnly": True}],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "20m", "memory": "96Mi"},
                              "limits": {"memory": "256Mi"}},
            }],
            "volumes": [{"name": "mqtt-ca", "secret": {
                "secretName": MQTT_TLS_SECRET, "items": [{"key": "ca.crt", "path": "ca.crt"}]}}],
        },
    }


# Run inside a probe pod: one TCP connect per "host:port" argument, each judged as the
# connecting program sees it. A NetworkPolicy that refuses drops the SYN: "timeout".
PROBE_SCRIPT = """
import json, socket, sys
found = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=4).close()
        found[target] = "open"
    except TimeoutError:
        found[target] = "timeout"
    except ConnectionRefusedError:
        found[target] = "refused"
    except OSError as exc:
        found[target] = type(exc).__name__
print(json.dumps(found))
"""


# Run with `kubectl exec` in an ingest pod (its Kafka login, CA and topic prefix, and the
# image's confluent_kafka): reads the sensor topics of the readings asked for (a JSON list of
# [site, sensor, device, ts as format_ts writes it]) from the beginning to their ends with
# ingest's own parser, and prints as JSON where each is (topic, partition, offset). Read-only:
# ingest's group (the only one its login may use), never joined: assigned partitions, no
# commit. The dead-letter topic is not read: the kafka chart's ACLs let ingest only write it.
KAFKA_FIND_SCRIPT = """
import json, sys, time
from datetime import UTC, datetime
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from energy_pipeline.core.contracts import Reading, format_ts, kafka_topic
from energy_pipeline.core.settings import load
from energy_pipeline.core.validation_fast import parse_kafka_value
from energy_pipeline.dataplane.ingest import IngestSettings, consumer_config

settings = load(IngestSettings)
want = {tuple(key) for key in json.loads(sys.argv[1])}
topics = sorted({kafka_topic(settings.kafka_topic_prefix, key[1]) for key in want})
# Small prefetch: this runs beside ingest, inside its memory limit.
consumer = Consumer({**consumer_config(settings), "enable.partition.eof": True,
                     "queued.max.messages.kbytes": 2048, "fetch.max.bytes": 1048576})
metadata = consumer.list_topics(timeout=30)
parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics
         for p in metadata.topics[t].partitions]
consumer.assign(parts)
left = {(tp.topic, tp.partition) for tp in parts}
found, errors, ends = [], [], {}
deadline = time.monotonic() + 120
while left and time.monotonic() < deadline:
    for msg in consumer.consume(1000, timeout=1):
        where = (msg.topic(), msg.partition())
        if msg.error() is not None:
            if msg.error().code() == KafkaError._PARTITION_EOF:
                ends[f"{where[0]}/{where[1]}"] = msg.offset()
                left.discard(where)
            elif len(errors) < 20:
                errors.append(f"{where}: {msg.error()}")
            continue
        reading = parse_kafka_value(msg.value(), datetime.now(UTC), settings.limits())
        if not isinstance(reading, Reading):
            continue
        key = (reading.site, reading.sensor, reading.device, format_ts(reading.ts))
        if key in want:
            found.append({"reading": list(key), "topic": where[0], "partition": where[1],
                          "offset": msg.offset()})
consumer.close()
print(json.dumps({"found": found, "errors": errors,
                  "unread_partitions": sorted(map(str, left)), "end_offsets": ends}))
"""


def probe_pod(name: str, image: str, labels: dict[str, str], targets: list[str]) -> dict[str, Any]:
    """A pod that tries a TCP connection to each target once and prints what happened."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": WORKER_UID,
                                "runAsGroup": WORKER_UID,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": image,
                "command": ["python", "-c", PROBE_SCRIPT, *targets],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                              "limits": {"memory": "64Mi"}},
            }],
        },
    }


@dataclass
class Platform:
    kube: KubeControlPlane
    images: dict[str, str]
    # The copy of the repository the README's commands ran in (charts/, manifests/).
    workdir: Path

    def helm(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """helm in the README's environment and directory, e.g. ("upgrade", RELEASE, ...)."""
        result = subprocess.run(["helm", "-n", NAMESPACE, *args], cwd=self.workdir,
                                env=_tools_env(self.kube), capture_output=True, text=True,
                                timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}:\n{result.stdout[-2000:]}\n"
                                 f"{result.stderr[-3000:]}")
        return result

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.kube.kubectl("-n", NAMESPACE, *args, check=check, input=input,
                                 timeout=timeout)

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, obj: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=json.dumps(obj), check=check)

    def pods(self, selector: str = "") -> list[dict[str, Any]]:
        args = ["pods"] + ([f"-l={selector}"] if selector else [])
        return [p for p in self.get(*args)["items"] if not p["metadata"].get("deletionTimestamp")]

    def worker_pods(self, worker: str) -> list[dict[str, Any]]:
        return self.pods(f"app.kubernetes.io/instance={PIPELINE},"
                         f"app.kubernetes.io/component={worker}")

    def ready_count(self, worker: str) -> int:
        return sum(all(c["ready"] for c in p["status"].get("containerStatuses", []))
                   for p in self.worker_pods(worker))

    def pod_phase(self, name: str) -> str | None:
        found = self.kubectl("get", "pod", name, "-o", "json", check=False)
        return json.loads(found.stdout)["status"].get("phase") if found.returncode == 0 else None

    def exec(self, pod: str, container: str, *command: str) -> str:
        return self.kubectl("exec", pod, "-c", container, "--", *command).stdout

    def probe(self, name: str, labels: dict[str, str], targets: list[str]) -> dict[str, str]:
        """What a pod labelled `labels` meets connecting to each "host:port" (probe_pod)."""
        self.apply(probe_pod(name, self.images["worker"], labels, targets))
        try:
            wait_for(lambda: self.pod_phase(name) in {"Succeeded", "Failed"}, 180,
                     f"probe pod {name} finished", interval=2)
            logs = self.kubectl("logs", name).stdout
            assert self.pod_phase(name) == "Succeeded", logs[-2000:]
            return json.loads(logs.strip().splitlines()[-1])
        finally:
            self.kubectl("delete", "pod", name, "--wait=false", check=False)

    def diagnosis(self, worker: str) -> str:
        """What a failed wait on `worker`'s pods needs: their states, recent events, the
        pipeline's status and each pod's log tail (a timeout alone says nothing)."""
        parts = [
            self.kubectl("get", "pods", "-o", "wide", check=False).stdout,
            self.kubectl("get", "events", "--sort-by=.lastTimestamp", check=False).stdout[-4000:],
            self.kubectl("get", "energypipeline", PIPELINE, "-o", "jsonpath={.status}",
                         check=False).stdout[-3000:],
        ]
        for pod in self.worker_pods(worker):
            name = pod["metadata"]["name"]
            logs = self.kubectl("logs", name, "--all-containers", "--tail=30", check=False)
            parts.append(f"--- {name}\n{(logs.stdout + logs.stderr)[-4000:]}")
        return "\n".join(parts)

    def find_in_kafka(self, readings: list[Reading]) -> dict[str, Any]:
        """Where Kafka holds `readings` (KAFKA_FIND_SCRIPT in an ingest pod): which of a
        missing row's records reached Kafka, at which partition and offset."""
        pod = self.worker_pods("ingest")[0]["metadata"]["name"]
        wanted = json.dumps([[s, sensor, d, format_ts(ts)] for s, sensor, d, ts, _ in readings])
        out = self.kubectl("exec", pod, "-c", "ingest", "--", "python", "-c",
                           KAFKA_FIND_SCRIPT, wanted, timeout=300).stdout
        return json.loads(out.strip().splitlines()[-1])

    def pipeline_ready(self) -> bool:
        conditions = self.get("energypipeline", PIPELINE).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    # -- the pipeline's database, from this machine ---------------------------------------

    def dsn(self) -> str:
        """The pipeline's DATABASE_URL pointed at the Service's ClusterIP: kube-proxy routes
        this machine's own connections too (cluster DNS is only for pods)."""
        secret = self.get("secret", "energy-postgres-app")  # the application role's
        url = base64.b64decode(secret["data"]["DATABASE_URL"]).decode()
        service = self.get("service", "energy-postgres")
        parts = urlsplit(url)
        netloc = parts.netloc.replace(parts.hostname or "", service["spec"]["clusterIP"], 1)
        # In the pipeline's own schema, as its workers connect (DATABASE_SCHEMA of its
        # ConfigMap, which the operator derives from its name).
        schema = self.get("configmap", f"{PIPELINE}-config")["data"]["DATABASE_SCHEMA"]
        return with_schema(urlunsplit(parts._replace(netloc=netloc)), schema)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(self.dsn(), connect_timeout=10)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall()
        finally:
            conn.close()

    def readings_between(self, start: datetime, end: datetime) -> set[Reading]:
        rows = self.sql("SELECT site_id, sensor, device_id, ts, value FROM readings "
                        "WHERE ts >= %s AND ts < %s", (start, end))
        return {(s, sensor, d, ts, float(v)) for s, sensor, d, ts, v in rows}

    def count_between(self, start: datetime, end: datetime) -> int:
        return int(self.sql("SELECT count(*) FROM readings WHERE ts >= %s AND ts < %s",
                            (start, end))[0][0])

    # -- the chart's simulator ------------------------------------------------------------

    def chart_simulation(self) -> dict[str, Any]:
        """The chart simulator's run, from its "simulating" log line (start, sites, ...)."""
        [pod] = self.pods(f"app.kubernetes.io/name=simulator,app.kubernetes.io/instance={RELEASE}")
        logs = self.kubectl("logs", pod["metadata"]["name"]).stdout
        for line in logs.splitlines():
            try:
                record = json.loads(line[line.find("{"):]) if "{" in line else {}
            except ValueError:
                continue
            if "simulating" in (record.get("message"), record.get("msg")):
                return {**record, "restarts": pod["status"]["containerStatuses"][0]
                        ["restartCount"]}
        raise AssertionError(f"no 'simulating' line in the simulator's log:\n{logs[-2000:]}")

    # -- memory ---------------------------------------------------------------------------

    def pod_memory(self) -> dict[str, int]:
        """Working set of each pod (usage minus inactive file pages, as the kubelet counts
        it), read from the node's cgroup tree."""
        memory = {}
        base = Path("/sys/fs/cgroup/memory") / CGROUP_PARENT / "kubepods"
        for pod in self.pods():
            found = list(base.glob(f"**/pod{pod['metadata']['uid']}"))
            if not found:
                continue
            usage = int((found[0] / "memory.usage_in_bytes").read_text())
            stat = dict(line.split() for line in
                        (found[0] / "memory.stat").read_text().splitlines())
            memory[pod["metadata"]["name"]] = usage - int(stat.get("total_inactive_file", 0))
        return memory


def expected_window(run: dict[str, Any], end: datetime) -> tuple[datetime, set[Reading]]:
    """The readings a simulator run (its "simulating" record) published before `end`:
    its whole steps up to there, and where they end."""
    start = datetime.fromisoformat(run["start"])
    interval = timedelta(seconds=run["interval_s"])
    steps = int((end - start) / interval)
    args = [f"--sites={run['sites']}", f"--devices={run['devices']}",
            f"--interval={int(interval.total_seconds())}s", f"--start={start.isoformat()}",
            f"--duration={int(steps * interval.total_seconds())}s", f"--seed={run['seed']}"]
    return start + steps * interval, expected_rows(args)


def install_from_readme(kube: KubeControlPlane, images: dict[str, str],
                        workdir: Path) -> tuple[Platform, float]:
    """Run the README's commands; returns the platform and the seconds from `helm install`
    to the end of the README's `kubectl wait` (the pipeline Ready)."""
    for name in ("charts", "manifests"):
        shutil.copytree(REPO / name, workdir / name,
                        ignore=shutil.ignore_patterns("*.tgz", "__pycache__"))
    # What a clone has: no chart dependencies built into the umbrella's charts/.
    shutil.rmtree(workdir / "charts" / "energy-platform" / "charts", ignore_errors=True)
    values = workdir / "node-values.yaml"
    values.write_text(yaml.safe_dump(image_overrides(images)))
    env = _tools_env(kube)
    started: float | None = None
    for line in readme_commands():
        command = line
        if line.startswith("helm install "):
            started = time.monotonic()
            command = f"{line} -f {shlex.quote(str(values))}"
        result = subprocess.run(["bash", "-c", command], cwd=workdir, env=env,
                                capture_output=True, text=True, timeout=1200)
        if result.returncode != 0:
            raise AssertionError(f"README command failed: {command}\n"
                                 f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    if started is None:
        raise AssertionError("README: no helm install command")
    return Platform(kube, images, workdir), time.monotonic() - started


def _tools_env(kube: KubeControlPlane) -> dict[str, str]:
    """The environment of the README's commands: kubectl and helm on PATH, the cluster's
    kubeconfig."""
    assert kube.tools is not None, "start the cluster first"
    return {**kube.env(),
            "PATH": os.pathsep.join([str(kube.tools.bin_dir), str(kube.tools.helm.parent),
                                     os.environ["PATH"]])}
