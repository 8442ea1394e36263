"""The platform on real pods: the README's commands on a real kubelet node, end to end.

One module-scoped install (the README's "On your own cluster" block, run line by line in a
copy of the repository without built chart dependencies, as a fresh clone has them) serves
every test, in file order:

- the pods run as their charts say (uid, read-only root, no capabilities, memory limits
  read back from each container's own cgroup);
- every reading the chart's simulator published is stored exactly once;
- the operator starts the first training by itself, and the inference pods serve the
  forecasts ingest stores, over gRPC through the headless Service;
- readiness probes really gate readiness (HiveMQ down: the bridges go unready and back);
- a PodDisruptionBudget refuses an eviction through the Eviction API;
- faults mid-stream (bridge, ingest, inference and Kafka broker pods deleted, the operator
  deleted mid-rollout of a new image tag) and still every reading stored exactly once.

Grafana is disabled here: its image cannot be had on this machine (README, Limitations).
Measurements (time to Ready, memory per pod at rest and under load, readings per second)
are written to `<basetemp>/node-platform.json`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
import yaml
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.localstack.node import CGROUP_PARENT, NODE_NAME
from energy_harness.localstack.process import http_get
from energy_harness.testing import Reading, expected_rows, wait_for

pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "energy"
PIPELINE = "demo"
WORKER_UID = 10001


def readme_commands() -> list[str]:
    """The README's "On your own cluster" block, one command per line, as written."""
    section = (REPO / "README.md").read_text().split("On your own cluster", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "README: no ```bash block after 'On your own cluster'"
    return [line for line in match.group(1).splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def image_overrides(images: dict[str, str]) -> dict[str, Any]:
    """What the test changes of the chart's values: the stand-in images, and no Grafana."""

    def split(tag: str) -> dict[str, str]:
        repository, _, version = tag.rpartition(":")
        return {"repository": repository, "tag": version}

    return {
        "grafana": {"enabled": False},
        "kafka": {"image": split(images["kafka"])},
        "postgres": {"image": split(images["postgres"])},
        "hivemq": {"image": split(images["hivemq"])},
        "operator": {"image": split(images["worker"])},
    }


@dataclass
class Platform:
    kube: KubeControlPlane
    images: dict[str, str]
    workdir: Path
    report: dict[str, Any] = field(default_factory=dict)

    def kubectl(self, *args: str, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.kube.kubectl("-n", NAMESPACE, *args, check=check, timeout=timeout)

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def pods(self, selector: str = "") -> list[dict[str, Any]]:
        args = ["pods"] + ([f"-l={selector}"] if selector else [])
        return [p for p in self.get(*args)["items"] if not p["metadata"].get("deletionTimestamp")]

    def worker_pods(self, worker: str) -> list[dict[str, Any]]:
        return self.pods(f"app.kubernetes.io/instance={PIPELINE},app.kubernetes.io/component="
                         f"{worker}")

    def exec(self, pod: str, container: str, *command: str) -> str:
        return self.kubectl("exec", pod, "-c", container, "--", *command).stdout

    def dsn(self) -> str:
        """The pipeline's DATABASE_URL, pointed at the Service's ClusterIP (kube-proxy routes
        the machine's own connections too; cluster DNS is for pods)."""
        secret = self.get("secret", "energy-postgres")
        url = base64.b64decode(secret["data"]["DATABASE_URL"]).decode()
        service = self.get("service", "energy-postgres")
        parts = urlsplit(url)
        netloc = parts.netloc.replace(parts.hostname or "", service["spec"]["clusterIP"], 1)
        return urlunsplit(parts._replace(netloc=netloc))

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

    def pipeline_ready(self) -> bool:
        conditions = self.get("energypipeline", PIPELINE).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _record(platform: Platform, key: str, value: Any) -> None:
    platform.report[key] = value
    path = platform.workdir.parent / "node-platform.json"
    path.write_text(json.dumps(platform.report, indent=2, default=str))


@pytest.fixture(scope="module")
def platform(node_kube: KubeControlPlane, node_images: dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    workdir = tmp_path_factory.mktemp("fresh-clone")
    # What a clone has: the tracked files, so no chart dependencies built into charts/.
    for name in ("charts", "manifests"):
        shutil.copytree(REPO / name, workdir / name,
                        ignore=shutil.ignore_patterns("*.tgz", "__pycache__"))
    built = workdir / "charts" / "energy-platform" / "charts"
    shutil.rmtree(built, ignore_errors=True)
    values = workdir / "node-test-values.yaml"
    values.write_text(yaml.safe_dump(image_overrides(node_images)))
    assert node_kube.tools is not None
    env = {**node_kube.env(),
           "PATH": f"{node_kube.tools.bin_dir}{os.pathsep}{node_kube.tools.helm.parent}"
                   f"{os.pathsep}{os.environ['PATH']}"}
    plat = Platform(node_kube, node_images, workdir)
    started = None
    for line in readme_commands():
        command = line
        if line.startswith("helm install "):
            started = time.monotonic()
            command = f"{line} -f {shlex.quote(str(values))}"
        result = subprocess.run(["bash", "-c", command], cwd=workdir, env=env,
                                capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, (
            f"README command failed: {command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    assert started is not None, "README: no helm install command"
    _record(plat, "helm_install_to_ready_s", round(time.monotonic() - started, 1))
    yield plat
    # Leave the node as the next module would want it: nothing of ours running.
    node_kube.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


# -- the pods as the charts say ----------------------------------------------------------------

def _quantity_bytes(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6,
             "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def test_the_readme_commands_bring_every_pod_up_on_the_real_node(platform: Platform) -> None:
    assert platform.pipeline_ready()
    pods = platform.pods()
    assert pods
    assert {p["spec"].get("nodeName") for p in pods} == {NODE_NAME}
    names = {p["metadata"]["name"].rsplit("-", 2)[0] for p in pods}
    assert {"energy-operator", "energy-simulator", f"{PIPELINE}-bridge", f"{PIPELINE}-ingest",
            f"{PIPELINE}-inference"} <= names
    assert {f"energy-kafka-{i}" for i in range(3)} <= {p["metadata"]["name"] for p in pods}


def test_every_container_runs_with_its_chart_security_context_and_limits(
    platform: Platform,
) -> None:
    checked = 0
    for pod in platform.pods():
        if pod["status"].get("phase") != "Running":
            continue
        pod_context = pod["spec"].get("securityContext", {})
        for container in pod["spec"]["containers"]:
            context = {**pod_context, **container.get("securityContext", {})}
            name, cname = pod["metadata"]["name"], container["name"]
            status = platform.exec(name, cname, "cat", "/proc/1/status")
            uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
            if "runAsUser" in context:
                assert uid == context["runAsUser"], (name, cname)
            if context.get("runAsNonRoot"):
                assert uid != 0, (name, cname)
            if container["image"].startswith(platform.images["worker"].rpartition(":")[0]):
                # The project's image, whatever runs it (operator, workers, simulator, jobs).
                assert uid == WORKER_UID, (name, cname)
            if context.get("capabilities", {}).get("drop") == ["ALL"]:
                assert re.search(r"^CapEff:\s+0+$", status, re.M), (name, cname, status)
            mounts = platform.exec(name, cname, "cat", "/proc/1/mounts")
            root = next(line.split() for line in mounts.splitlines() if line.split()[1] == "/")
            assert ("ro" in root[3].split(",")) == bool(context.get("readOnlyRootFilesystem")), (
                name, cname, root)
            limit = container.get("resources", {}).get("limits", {}).get("memory")
            if limit:
                cgroup = platform.exec(name, cname, "cat",
                                       "/sys/fs/cgroup/memory/memory.limit_in_bytes")
                assert int(cgroup) == _quantity_bytes(limit), (name, cname)
            checked += 1
    assert checked >= 12


def test_privileged_pods_are_refused(platform: Platform) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged"},
           "spec": {"containers": [{"name": "c", "image": platform.images["worker"],
                                    "securityContext": {"privileged": True}}]}}
    result = platform.kube.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(pod),
                                   check=False)
    assert result.returncode != 0
    assert "privileged" in result.stderr


# -- the data --------------------------------------------------------------------------------

def _simulation(platform: Platform, pod: dict[str, Any]) -> dict[str, Any]:
    """The chart simulator's run: its "simulating" log line (start, sites, devices, ...)."""
    logs = platform.kubectl("logs", pod["metadata"]["name"]).stdout
    for line in logs.splitlines():
        with_json = line[line.find("{"):] if "{" in line else ""
        try:
            record = json.loads(with_json)
        except ValueError:
            continue
        if record.get("message") == "simulating" or record.get("msg") == "simulating":
            return record
    raise AssertionError(f"no 'simulating' line in the simulator's log:\n{logs[-2000:]}")


def _expected_window(run: dict[str, Any], end: datetime) -> tuple[datetime, set[Reading]]:
    start = datetime.fromisoformat(run["start"])
    interval = timedelta(seconds=run["interval_s"])
    steps = int((end - start) / interval)
    args = [f"--sites={run['sites']}", f"--devices={run['devices']}",
            f"--interval={int(interval.total_seconds())}s", f"--start={start.isoformat()}",
            f"--duration={int(steps * interval.total_seconds())}s", f"--seed={run['seed']}"]
    return start + steps * interval, expected_rows(args)


def test_every_reading_of_the_chart_simulator_is_stored_exactly_once(platform: Platform) -> None:
    [simulator] = platform.pods("app.kubernetes.io/name=simulator")
    # A restart would have begun another run (another start): then nothing is comparable.
    assert simulator["status"]["containerStatuses"][0]["restartCount"] == 0
    run = _simulation(platform, simulator)
    start = datetime.fromisoformat(run["start"])
    # Everything up to now is published (the backfill at once, then each when its time comes).
    end, expected = _expected_window(run, datetime.now(UTC) - timedelta(minutes=1))
    assert len(expected) >= 50_000
    began = time.monotonic()
    wait_for(lambda: len(platform.readings_between(start, end)) >= len(expected), 900,
             f"{len(expected)} simulated readings stored", interval=5)
    _record(platform, "backfill_readings", len(expected))
    _record(platform, "backfill_wait_after_ready_s", round(time.monotonic() - began, 1))
    assert platform.readings_between(start, end) == expected


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_operator_trains_by_itself_and_inference_pods_serve_the_forecasts(
    platform: Platform,
) -> None:
    began = time.monotonic()

    def first_training_succeeded() -> bool:
        found = platform.kubectl("get", "job", f"{PIPELINE}-train-first", "-o", "json",
                                 check=False)
        return found.returncode == 0 and json.loads(found.stdout)["status"].get("succeeded") == 1

    wait_for(first_training_succeeded, 900, f"Job {PIPELINE}-train-first succeeded", interval=5)
    _record(platform, "first_training_done_s", round(time.monotonic() - began, 1))
    events = platform.kubectl("get", "events", "--field-selector",
                              f"involvedObject.name={PIPELINE}").stdout
    assert "FirstTrainingStarted" in events, events
    platform.kubectl("rollout", "status", f"deployment/{PIPELINE}-inference", "--timeout=600s",
                     timeout=660)
    wait_for(lambda: all(c["ready"] for p in platform.worker_pods("inference")
                         for c in p["status"].get("containerStatuses", [])), 600,
             "inference pods ready with the first model", interval=5)
    wait_for(lambda: platform.sql("SELECT count(*) FROM forecasts")[0][0] > 0, 600,
             "forecasts stored", interval=5)
    served = {}
    for pod in platform.worker_pods("inference"):
        status, body = http_get(8080, "/metrics", host=pod["status"]["podIP"])
        assert status == 200
        served[pod["metadata"]["name"]] = _metric(body, "energy_inference_requests_total",
                                                  code="OK")
    # Both pods behind the headless Service answered: ingest balances over its addresses.
    assert served and all(count > 0 for count in served.values()), served
    issued = platform.sql("SELECT count(DISTINCT (site_id, issued_at)) FROM forecasts")[0][0]
    _record(platform, "forecast_origins_after_first_model", issued)
    assert issued > 0


# -- probes, budgets --------------------------------------------------------------------------

def _ready_count(platform: Platform, worker: str) -> int:
    return sum(all(c["ready"] for c in p["status"].get("containerStatuses", []))
               for p in platform.worker_pods(worker))


def test_a_bridge_goes_unready_while_hivemq_is_down_and_ready_again(platform: Platform) -> None:
    bridges = len(platform.worker_pods("bridge"))
    assert _ready_count(platform, "bridge") == bridges
    platform.kubectl("scale", "statefulset/energy-hivemq", "--replicas=0")
    try:
        wait_for(lambda: _ready_count(platform, "bridge") == 0, 180,
                 "every bridge unready without MQTT", interval=2)
        # Unready, not restarted: liveness is another question than readiness.
        restarts = [c["restartCount"] for p in platform.worker_pods("bridge")
                    for c in p["status"]["containerStatuses"]]
    finally:
        platform.kubectl("scale", "statefulset/energy-hivemq", "--replicas=1")
    wait_for(lambda: _ready_count(platform, "bridge") == bridges, 300,
             "every bridge ready again", interval=2)
    assert [c["restartCount"] for p in platform.worker_pods("bridge")
            for c in p["status"]["containerStatuses"]] == restarts


def test_a_disruption_budget_refuses_the_second_eviction(platform: Platform) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(platform.kube.api_client)
    wait_for(lambda: _ready_count(platform, "ingest") == 2, 300, "two ready ingest pods")
    first, second = (p["metadata"]["name"] for p in platform.worker_pods("ingest"))

    def evict(name: str) -> None:
        core.create_namespaced_pod_eviction(name, NAMESPACE, client.V1Eviction(
            metadata=client.V1ObjectMeta(name=name, namespace=NAMESPACE)))

    evict(first)
    with pytest.raises(ApiException) as refused:
        evict(second)
    assert refused.value.status == 429
    assert "disruption budget" in refused.value.body
    wait_for(lambda: _ready_count(platform, "ingest") == 2, 300, "ingest back to two")


# -- faults mid-stream ------------------------------------------------------------------------

FAULT_RUN = ["--sites=2", "--devices=2", "--interval=1m", "--start=2025-06-01T00:00:00+00:00",
             "--duration=6h", "--seed=7"]


def _fault_simulator(platform: Platform) -> dict[str, Any]:
    worker = platform.images["worker"]
    hardened = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]}}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "fault-simulator"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": WORKER_UID,
                                "runAsGroup": WORKER_UID,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "simulate", "image": worker,
                "args": ["simulate", *FAULT_RUN, "--rate=60", "--client-id=fault-simulator",
                         "--hold-until-subscribed"],
                "env": [{"name": "MQTT_HOST", "value": "energy-hivemq.energy.svc"},
                        {"name": "MQTT_PORT", "value": "1883"}],
                "securityContext": hardened,
                "resources": {"requests": {"cpu": "20m", "memory": "96Mi"},
                              "limits": {"memory": "256Mi"}},
            }],
        },
    }


def _pod_memory(platform: Platform) -> dict[str, int]:
    """Working set (usage minus inactive file pages, as the kubelet counts) of each pod,
    read from the node's own cgroup tree."""
    memory = {}
    base = Path("/sys/fs/cgroup/memory") / CGROUP_PARENT / "kubepods"
    for pod in platform.pods():
        uid = pod["metadata"]["uid"]
        found = list(base.glob(f"**/pod{uid}"))
        if not found:
            continue
        usage = int((found[0] / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (found[0] / "memory.stat").read_text().splitlines())
        memory[pod["metadata"]["name"]] = usage - int(stat.get("total_inactive_file", 0))
    return memory


def _delete_one(platform: Platform, selector: str) -> str:
    name = platform.pods(selector)[0]["metadata"]["name"]
    platform.kubectl("delete", "pod", name, "--wait=false")
    return name


def test_faults_mid_stream_lose_and_duplicate_nothing(platform: Platform) -> None:
    _record(platform, "memory_at_rest_bytes", _pod_memory(platform))
    platform.kube.node.ctr("images", "tag", platform.images["worker"],
                           platform.images["worker"] + "-rollout")
    expected = expected_rows(FAULT_RUN)
    start = datetime(2025, 6, 1, tzinfo=UTC)
    end = start + timedelta(hours=6)
    platform.kube.kubectl("-n", NAMESPACE, "apply", "-f", "-",
                          input=json.dumps(_fault_simulator(platform)))
    began = time.monotonic()
    wait_for(lambda: len(platform.readings_between(start, end)) > 300, 300,
             "the fault run's readings flowing", interval=1)
    _record(platform, "memory_under_load_bytes", _pod_memory(platform))
    worker = f"app.kubernetes.io/instance={PIPELINE},app.kubernetes.io/component="
    faults: list[tuple[str, Callable[[], object]]] = [
        ("bridge pod", lambda: _delete_one(platform, worker + "bridge")),
        ("ingest pod", lambda: _delete_one(platform, worker + "ingest")),
        ("inference pod", lambda: _delete_one(platform, worker + "inference")),
        ("kafka broker",
         lambda: platform.kubectl("delete", "pod", "energy-kafka-1", "--wait=false")),
        ("new image tag", lambda: platform.kubectl(
            "patch", "energypipeline", PIPELINE, "--type=merge", "-p", json.dumps({"spec": {
                "ingestion": {"image": platform.images["worker"] + "-rollout"},
                "inference": {"image": platform.images["worker"] + "-rollout"}}}))),
        ("operator mid-rollout",
         lambda: _delete_one(platform, "app.kubernetes.io/component=operator")),
    ]
    for _, fault in faults:
        fault()
        time.sleep(8)
    wait_for(lambda: platform.get("pod", "fault-simulator")["status"].get("phase")
             in ("Succeeded", "Failed"), 900, "the fault run finished publishing", interval=3)
    assert platform.get("pod", "fault-simulator")["status"]["phase"] == "Succeeded", \
        platform.kubectl("logs", "fault-simulator").stdout[-2000:]
    wait_for(lambda: len(platform.readings_between(start, end)) >= len(expected), 900,
             f"{len(expected)} fault-run readings stored", interval=3)
    _record(platform, "fault_run_readings", len(expected))
    _record(platform, "fault_run_published_to_stored_s", round(time.monotonic() - began, 1))
    assert platform.readings_between(start, end) == expected
    # The rollout finished under the new operator: every worker runs the new tag.
    wait_for(lambda: all(c["image"].endswith("-rollout")
                         for w in ("bridge", "ingest", "inference")
                         for p in platform.worker_pods(w) for c in p["spec"]["containers"]),
             600, "every worker on the new image tag", interval=5)
