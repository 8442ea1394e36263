"""The platform on real pods: the README's commands on a real kubelet node, end to end.

One module-scoped install (the README's "On your own cluster" block, run line by line in a
copy of the repository without built chart dependencies, as a fresh clone has them) serves
every test, in file order:

- PostgreSQL admits TLS only, and Kafka SASL_SSL only, with the certificates (and Kafka's
  passwords) the chart's hook Job made in the cluster; so does HiveMQ, over TLS with the
  users the hook made (the last test: a device added by `helm upgrade` gets in, within its
  permission only, and its readings are stored);
- the pods run as their charts say (uid, read-only root, no capabilities, memory limits
  read back from each container's own cgroup);
- every reading the chart's simulator published is stored exactly once;
- the operator starts the first training by itself, and the inference pods serve the
  forecasts ingest stores, over gRPC through the headless Service;
- readiness probes really gate readiness (HiveMQ down: the bridges go unready and back);
- a PodDisruptionBudget refuses an eviction through the Eviction API;
- NetworkPolicies are enforced (kube-network-policies on the node): a stray pod reaches no
  service, a device reaches MQTT only, while every other test passes under the same policies;
- faults mid-stream (bridge, ingest, inference and Kafka broker pods deleted, the operator
  deleted mid-rollout of a new image tag) and still every reading stored exactly once.

Grafana is disabled here: its image cannot be had on this machine (README, Limitations).
Times seen on the way are written to `<basetemp>/node-platform.json`; memory and readings per
second are measured by `python -m energy_harness.bench.node_platform` (`make bench`).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.localstack.node import NODE_NAME, POD_SUBNET
from energy_harness.localstack.process import ServiceError, http_get
from energy_harness.node_platform import (
    MQTT_TLS_PORT,
    MQTT_TLS_SECRET,
    MQTT_USERS_SECRET,
    NAMESPACE,
    PIPELINE,
    RELEASE,
    WORKER_UID,
    Platform,
    expected_window,
    install_from_readme,
    simulator_pod,
)
from energy_harness.testing import expected_rows, wait_for
from energy_pipeline.core.contracts import Reading, mqtt_topic

pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]

REPORT: dict[str, Any] = {}


def _record(tmp_path_factory: pytest.TempPathFactory, key: str, value: Any) -> None:
    """Measurements, no targets (those are `make bench`'s): <basetemp>/node-platform.json."""
    REPORT[key] = value
    path = tmp_path_factory.getbasetemp() / "node-platform.json"
    path.write_text(json.dumps(REPORT, indent=2, default=str))


@pytest.fixture(scope="module")
def platform(node_kube: KubeControlPlane, node_images: dict[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    plat, ready_s = install_from_readme(node_kube, node_images,
                                        tmp_path_factory.mktemp("fresh-clone"))
    _record(tmp_path_factory, "helm_install_to_ready_s", round(ready_s, 1))
    yield plat
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
    # Every address is the node's CNI's: nothing but the kubelet wrote these pods' status
    # (kwok once did, from its own range, and marked a Job's pod Succeeded too early).
    subnet = ipaddress.ip_network(POD_SUBNET)
    assert all(ipaddress.ip_address(p["status"]["podIP"]) in subnet for p in pods
               if p["status"].get("podIP")), [(p["metadata"]["name"], p["status"].get("podIP"))
                                               for p in pods]
    names = {p["metadata"]["name"].rsplit("-", 2)[0] for p in pods}
    assert {"energy-operator", "energy-simulator", f"{PIPELINE}-bridge", f"{PIPELINE}-ingest",
            f"{PIPELINE}-inference"} <= names
    assert {f"energy-kafka-{i}" for i in range(3)} <= {p["metadata"]["name"] for p in pods}


def test_postgresql_admits_only_tls_with_the_certificate_the_hook_made(
    platform: Platform, tmp_path: Path,
) -> None:
    """TLS is the chart's default: the pre-install hook Job made the CA and the server's
    certificate in the cluster, the server refuses plain TCP, and every database connection
    of the pipeline is encrypted and verified."""
    secret = platform.get("secret", "energy-postgres-tls")
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "energy-pipeline"
    # hook-succeeded: the Job and its ServiceAccount are gone once it has done its work.
    for kind in ("job", "serviceaccount", "role"):
        gone = platform.kubectl("get", kind, "energy-platform-secrets", check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, (kind, gone.stdout)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(secret["data"]["ca.crt"]))
    url = base64.b64decode(platform.get("secret", "energy-postgres-app")["data"][
        "DATABASE_URL"]).decode()
    address = platform.get("service", "energy-postgres")["spec"]["clusterIP"]
    # verify-full against the name in the workers' DATABASE_URL (hostaddr: no cluster DNS here).
    with psycopg2.connect(url, hostaddr=address, sslmode="verify-full", sslrootcert=str(ca),
                          connect_timeout=10) as conn, conn.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone() == (True,)
        # The pipeline's own connections (same role, so visible to it): every one encrypted.
        cur.execute("SELECT a.application_name, s.ssl FROM pg_stat_activity a "
                    "JOIN pg_stat_ssl s USING (pid) "
                    "WHERE a.application_name LIKE 'energy-pipeline %%'")
        sessions = cur.fetchall()
    conn.close()
    assert any(name.startswith("energy-pipeline ingest") for name, _ in sessions), sessions
    assert all(encrypted for _, encrypted in sessions), sessions
    with pytest.raises(psycopg2.OperationalError, match=r"no pg_hba.conf entry .*no encryption"):
        psycopg2.connect(url, hostaddr=address, sslmode="disable", connect_timeout=10).close()


def test_kafka_admits_only_sasl_ssl_clients_with_the_certificate_the_hook_made(
    platform: Platform, tmp_path: Path,
) -> None:
    """SASL_SSL is the chart's default: the hook made the brokers' certificate (CN the
    authorizer's super user, the pods' names) and one password per role; a client with a
    wrong password is refused, and so is one that does not speak TLS. The pipeline's own
    traffic (every other test here) runs over it."""
    tls = platform.get("secret", "energy-kafka-tls")
    users = platform.get("secret", "energy-kafka-sasl")
    for made in (tls, users):
        assert made["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "energy-pipeline"
    assert sorted(users["data"]) == sorted(f"{u}-{k}" for u in ("bridge", "ingest", "operator")
                                           for k in ("username", "password"))
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(tls["data"]["ca.crt"]))
    broker = _pod_ip(platform, "statefulset.kubernetes.io/pod-name=energy-kafka-0")
    name = f"energy-kafka-0.energy-kafka-headless.{NAMESPACE}.svc.cluster.local"
    def handshake() -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(
                ["openssl", "s_client", "-connect", f"{broker}:9092", "-CAfile", str(ca),
                 "-verify_hostname", name, "-verify_return_error", "-brief"],
                input="", capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return None  # a broker starved of CPU right after Ready: asked again

    # A client nobody here wrote: the chain and the pod's name check out.
    shown = wait_for(handshake, 300, "a TLS handshake with broker 0", interval=5)
    assert shown.returncode == 0, shown.stderr
    assert "Verification: OK" in shown.stderr and "CN=kafka-broker" in shown.stderr.replace(
        " = ", "="), shown.stderr

    def metadata(**config: str) -> str:
        """"ok" when the broker answered a metadata request, else what the client reported
        (the call's error and librdkafka's error callback, which says why)."""
        errors: list[str] = []
        admin = AdminClient({"bootstrap.servers": f"{broker}:9092", "socket.timeout.ms": 10000,
                             "ssl.ca.location": str(ca),
                             # Addressed by IP from this machine (no cluster DNS here).
                             "ssl.endpoint.identification.algorithm": "none",
                             "log_level": 0,  # what matters reaches error_cb
                             "error_cb": lambda err: errors.append(err.str()), **config})
        try:
            admin.list_topics(timeout=15)
        except KafkaException as exc:
            errors.append(exc.args[0].str())
            admin.poll(1)  # serves error_cb: why the broker dropped us (the call says "down")
            return "; ".join(errors)
        # Answered. (Connections to the brokers' advertised names, which this machine cannot
        # resolve, may fail afterwards: not the question here.)
        return "ok"

    password = base64.b64decode(users["data"]["operator-password"]).decode()
    login = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
             "sasl.username": "operator", "sasl.password": password}
    # The positive control, given time: right after Ready the two cores are busy with the
    # backfill and the first training (seen: one 15 s metadata call timing out then).
    wait_for(lambda: metadata(**login) == "ok", 300, "the operator's login accepted",
             interval=5)
    refused = metadata(**{"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                          "sasl.username": "operator", "sasl.password": password + "x"})
    assert "Authentication failed" in refused, refused
    assert metadata(**{"security.protocol": "PLAINTEXT"}) != "ok"

    # A pod's empty-volume check (charts/kafka/files/empty-volume.sh) logs in as the users
    # container does, with the node certificate on the mutual-TLS listener: asked from a
    # running pod, the other two answer, and no partition on node 1 is without a leader.
    def check() -> str | None:
        # One question with a 5 s timeout from a JVM tool: on a node this busy it may go
        # unanswered (exit 2, seen), and that is asked again; any other answer is final.
        said = platform.kubectl("exec", "energy-kafka-0", "-c", "kafka", "--", "sh", "-c",
                                "sh /etc/kafka-base/empty-volume.sh 1 --check 2>&1",
                                check=False)
        return None if said.returncode == 2 else f"exit {said.returncode}: {said.stdout}"

    said = wait_for(check, 300, "an answer to the empty-volume check", interval=5)
    assert said.startswith("exit 0:"), said
    assert "the cluster answered: no partition with a replica on node 1 is without a leader" in (
        said), said


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
    result = platform.apply(pod, check=False)
    assert result.returncode != 0
    assert "privileged" in result.stderr


# -- the data --------------------------------------------------------------------------------

def test_every_reading_of_the_chart_simulator_is_stored_exactly_once(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run = platform.chart_simulation()
    # A restart would have begun another run (another start): then nothing is comparable.
    assert run["restarts"] == 0
    start = datetime.fromisoformat(run["start"])
    # Everything up to now is published (the backfill at once, then each when its time comes).
    end, expected = expected_window(run, datetime.now(UTC) - timedelta(minutes=1))
    assert len(expected) >= 50_000
    began = time.monotonic()
    wait_for(lambda: platform.count_between(start, end) >= len(expected), 900,
             f"{len(expected)} simulated readings stored", interval=5)
    _record(tmp_path_factory, "backfill_readings", len(expected))
    _record(tmp_path_factory, "backfill_stored_after_ready_s", round(time.monotonic() - began, 1))
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
    platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> None:
    began = time.monotonic()

    def first_training_succeeded() -> bool:
        found = platform.kubectl("get", "job", f"{PIPELINE}-train-first", "-o", "json",
                                 check=False)
        return found.returncode == 0 and json.loads(found.stdout)["status"].get("succeeded") == 1

    wait_for(first_training_succeeded, 900, f"Job {PIPELINE}-train-first succeeded", interval=5)
    _record(tmp_path_factory, "first_training_done_s", round(time.monotonic() - began, 1))
    events = platform.kubectl("get", "events", "--field-selector",
                              f"involvedObject.name={PIPELINE}").stdout
    assert "FirstTrainingStarted" in events, events
    try:
        platform.kubectl("rollout", "status", f"deployment/{PIPELINE}-inference",
                         "--timeout=600s", timeout=660)
        wait_for(lambda: all(c["ready"] for p in platform.worker_pods("inference")
                             for c in p["status"].get("containerStatuses", [])), 600,
                 "inference pods ready with the first model", interval=5)
    except (AssertionError, ServiceError) as exc:
        raise AssertionError(f"{exc}\n{platform.diagnosis('inference')}") from None
    wait_for(lambda: platform.sql("SELECT count(*) FROM forecasts")[0][0] > 0, 600,
             "forecasts stored", interval=5)
    served: dict[str, float] = {}

    def every_pod_served() -> bool:
        served.clear()
        for pod in platform.worker_pods("inference"):
            status, body = http_get(8080, "/metrics", host=pod["status"]["podIP"])
            assert status == 200
            served[pod["metadata"]["name"]] = _metric(
                body, "energy_inference_requests_total", code="OK")
        if len(served) == 2 and all(count > 0 for count in served.values()):
            return True
        # The backfill's forecasts may all have been asked for before the second pod was
        # SERVING (or before ingest's channel re-resolved the headless Service, at the latest
        # when the server ages the connection after a minute), and no hour closes in real
        # time here for a while: owe a few stored origins again (the store is idempotent).
        platform.sql("INSERT INTO forecast_backlog (site_id, origin) "
                     "SELECT DISTINCT site_id, issued_at FROM forecasts "
                     "ORDER BY issued_at DESC LIMIT 8 ON CONFLICT DO NOTHING RETURNING 1")
        return False

    # Both pods behind the headless Service answer: ingest balances over its addresses.
    try:
        wait_for(every_pod_served, 240, "both inference pods serving forecasts", interval=5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; requests served per pod: {served}") from None
    issued = platform.sql("SELECT count(DISTINCT (site_id, issued_at)) FROM forecasts")[0][0]
    _record(tmp_path_factory, "forecast_origins_after_first_model", issued)
    assert issued > 0


# -- network policies -------------------------------------------------------------------------

def _pod_ip(platform: Platform, selector: str) -> str:
    return platform.pods(selector)[0]["status"]["podIP"]


def test_network_policies_keep_a_stray_pod_out_and_let_a_device_reach_mqtt_only(
    platform: Platform,
) -> None:
    """The node enforces NetworkPolicies (kube-network-policies). A pod of no role in the
    release's own namespace reaches none of Kafka (client, controller and internal listeners),
    PostgreSQL, MQTT or inference's gRPC; a pod labelled as the chart's devices are reaches
    MQTT and nothing else. Every other test here runs with the same policies enforced."""
    kafka = _pod_ip(platform, "statefulset.kubernetes.io/pod-name=energy-kafka-0")
    postgres = _pod_ip(platform, "app.kubernetes.io/name=postgres")
    hivemq = _pod_ip(platform, "app.kubernetes.io/name=hivemq")
    inference = _pod_ip(platform, f"app.kubernetes.io/instance={PIPELINE},"
                                  "app.kubernetes.io/component=inference")
    targets = {"kafka": f"{kafka}:9092", "kafka-controller": f"{kafka}:9093",
               "kafka-internal": f"{kafka}:9094", "postgres": f"{postgres}:5432",
               "mqtt": f"{hivemq}:{MQTT_TLS_PORT}", "grpc": f"{inference}:50051"}
    stray = platform.probe("stray", {"app.kubernetes.io/name": "stray"}, list(targets.values()))
    assert stray == dict.fromkeys(targets.values(), "timeout")
    device = platform.probe("device", {"app.kubernetes.io/name": "simulator",
                                       "app.kubernetes.io/component": "simulator",
                                       "app.kubernetes.io/instance": "device"},
                            list(targets.values()))
    assert device == {**dict.fromkeys(targets.values(), "timeout"), targets["mqtt"]: "open"}


# -- probes, budgets --------------------------------------------------------------------------

def test_a_bridge_goes_unready_while_hivemq_is_down_and_ready_again(platform: Platform) -> None:
    bridges = len(platform.worker_pods("bridge"))
    assert platform.ready_count("bridge") == bridges
    platform.kubectl("scale", "statefulset/energy-hivemq", "--replicas=0")
    try:
        wait_for(lambda: platform.ready_count("bridge") == 0, 180,
                 "every bridge unready without MQTT", interval=2)
        # Unready, not restarted: liveness is another question than readiness.
        restarts = [c["restartCount"] for p in platform.worker_pods("bridge")
                    for c in p["status"]["containerStatuses"]]
    finally:
        platform.kubectl("scale", "statefulset/energy-hivemq", "--replicas=1")
    wait_for(lambda: platform.ready_count("bridge") == bridges, 300,
             "every bridge ready again", interval=2)
    assert [c["restartCount"] for p in platform.worker_pods("bridge")
            for c in p["status"]["containerStatuses"]] == restarts


def test_a_disruption_budget_refuses_the_second_eviction(platform: Platform) -> None:
    """With one ingest pod evicted, the budget refuses to evict the other, Ready one: a drain
    never takes the stream's last consumer."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(platform.kube.api_client)
    pdb = f"{PIPELINE}-ingest"

    def budget() -> dict[str, Any]:
        return platform.get("pdb", pdb)["status"]

    def ready(name: str) -> bool:
        pod = platform.get("pod", name)
        return not pod["metadata"].get("deletionTimestamp") and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod["status"].get("conditions", []))  # fmt: skip

    def state() -> str:
        pods = {p["metadata"]["name"]: [c["status"] for c in p["status"].get("conditions", [])
                                        if c["type"] == "Ready"]
                for p in platform.worker_pods("ingest")}  # fmt: skip
        return f"pods Ready: {pods}; budget: {budget()}"

    def evict(name: str) -> None:
        core.create_namespaced_pod_eviction(name, NAMESPACE, client.V1Eviction(
            metadata=client.V1ObjectMeta(name=name, namespace=NAMESPACE)))

    def counted_out() -> str:
        status = budget()
        if status.get("currentHealthy", 2) < 2:
            return "counted"
        # (Right after an eviction the API server has set disruptionsAllowed to 0; 1 again
        # means the controller counted the first pod's replacement Ready already.)
        return "replaced" if status.get("disruptionsAllowed") == 1 else ""

    # The eviction API decides on the budget's status, and Kubernetes' default policy
    # (IfHealthyBudget) lets a pod that is not Ready go while the budget counts enough healthy
    # ones. So the refusal is asserted in the state it is about: the first pod evicted and
    # counted out, the other Ready and the only one counted. A readiness probe that times out
    # on this busy machine can spoil that state (the other pod unready while the first one's
    # replacement is already counted, or one pod unready right before the first eviction):
    # then the scenario starts again, at most five times, and says why each time.
    spoiled: list[str] = []
    for _attempt in range(5):
        wait_for(lambda: platform.ready_count("ingest") == 2
                 and budget().get("currentHealthy") == 2
                 and budget().get("disruptionsAllowed") == 1,
                 300, "two ready ingest pods, counted by their budget")  # fmt: skip
        first, second = (p["metadata"]["name"] for p in platform.worker_pods("ingest"))
        try:
            evict(first)
        except ApiException as refused:
            # A probe timeout between the wait and the eviction: the budget counted one pod
            # unready and rightly refused the first eviction (seen in CI). Not the state this
            # test is about: start again.
            if refused.status == 429:
                spoiled.append(f"first eviction refused ({state()})")
                continue
            raise
        seen = wait_for(counted_out, 60, "the budget counting the evicted pod out")
        if seen == "replaced" or budget().get("currentHealthy") != 1 or not ready(second):
            # The replacement was counted already, or the other pod is not Ready.
            spoiled.append(f"after the first eviction: {seen}, {state()}")
            continue
        try:
            evict(second)
        except ApiException as refused:
            assert refused.status == 429, state()
            assert "disruption budget" in refused.body
            break
        pytest.fail(f"the second eviction was allowed; {state()}")
    else:
        pytest.fail("never saw one ingest pod evicted and the other Ready; attempts:\n"
                    + "\n".join(spoiled))
    assert platform.pod_phase(second) == "Running", state()
    wait_for(lambda: platform.ready_count("ingest") == 2, 300, "ingest back to two")


# -- faults mid-stream ------------------------------------------------------------------------

FAULT_RUN = ["--sites=2", "--devices=2", "--interval=1m", "--start=2025-06-01T00:00:00+00:00",
             "--duration=6h", "--seed=7"]


def _delete_one(platform: Platform, selector: str) -> str:
    name = platform.pods(selector)[0]["metadata"]["name"]
    platform.kubectl("delete", "pod", name, "--wait=false")
    return name


def _where_missing(platform: Platform, expected: set[tuple[Any, ...]], start: datetime,
                   end: datetime) -> str:
    """Which readings are missing and how far each got: in Kafka (topic, partition, offset)
    or not, offset gaps ingest recorded, the bridges' logs."""
    missing = sorted(expected - platform.readings_between(start, end))
    parts = [f"missing {len(missing)}: {missing[:20]}"]
    try:
        parts.append(f"in Kafka: {json.dumps(platform.find_in_kafka(missing[:50]))}")
    except Exception as exc:  # a diagnosis must not hide the failure it explains
        parts.append(f"Kafka not searched: {exc}")
    parts.append(f"ingest_lost_records: {platform.sql('SELECT * FROM ingest_lost_records')}")
    for pod in platform.worker_pods("bridge"):
        logs = platform.kubectl("logs", pod["metadata"]["name"], "--tail=40", check=False)
        parts.append(f"--- {pod['metadata']['name']}\n{logs.stdout[-3000:]}")
    return "\n".join(parts)


def test_faults_mid_stream_lose_and_duplicate_nothing(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> None:
    platform.kube.node.ctr("images", "tag", platform.images["worker"],
                           platform.images["worker"] + "-rollout")
    expected = expected_rows(FAULT_RUN)
    start = datetime(2025, 6, 1, tzinfo=UTC)
    end = start + timedelta(hours=6)
    platform.apply(simulator_pod("fault-simulator", platform.images["worker"],
                                 [*FAULT_RUN, "--rate=60"]))
    began = time.monotonic()
    wait_for(lambda: platform.count_between(start, end) > 300, 300,
             "the fault run's readings flowing", interval=1)
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
    wait_for(lambda: platform.pod_phase("fault-simulator") in ("Succeeded", "Failed"), 900,
             "the fault run finished publishing", interval=3)
    assert platform.get("pod", "fault-simulator")["status"]["phase"] == "Succeeded", \
        platform.kubectl("logs", "fault-simulator").stdout[-2000:]
    try:
        wait_for(lambda: platform.count_between(start, end) >= len(expected), 900,
                 f"{len(expected)} fault-run readings stored", interval=3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_where_missing(platform, expected, start, end)}") from None
    _record(tmp_path_factory, "fault_run_readings", len(expected))
    _record(tmp_path_factory, "fault_run_published_to_stored_s",
            round(time.monotonic() - began, 1))
    assert platform.readings_between(start, end) == expected
    # The rollout finished under the new operator: every worker runs the new tag.
    wait_for(lambda: all(c["image"].endswith("-rollout")
                         for w in ("bridge", "ingest", "inference")
                         for p in platform.worker_pods(w) for c in p["spec"]["containers"]),
             600, "every worker on the new image tag", interval=5)


# -- backups ---------------------------------------------------------------------------------

def test_the_scheduled_backup_runs_on_the_node_and_writes_a_checked_dump(
    platform: Platform,
) -> None:
    """The postgres chart's CronJob, run now: as the owner over TLS verify-full, past the
    NetworkPolicy, with its security context, onto its own volume; the dump is checked with
    pg_restore --list before it gets its final name."""
    platform.kubectl("create", "job", "--from=cronjob/energy-postgres-backup", "backup-now")

    def finished() -> bool:
        status = platform.get("job", "backup-now").get("status", {})
        return bool(status.get("succeeded") or status.get("failed"))

    wait_for(finished, 300, "the backup Job finished", interval=3)
    logs = platform.kubectl("logs", "job/backup-now").stdout
    assert platform.get("job", "backup-now")["status"].get("succeeded") == 1, logs
    written = re.search(r"backup written: /backup/energy-\d{8}T\d{6}Z\.dump \((\d+) bytes\)",
                        logs)
    assert written and int(written.group(1)) > 10_000, logs


# -- MQTT: TLS and a login by default ----------------------------------------------------------

def _secret_text(platform: Platform, name: str) -> dict[str, str]:
    data = platform.get("secret", name)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_hivemq_admits_only_tls_logins_each_within_its_permission(
    platform: Platform, tmp_path: Path,
) -> None:
    """HiveMQ's secure mode is the platform chart's default: TLS only, energy-pipeline's auth
    extension (from the project image), the users the hook made. Refusals shown with clients
    nobody here wrote (openssl, mosquitto 2.0.11: for MQTT 5 its exit status is the CONNACK
    reason code). Then a device is added with `helm upgrade`: the hook writes its user, HiveMQ
    reads the file anew without a restart, the device publishes under its own site only, and
    what it published is stored exactly (the pipeline's bridge logs in likewise throughout)."""
    for name in (MQTT_TLS_SECRET, MQTT_USERS_SECRET):
        labels = platform.get("secret", name)["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "energy-pipeline", name
    users = _secret_text(platform, MQTT_USERS_SECRET)
    assert sorted(users) == ["bridge-password", "bridge-username", "simulator-password",
                             "simulator-username", "users"]
    (broker,) = platform.pods("app.kubernetes.io/name=hivemq")
    pod, address = broker["metadata"]["name"], broker["status"]["podIP"]
    # The broker is shown the hashes only, never a client's password.
    assert platform.exec(pod, "hivemq", "ls", "/etc/hivemq-credentials").split() == ["users"]
    mounted = platform.exec(pod, "hivemq", "cat", "/etc/hivemq-credentials/users")
    assert "bridge subscribe $share/energy/energy/# pbkdf2-sha256$" in mounted
    assert users["bridge-password"] not in mounted and users["simulator-password"] not in mounted
    ca = tmp_path / "ca.crt"
    ca.write_text(_secret_text(platform, MQTT_TLS_SECRET)["ca.crt"])
    shown = subprocess.run(
        ["openssl", "s_client", "-connect", f"{address}:{MQTT_TLS_PORT}", "-CAfile", str(ca),
         "-verify_hostname", f"energy-hivemq.{NAMESPACE}.svc", "-verify_return_error",
         "-brief"], input="", capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "Verification: OK" in shown.stderr, shown.stderr
    # No plain listener at all.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, 1883), timeout=10).close()

    # Addressed by IP from this machine (no cluster DNS here): --insecure skips only the host
    # name check, which openssl did above; the chain is still verified against the CA.
    tls = ["-h", address, "-p", str(MQTT_TLS_PORT), "--cafile", str(ca), "--insecure",
           "-V", "5", "-q", "1"]

    def mosquitto(tool: str, *args: str) -> tuple[int, list[str]]:
        done = subprocess.run([tool, *tls, *args], capture_output=True, text=True, timeout=60)
        return done.returncode, done.stderr.splitlines()

    def login(user: str, password: str | None = None) -> list[str]:
        """The user, its password, and a client id of its own (the extension refuses others:
        mosquitto's default, mosq-..., too)."""
        return ["-u", user, "-P", users[f"{user}-password"] if password is None else password,
                "-i", f"{user}-node-test"]

    reading = ["-t", "energy/site-x/temperature/0", "-m", "{}"]
    assert mosquitto("mosquitto_pub", *reading)[0] == 135  # Not authorized
    # (First lines: mosquitto may add "A network protocol error occurred" as HiveMQ closes.)
    status, said = mosquitto("mosquitto_pub", *login("simulator", "wrong"), *reading)
    assert (status, said[:1]) == (134, ["Connection error: Bad User Name or Password"])
    # The bridge may only subscribe; the simulator may only publish.
    status, said = mosquitto("mosquitto_pub", *login("bridge"), *reading)
    assert said[:1] == ["Warning: Publish 1 failed: Not authorized."], (status, said)
    assert mosquitto("mosquitto_sub", *login("simulator"), "-t", "energy/#", "-C", "1",
                     "-W", "10") == (0, ["All subscription requests were denied."])
    # A user may not claim another's client id (it would take that session over).
    assert mosquitto("mosquitto_pub", "-u", "simulator", "-P", users["simulator-password"],
                     "-i", "bridge-node-test", *reading)[0] == 133  # Client identifier not valid

    # A device onboarded by `helm upgrade` (the hook runs before every upgrade).
    restarts = broker["status"]["containerStatuses"][0]["restartCount"]
    platform.helm("upgrade", RELEASE, "charts/energy-platform", "--reuse-values",
                  "--set-json", 'platformSecrets.mqtt.devices=[{"name": "building-7", '
                  '"site": "site-node-7"}]', "--timeout", "10m")
    after = _secret_text(platform, MQTT_USERS_SECRET)
    assert {k: after[k] for k in users if k != "users"} == {
        k: v for k, v in users.items() if k != "users"}, "the passwords made before are kept"
    assert "building-7 publish energy/site-node-7/# pbkdf2-sha256$" in after["users"]
    readings = [Reading("site-node-7", "temperature", "3", datetime(2024, 1, 1, h, tzinfo=UTC),
                        20.0 + h) for h in range(3)]

    def publish(r: Reading) -> tuple[int, list[str]]:
        return mosquitto("mosquitto_pub", *login("building-7", after["building-7-password"]),
                         "-t", mqtt_topic(r.site, r.sensor, r.device),
                         "-m", r.to_mqtt_payload().decode())

    # The kubelet brings the changed Secret into the broker's volume (within about a minute);
    # until then the device is an unknown user (134), then it gets in.
    wait_for(lambda: publish(readings[0]) == (0, []), 240, "the new device admitted",
             interval=5)
    forged = Reading("site-node-8", "temperature", "3", datetime(2024, 1, 1, tzinfo=UTC), 99.0)
    assert publish(forged)[1][:1] == ["Warning: Publish 1 failed: Not authorized."]
    for r in readings[1:]:
        assert publish(r) == (0, [])
    stored = ("SELECT site_id, sensor, device_id, ts, value FROM readings "
              "WHERE site_id LIKE 'site-node-%%'")
    wait_for(lambda: len(platform.sql(stored)) >= len(readings), 300,
             "the device's readings stored", interval=3)
    assert {(s, n, d, ts, float(v)) for s, n, d, ts, v in platform.sql(stored)} == {
        (r.site, r.sensor, r.device, r.ts, r.value) for r in readings}
    (now,) = platform.pods("app.kubernetes.io/name=hivemq")
    assert now["metadata"]["name"] == pod
    assert now["status"]["containerStatuses"][0]["restartCount"] == restarts
