"""The apache/kafka stand-in, started as charts/kafka's StatefulSet starts its pods.

Each pod is a container made from the chart's rendered manifests (`helm template`), with
only the image replaced: its command, environment (the downward API's pod name and index,
the cluster id from the chart's ConfigMap), the chart's server.properties and start.sh
read-only at their mount path, a labelled named volume for the data claim, tmpfs for every
emptyDir, the pod's uid/gid/fsGroup, read-only root, no capabilities. Kubernetes DNS is
played by network aliases: `<pod>.<headless service>.<namespace>.svc.cluster.local` per
container and the client Service's name on all three (Docker answers with every container
holding an alias, as the Service spreads over its pods).

The advertised listeners are those DNS names, so the Kafka client runs in the network too:
the worker image's Python and confluent-kafka, one short `docker run` per step, answering
in JSON.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from energy_harness.localstack.docker import LABEL, DockerEngine
from energy_harness.localstack.install import KAFKA_VERSION

pytestmark = pytest.mark.container

# Three JVMs and a client container share two cores: small heaps, as a user may set them.
CHART_ARGS = ("--set", "heapOpts=-Xms256m -Xmx256m")
CLUSTER_DOMAIN = "cluster.local"
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
        ok = all(s["leader"] >= 0 and len(s["isr"]) == args["rf"] for s in state.values())
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
        return {"ok": all(s["isr"] == s["replicas"] == args["replicas"] for s in state.values()),
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


print(json.dumps({"cluster": lambda: until(cluster, "the cluster"), "create": create,
                  "produce": produce, "read": read}[step]()))
"""


# ---------------------------------------------------------------------------------------------
# The chart's pods as containers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """charts/kafka's manifests as `helm template` renders them."""

    docs: list[dict[str, Any]]

    def find(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [
            doc for doc in self.docs
            if doc["kind"] == kind and name in (None, doc["metadata"]["name"])
        ]  # fmt: skip
        assert len(found) == 1, f"{len(found)} {kind} {name or ''} rendered"
        return found[0]

    @property
    def statefulset(self) -> dict[str, Any]:
        return self.find("StatefulSet")

    @property
    def namespace(self) -> str:
        return str(self.statefulset["metadata"]["namespace"])

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.statefulset["spec"]["template"]["spec"]["containers"]
        return container

    def port(self, name: str) -> int:
        return next(int(p["containerPort"]) for p in self.container["ports"] if p["name"] == name)

    @property
    def client_service(self) -> tuple[str, int]:
        """The Service clients bootstrap from (not the headless one): DNS name and port."""
        (service,) = [
            doc for doc in self.docs
            if doc["kind"] == "Service" and doc["spec"].get("clusterIP") != "None"
        ]  # fmt: skip
        name = f"{service['metadata']['name']}.{self.namespace}.svc"
        return name, int(service["spec"]["ports"][0]["port"])

    def server_properties(self) -> dict[str, str]:
        text = self.find("ConfigMap", f"{self.statefulset['metadata']['name']}-config")["data"][
            "server.properties"
        ]
        pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
        return {key.strip(): value.strip() for key, value in pairs}


@dataclass(frozen=True)
class Pod:
    index: int
    name: str  # as the StatefulSet names it: <statefulset>-<ordinal>
    fqdn: str  # its stable DNS name through the headless Service
    container: str  # the Docker container playing it
    volume: str  # the Docker volume playing its PersistentVolumeClaim


def make_pods(rendered: Rendered, run_id: str) -> list[Pod]:
    sts = rendered.statefulset
    name, service = sts["metadata"]["name"], sts["spec"]["serviceName"]
    return [
        Pod(
            index=i,
            name=f"{name}-{i}",
            fqdn=f"{name}-{i}.{service}.{rendered.namespace}.svc.{CLUSTER_DOMAIN}",
            container=f"{name}-{i}-{run_id}",
            volume=f"data-{name}-{i}-{run_id}",
        )
        for i in range(int(sts["spec"]["replicas"]))
    ]


def _quantity(value: str) -> str:
    """A Kubernetes quantity as Docker's size options read it ("16Mi" -> "16m")."""
    for suffix, unit in (("Ki", "k"), ("Mi", "m"), ("Gi", "g")):
        if value.endswith(suffix):
            return value[: -len(suffix)] + unit
    return value


def pod_env(rendered: Rendered, pod: Pod) -> dict[str, str]:
    """The container's environment as the kubelet resolves it for this pod."""
    fields = {
        "metadata.name": pod.name,
        "metadata.namespace": rendered.namespace,
        "metadata.labels['apps.kubernetes.io/pod-index']": str(pod.index),
    }
    env: dict[str, str] = {}
    for item in rendered.container["env"]:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[item["name"]] = fields[source["fieldRef"]["fieldPath"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[item["name"]] = str(rendered.find("ConfigMap", ref["name"])["data"][ref["key"]])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            data = rendered.find("Secret", ref["name"])["data"][ref["key"]]
            env[item["name"]] = base64.b64decode(data).decode()
        else:
            raise AssertionError(f"no stand-in for the env source {source}")
    return env


def write_config_maps(rendered: Rendered, directory: Path) -> dict[str, Path]:
    """Each ConfigMap the pod mounts as a directory of its keys, world-readable (mode 0644)."""
    dirs: dict[str, Path] = {}
    for volume in rendered.statefulset["spec"]["template"]["spec"]["volumes"]:
        if "configMap" not in volume:
            continue
        name = volume["configMap"]["name"]
        target = directory / name
        target.mkdir(mode=0o755)
        target.chmod(0o755)
        for key, value in rendered.find("ConfigMap", name)["data"].items():
            (target / key).write_text(value)
            (target / key).chmod(0o644)
        dirs[name] = target
    return dirs


def docker_run_args(
    rendered: Rendered, pod: Pod, image: str, network: str, config_maps: dict[str, Path]
) -> list[str]:
    """`docker run` arguments starting `pod` as the StatefulSet does, with `image` instead."""
    sts = rendered.statefulset
    spec = sts["spec"]["template"]["spec"]
    container = rendered.container
    service_name, _ = rendered.client_service
    args = [
        "run", "-d", "--name", pod.container, "--label", LABEL, "--hostname", pod.name,
        "--network", network, "--network-alias", pod.fqdn,
        "--network-alias", service_name, "--network-alias", f"{service_name}.{CLUSTER_DOMAIN}",
    ]  # fmt: skip
    for key, value in pod_env(rendered, pod).items():
        args += ["--env", f"{key}={value}"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    claims = {claim["metadata"]["name"] for claim in sts["spec"].get("volumeClaimTemplates", [])}
    for mount in container["volumeMounts"]:
        path, read_only = mount["mountPath"], mount.get("readOnly", False)
        if mount["name"] in claims:
            args += ["--mount", f"type=volume,source={pod.volume},target={path}"]
            continue
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            source = config_maps[volume["configMap"]["name"]]
            ro = ",readonly" if read_only else ""
            args += ["--mount", f"type=bind,source={source},target={path}{ro}"]
        elif "emptyDir" in volume:
            size = (volume["emptyDir"] or {}).get("sizeLimit")
            args += ["--tmpfs", f"{path}:size={_quantity(size)}" if size else path]
        else:
            raise AssertionError(f"no stand-in for the volume {volume}")
    pod_sc, sc = spec.get("securityContext", {}), container.get("securityContext", {})
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    assert pod_sc.get("runAsNonRoot") and uid not in (None, 0), "the chart runs Kafka as non-root"
    args += ["--user", f"{uid}:{gid}"]
    if "fsGroup" in pod_sc:
        args += ["--group-add", str(pod_sc["fsGroup"])]
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for capability in sc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", capability]
    memory = container.get("resources", {}).get("limits", {}).get("memory")
    if memory:
        args += ["--memory", _quantity(memory)]
    command = [*container["command"], *container.get("args", [])]
    return [*args, "--entrypoint", command[0], image, *command[1:]]


# ---------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------


@dataclass
class KafkaPods:
    engine: DockerEngine
    rendered: Rendered
    pods: list[Pod]
    image: str
    client_image: str
    network: str
    config_maps: dict[str, Path]
    client_dir: Path

    @property
    def bootstrap(self) -> str:
        name, port = self.rendered.client_service
        return f"{name}:{port}"

    def start(self, pod: Pod) -> None:
        args = docker_run_args(self.rendered, pod, self.image, self.network, self.config_maps)
        self.engine.run(args, timeout=60)

    def client(self, step: str, timeout: float = 60, **args: Any) -> dict[str, Any]:
        result = self.engine.run(
            ["run", "--rm", "--label", LABEL, "--network", self.network, "--read-only",
             "--mount", f"type=bind,source={self.client_dir},target=/client,readonly",
             "--entrypoint", "python", self.client_image, "/client/kafka_client.py", step,
             json.dumps({**args, "timeout": timeout})],
            timeout=timeout + 60,
        )  # fmt: skip
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    def exec(self, pod: Pod, script: str) -> str:
        return self.engine.run(["exec", pod.container, "sh", "-c", script], timeout=30).stdout

    def logs(self, pod: Pod) -> str:
        result = self.engine.run(["logs", pod.container], check=False, timeout=30)
        return result.stdout + result.stderr

    def wait_for_cluster(self, timeout: float) -> dict[str, Any]:
        probes = [
            [pod.fqdn, self.rendered.port(name)]
            for pod in self.pods for name in ("client", "controller")
        ]  # fmt: skip
        offset = int(pod_env(self.rendered, self.pods[0])["KAFKA_NODE_ID_OFFSET"])
        return self.client(
            "cluster", timeout, bootstrap=self.bootstrap, probes=probes,
            pods=[f"{pod.fqdn}:{self.rendered.port('client')}" for pod in self.pods],
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
    rendered = Rendered([doc for doc in yaml.safe_load_all(helm_template("kafka", *CHART_ARGS))
                         if doc])  # fmt: skip
    pods = make_pods(rendered, uuid.uuid4().hex[:8])
    client_dir = tmp_path / "client"
    client_dir.mkdir(mode=0o755)
    client_dir.chmod(0o755)
    (client_dir / "kafka_client.py").write_text(CLIENT)
    (client_dir / "kafka_client.py").chmod(0o644)
    kafka = KafkaPods(
        engine=docker_engine,
        rendered=rendered,
        pods=pods,
        image=image("kafka"),
        client_image=image("worker"),
        network=docker_network,
        config_maps=write_config_maps(rendered, tmp_path),
        client_dir=client_dir,
    )
    try:
        for pod in pods:
            docker_engine.run(["volume", "create", "--label", LABEL, pod.volume])
        yield kafka
    finally:
        for pod in pods:
            print(f"----- {pod.container} -----\n{kafka.logs(pod)[-6000:]}")
        docker_engine.run(["rm", "-f", "-v", *(pod.container for pod in pods)], check=False)
        docker_engine.run(["volume", "rm", *(pod.volume for pod in pods)], check=False)


def test_the_chart_renders_the_official_image_the_stand_in_replaces(
    helm_template: Callable[..., str],
) -> None:
    rendered = Rendered([doc for doc in yaml.safe_load_all(helm_template("kafka")) if doc])
    # The stand-in's jars are the version the chart deploys.
    assert rendered.container["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_three_pods_form_one_kraft_cluster_and_a_restarted_pod_keeps_its_data(
    kafka_pods: KafkaPods,
) -> None:
    kafka, rendered = kafka_pods, kafka_pods.rendered
    assert rendered.container["command"] == ["/bin/sh", "/etc/kafka-base/start.sh"]
    cluster_id = rendered.find(
        "ConfigMap", f"{rendered.statefulset['metadata']['name']}-cluster-id"
    )["data"]["cluster-id"]
    for pod in kafka.pods:
        # The chart's advertised domain is the one Kubernetes DNS gives the pods.
        assert pod.fqdn == f"{pod.name}.{pod_env(rendered, pod)['KAFKA_ADVERTISED_DOMAIN']}"
        kafka.start(pod)  # podManagementPolicy Parallel: all at once
    started = time.monotonic()

    cluster = kafka.wait_for_cluster(timeout=180)
    print(f"3 pods started to a cluster of 3 brokers: {time.monotonic() - started:.1f}s")
    assert cluster["service"] == {"cluster_id": cluster_id, "brokers": [1, 2, 3]}
    assert set(cluster["pods"]) == {f"{pod.fqdn}:9092" for pod in kafka.pods}

    settings = rendered.server_properties()
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
    grace = rendered.statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]

    # As Kubernetes deletes a pod: SIGTERM, the grace period, then a new container with
    # fresh emptyDirs and the same claim.
    kafka.engine.run(["stop", "-t", str(grace), pod.container], timeout=grace + 30)
    state = json.loads(kafka.engine.run(["inspect", pod.container]).stdout)[0]["State"]
    assert state["ExitCode"] == 143, f"not a clean stop on SIGTERM: {state}"  # 128 + SIGTERM
    first_logs = kafka.logs(pod)
    assert "Formatting metadata directory /var/lib/kafka/data" in first_logs
    kafka.engine.run(["rm", "-v", pod.container])
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
