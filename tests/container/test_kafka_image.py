"""The apache/kafka stand-in, started as charts/kafka's StatefulSet starts its pods.

Each pod is a container made from the chart's rendered manifests (`helm template`), with
only the image replaced (energy_harness.chart_containers): its command, environment (the
downward API's pod name and index, the cluster id from the chart's ConfigMap), the chart's
server.properties and start.sh read-only at their mount path, a labelled named volume for
the data claim, tmpfs for every emptyDir, the pod's uid/gid/fsGroup, read-only root, no
capabilities. Kubernetes DNS is played by network aliases:
`<pod>.<headless service>.<namespace>.svc.cluster.local` per container and the client
Service's name on all three (Docker answers with every container holding an alias, as the
Service spreads over its pods).

The advertised listeners are those DNS names, so the Kafka client runs in the network too:
the worker image's Python and confluent-kafka, one short `docker run` per step, answering
in JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from energy_harness.chart_containers import (
    Container,
    Manifests,
    Pod,
    PodRunner,
    Workload,
    properties,
)
from energy_harness.localstack.docker import LABEL, DockerEngine
from energy_harness.localstack.install import KAFKA_VERSION
from energy_harness.testing import wait_for

pytestmark = pytest.mark.container

# Three JVMs and a client container share two cores: small heaps, as a user may set them.
CHART_ARGS = ("--set", "heapOpts=-Xms256m -Xmx256m")
TOPIC = "image-test-readings"
RESTARTED = 1  # the pod stopped and started again

# One step of the test's Kafka client, run in the worker image on the test network:
# `python /client/kafka_client.py STEP ARGS_JSON`, the answer as JSON on stdout's last line.
CLIENT = r"""
import json, socket, sys, time
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, NewTopic

step, args = sys.argv[1], json.loads(sys.argv[2])
deadline = time.monotonic() + args.get("timeout", 60)
quiet = {"log_level": 0}


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, **quiet})


def until(check, what):
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last["ok"]:
                return last
        except Exception as exc:
            last = {"ok": False, "error": repr(exc)}
        time.sleep(1)
    print(json.dumps({"timeout": what, "last": last}))
    sys.exit(1)


def tcp_open(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def cluster():
    # The chart's probes (TCP on the client and controller ports), then each pod asked on
    # its own for the cluster it belongs to.
    closed = [hp for hp in args["probes"] if not tcp_open(*hp)]
    if closed:
        return {"ok": False, "closed": closed}
    seen = {}
    for address in args["pods"]:
        md = admin(address).list_topics(timeout=5)
        seen[address] = {"cluster_id": md.cluster_id, "brokers": sorted(md.brokers)}
    service = admin(args["bootstrap"]).list_topics(timeout=5)
    answer = {"cluster_id": service.cluster_id, "brokers": sorted(service.brokers)}
    return {"ok": all(v == answer for v in seen.values()) and answer["brokers"] == args["brokers"],
            "service": answer, "pods": seen}


def topic_state(md):
    parts = md.topics[args["topic"]].partitions
    return {str(p): {"leader": m.leader, "replicas": sorted(m.replicas), "isr": sorted(m.isrs)}
            for p, m in sorted(parts.items())}


def create():
    # Partitions -1: the brokers' num.partitions (the chart's topicDefaults).
    topic = NewTopic(args["topic"], num_partitions=-1, replication_factor=args["rf"])
    client = admin(args["bootstrap"])  # alive until the answer came
    client.create_topics([topic])[args["topic"]].result(30)

    def ready():
        state = topic_state(admin(args["bootstrap"]).list_topics(args["topic"], timeout=5))
        # Not before the metadata lists partitions at all: all() of nothing is True.
        ok = bool(state) and all(
            s["leader"] >= 0 and len(s["isr"]) == args["rf"] for s in state.values())
        return {"ok": ok, "partitions": state}
    return until(ready, "partitions led and in sync")


def produce():
    producer = Producer({"bootstrap.servers": args["bootstrap"], "acks": "all",
                         "enable.idempotence": True, **quiet})
    delivered, errors = [], []

    def report(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append([msg.partition(), msg.offset(), msg.key().decode(),
                              msg.value().decode()])
    for key, value in args["records"]:
        producer.produce(args["topic"], key=key, value=value, on_delivery=report)
    left = producer.flush(60)
    return {"ok": not errors and not left, "errors": errors, "undelivered": left,
            "records": sorted(delivered)}


def read():
    # Once every replica is back in sync, every record from the beginning of every partition.
    def in_sync():
        state = topic_state(admin(args["bootstrap"]).list_topics(args["topic"], timeout=5))
        want = args.get("replicas")  # None: each partition's own replicas
        return {"ok": bool(state) and all(
                    s["isr"] == s["replicas"] and want in (None, s["replicas"])
                    for s in state.values()),
                "partitions": state}
    state = until(in_sync, "every replica in sync")["partitions"]
    consumer = Consumer({"bootstrap.servers": args["bootstrap"], "group.id": "image-test",
                         "enable.auto.commit": False, "enable.partition.eof": True, **quiet})
    consumer.assign([TopicPartition(args["topic"], int(p), OFFSET_BEGINNING) for p in state])
    records, at_end = [], set()
    while len(at_end) < len(state) and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
                continue
            raise KafkaException(msg.error())
        records.append([msg.partition(), msg.offset(), msg.key().decode(), msg.value().decode()])
    consumer.close()
    return {"ok": len(at_end) == len(state), "partitions": state, "records": sorted(records)}


def state():
    def metadata():
        md = admin(args["bootstrap"]).list_topics(args["topic"], timeout=10)
        return {"ok": True, "brokers": sorted(md.brokers), "partitions": topic_state(md)}
    return until(metadata, "the topic's metadata")


print(json.dumps({"cluster": lambda: until(cluster, "the cluster"), "create": create,
                  "produce": produce, "read": read, "state": state}[step]()))
"""


# ---------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------


@dataclass
class KafkaPods:
    """charts/kafka's pods, each played by a container (energy_harness.chart_containers)."""

    runner: PodRunner
    manifests: Manifests
    image: str
    client_image: str
    client_dir: Path
    current: dict[int, Container] = field(default_factory=dict)  # pod index -> its container

    @property
    def engine(self) -> DockerEngine:
        return self.runner.engine

    @property
    def statefulset(self) -> Workload:
        return self.manifests.workload()

    @property
    def pods(self) -> list[Pod]:
        return self.statefulset.pods

    @property
    def bootstrap(self) -> str:
        name, port = self.statefulset.service_address()
        return f"{name}:{port}"

    def start(self, pod: Pod) -> None:
        self.current[pod.index] = self.runner.start(pod, self.image)

    def client(self, step: str, timeout: float = 60, **args: Any) -> dict[str, Any]:
        result = self.engine.run(
            ["run", "--rm", "--label", LABEL, "--network", str(self.runner.network),
             "--read-only",
             "--mount", f"type=bind,source={self.client_dir},target=/client,readonly",
             "--entrypoint", "python", self.client_image, "/client/kafka_client.py", step,
             json.dumps({**args, "timeout": timeout})],
            timeout=timeout + 60,
        )  # fmt: skip
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    def exec(self, pod: Pod, script: str) -> str:
        return self.current[pod.index].exec("sh", "-c", script).stdout

    def logs(self, pod: Pod) -> str:
        return self.current[pod.index].logs()

    def wait_for_cluster(self, timeout: float) -> dict[str, Any]:
        probes = [
            [pod.fqdn, self.statefulset.port(name)]
            for pod in self.pods for name in ("client", "controller")
        ]  # fmt: skip
        offset = int(self.pods[0].env["KAFKA_NODE_ID_OFFSET"])
        return self.client(
            "cluster", timeout, bootstrap=self.bootstrap, probes=probes,
            pods=[f"{pod.fqdn}:{self.statefulset.port('client')}" for pod in self.pods],
            brokers=[pod.index + offset for pod in self.pods],
        )  # fmt: skip


@pytest.fixture
def kafka_pods(
    docker_engine: DockerEngine,
    image: Callable[[str], str],
    docker_network: str,
    helm_template: Callable[..., str],
    tmp_path: Path,
) -> Iterator[KafkaPods]:
    client_dir = tmp_path / "client"
    client_dir.mkdir(mode=0o755)
    client_dir.chmod(0o755)
    (client_dir / "kafka_client.py").write_text(CLIENT)
    (client_dir / "kafka_client.py").chmod(0o644)
    kafka = KafkaPods(
        runner=PodRunner(docker_engine, tmp_path, docker_network),
        manifests=Manifests.parse(helm_template("kafka", *CHART_ARGS)),
        image=image("kafka"),
        client_image=image("worker"),
        client_dir=client_dir,
    )
    try:
        yield kafka
    finally:
        for container in kafka.runner.containers:
            print(f"----- {container.name} -----\n{container.logs()[-6000:]}")
        kafka.runner.cleanup()


def test_the_chart_renders_the_official_image_the_stand_in_replaces(
    helm_template: Callable[..., str],
) -> None:
    rendered = Manifests.parse(helm_template("kafka")).workload()
    # The stand-in's jars are the version the chart deploys.
    assert rendered.container["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_three_pods_form_one_kraft_cluster_and_a_restarted_pod_keeps_its_data(
    kafka_pods: KafkaPods,
) -> None:
    kafka, statefulset = kafka_pods, kafka_pods.statefulset
    assert statefulset.container["command"] == ["/bin/sh", "/etc/kafka-base/start.sh"]
    uid, _ = statefulset.pod(0).user
    assert statefulset.spec["securityContext"]["runAsNonRoot"] and uid not in (None, 0), (
        "the chart runs Kafka as non-root"
    )
    cluster_id = kafka.manifests.config_map(f"{statefulset.name}-cluster-id")["cluster-id"]
    for pod in kafka.pods:
        # The chart's advertised domain is the one Kubernetes DNS gives the pods.
        assert pod.fqdn == f"{pod.name}.{pod.env['KAFKA_ADVERTISED_DOMAIN']}"
        kafka.start(pod)  # podManagementPolicy Parallel: all at once
    started = time.monotonic()

    cluster = kafka.wait_for_cluster(timeout=180)
    print(f"3 pods started to a cluster of 3 brokers: {time.monotonic() - started:.1f}s")
    assert cluster["service"] == {"cluster_id": cluster_id, "brokers": [1, 2, 3]}
    assert set(cluster["pods"]) == {f"{pod.fqdn}:9092" for pod in kafka.pods}

    settings = properties(kafka.manifests.config_map(f"{statefulset.name}-config")[
        "server.properties"])  # fmt: skip
    created = kafka.client("create", bootstrap=kafka.bootstrap, topic=TOPIC, rf=len(kafka.pods))
    assert len(created["partitions"]) == int(settings["num.partitions"])
    assert {tuple(p["replicas"]) for p in created["partitions"].values()} == {(1, 2, 3)}

    records = [[f"site-{i % 5}/meter-{i % 7}", json.dumps({"seq": i, "kwh": i * 0.25})]
               for i in range(200)]  # fmt: skip
    produced = kafka.client("produce", bootstrap=kafka.bootstrap, topic=TOPIC, records=records)
    assert sorted([key, value] for _, _, key, value in produced["records"]) == sorted(records)
    first_read = kafka.client("read", bootstrap=kafka.bootstrap, topic=TOPIC, replicas=[1, 2, 3])
    assert first_read["records"] == produced["records"]

    # What a reformat would change: meta.properties (a fresh directory.id and timestamp) and
    # the partitions' segments.
    pod = kafka.pods[RESTARTED]
    on_disk = (
        "cat /var/lib/kafka/data/meta.properties; "
        f"cd /var/lib/kafka/data && sha256sum {TOPIC}-*/*.log"
    )
    before = kafka.exec(pod, on_disk)
    assert f"cluster.id={cluster_id}\n" in before
    assert f"node.id={pod.index + 1}\n" in before
    assert before.count(".log\n") == int(settings["num.partitions"])

    # As Kubernetes deletes a pod: SIGTERM, the grace period, then a new container with
    # fresh emptyDirs and the same claim.
    first = kafka.current[pod.index]
    exit_code = first.stop()
    state = first.inspect()["State"]
    assert exit_code == 143, f"not a clean stop on SIGTERM: {state}"  # 128 + SIGTERM
    first_logs = kafka.logs(pod)
    assert "Formatting metadata directory /var/lib/kafka/data" in first_logs
    first.remove()
    kafka.start(pod)
    started = time.monotonic()

    cluster = kafka.wait_for_cluster(timeout=180)
    print(f"restarted pod back as a broker: {time.monotonic() - started:.1f}s")
    assert cluster["service"] == {"cluster_id": cluster_id, "brokers": [1, 2, 3]}
    second_read = kafka.client("read", bootstrap=kafka.bootstrap, topic=TOPIC, replicas=[1, 2, 3])
    assert second_read["records"] == produced["records"]
    assert kafka.exec(pod, on_disk) == before
    logs = kafka.logs(pod)
    assert "Formatting" not in logs
    assert "All of the log directories are already formatted." in logs
    assert f"start.sh: node.id={pod.index + 1} cluster.id={cluster_id}" in logs


def test_a_pod_back_on_an_empty_volume_waits_and_elects_its_crashed_follower_first(
    kafka_pods: KafkaPods,
) -> None:
    """A lost disk, on the chart's pods: the follower of a partition crashes (kill -9), its
    leader, now the only in-sync replica, loses its volume. Kafka elects no one (the crashed
    follower is not an eligible leader replica; the leader's data is gone). The leader's pod,
    back on a new, empty volume, must not start before its crashed follower leads again:
    start.sh's empty-volume.sh elects it uncleanly (it holds every acknowledged record, as
    min.insync.replicas is 2), then formats; every record comes back at its offset."""
    kafka = kafka_pods
    for pod in kafka.pods:
        kafka.start(pod)
    kafka.wait_for_cluster(timeout=180)
    for pod in kafka.pods:
        # A new cluster: no other node answered, so each formatted without waiting longer.
        assert "empty-volume.sh: no other node answered in 20s" in kafka.logs(pod) or (
            "every partition with a replica on node" in kafka.logs(pod)
        ), kafka.logs(pod)

    created = kafka.client("create", bootstrap=kafka.bootstrap, topic=TOPIC, rf=2)
    offset = int(kafka.pods[0].env["KAFKA_NODE_ID_OFFSET"])
    first = created["partitions"]["0"]
    leader_id = first["leader"]
    follower_id = next(r for r in first["replicas"] if r != leader_id)
    leader, follower = (kafka.pods[node - offset] for node in (leader_id, follower_id))
    records = [[f"site-{i % 5}/meter-{i % 7}", json.dumps({"seq": i})] for i in range(400)]
    produced = kafka.client("produce", bootstrap=kafka.bootstrap, topic=TOPIC, records=records)
    assert sorted([key, value] for _, _, key, value in produced["records"]) == sorted(records)
    assert any(partition == 0 for partition, *_ in produced["records"])

    def partition_zero() -> dict[str, Any]:
        state = kafka.client("state", bootstrap=kafka.bootstrap, topic=TOPIC)
        return {"brokers": state["brokers"], **state["partitions"]["0"]}

    kafka.current[follower.index].remove()  # docker rm -f: SIGKILL
    wait_for(lambda: partition_zero()["isr"] == [leader_id], 60, "the ISR shrunk to the leader")
    kafka.current[leader.index].remove()
    kafka.runner.lose_claims(leader)
    kafka.start(follower)
    wait_for(
        lambda: (lambda p: follower_id in p["brokers"] and p["leader"] == -1)(partition_zero()),
        120,
        "the crashed follower back, and partition 0 without a leader",
    )
    time.sleep(10)
    assert partition_zero()["leader"] == -1, "Kafka elected the crashed follower by itself"

    kafka.start(leader)  # a new, empty volume
    started = time.monotonic()
    kafka.wait_for_cluster(timeout=240)
    read = kafka.client("read", bootstrap=kafka.bootstrap, topic=TOPIC, timeout=180)
    print(f"wiped pod started to every replica in sync: {time.monotonic() - started:.1f}s")
    assert read["records"] == produced["records"]
    assert read["partitions"]["0"]["isr"] == sorted([leader_id, follower_id])
    logs = kafka.logs(leader)
    said = (
        f"empty-volume.sh: node {leader_id} starts on an empty volume but holds replicas "
        f"of partitions without a leader: {TOPIC}-0"
    )
    assert said in logs, logs
    # (stderr only: Docker keeps no order between the two streams)
    guard = [line for line in logs.splitlines() if line.startswith(("empty-volume.sh", "start"))]
    print("\n".join(guard))
    electing = next(i for i, line in enumerate(guard) if "electing a live replica" in line)
    settled = next(i for i, line in enumerate(guard) if "every partition with a replica" in line)
    assert electing < settled < len(guard) - 1 and guard[-1].startswith("start.sh: node.id=")
    assert "Formatting metadata directory /var/lib/kafka/data" in logs
