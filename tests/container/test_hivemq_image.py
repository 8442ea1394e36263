"""The HiveMQ CE stand-in image, started as charts/hivemq's StatefulSet starts its container.

The chart is rendered with `helm template`; from the rendered StatefulSet and ConfigMap come
the environment, the config.xml (mounted read-only at the chart's path), the data and log
volumes (labelled Docker volumes, given the pod's fsGroup as the kubelet does), the pod's
uid/gid/fsGroup, the container's security context and memory limit, the grace period and the
probe port. Only the image differs from what a user installs. An MQTT 5 client in the test
reaches the broker on a port published on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from energy_harness.localstack.docker import LABEL, DockerEngine
from energy_harness.testing import wait_for
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

pytestmark = pytest.mark.container

START_TIMEOUT = 120.0  # the chart's startupProbe allows 300 s; a start here takes seconds


@dataclass(frozen=True)
class ChartPod:
    """What the rendered chart says about the broker's container."""

    env: dict[str, str]
    mounts: dict[str, str]  # volume name -> mount path
    config_xml: str
    config_sub_path: str
    uid: int
    gid: int
    fs_group: int
    port: int
    read_only: bool
    no_new_privileges: bool
    cap_drop: tuple[str, ...]
    memory_limit: str
    grace_seconds: int
    has_command: bool


def chart_pod(rendered: str) -> ChartPod:
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    (config_volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]
    context = container["securityContext"]
    (port,) = container["ports"]
    return ChartPod(
        env={e["name"]: e["value"] for e in container["env"]},
        mounts={name: m["mountPath"] for name, m in mounts.items()},
        config_xml=config_map["data"][mounts["config"]["subPath"]],
        config_sub_path=mounts["config"]["subPath"],
        uid=pod["securityContext"]["runAsUser"],
        gid=pod["securityContext"]["runAsGroup"],
        fs_group=pod["securityContext"]["fsGroup"],
        port=port["containerPort"],
        read_only=context["readOnlyRootFilesystem"],
        no_new_privileges=not context["allowPrivilegeEscalation"],
        cap_drop=tuple(context["capabilities"]["drop"]),
        memory_limit=container["resources"]["limits"]["memory"],
        grace_seconds=pod["terminationGracePeriodSeconds"],
        has_command="command" in container or "args" in container,
    )


def _docker_memory(quantity: str) -> str:
    """A Kubernetes memory quantity (Mi, Gi) as docker's --memory value."""
    for suffix, unit in (("Gi", "g"), ("Mi", "m")):
        if quantity.endswith(suffix):
            return quantity[: -len(suffix)] + unit
    raise AssertionError(f"memory limit {quantity!r}: only Mi and Gi are translated here")


@dataclass
class Broker:
    """One run of the image as the chart's pod, on the volumes it was given."""

    engine: DockerEngine
    pod: ChartPod
    name: str
    started: float
    ready_seconds: float = 0.0

    @property
    def address(self) -> tuple[str, int]:
        out = self.engine.run(["port", self.name, f"{self.pod.port}/tcp"]).stdout
        host, _, port = out.splitlines()[0].rpartition(":")
        assert host == "127.0.0.1", out
        return host, int(port)

    def logs(self) -> str:
        result = self.engine.run(["logs", self.name], check=False)
        return result.stdout + result.stderr

    def exec(self, *argv: str) -> str:
        return self.engine.run(["exec", self.name, *argv]).stdout

    def running(self) -> bool:
        out = self.engine.run(
            ["inspect", "--format", "{{.State.Running}}", self.name], check=False
        ).stdout
        return out.strip() == "true"

    def tcp_probe(self) -> bool:
        """The chart's tcpSocket probe on the mqtt port, from inside the pod's network
        namespace to the pod's address, as the kubelet connects."""
        if not self.running():
            raise AssertionError(f"{self.name} exited:\n{self.logs()[-3000:]}")
        script = f'exec 3<>"/dev/tcp/$(hostname -i | cut -d" " -f1)/{self.pod.port}"'
        cmd = ["exec", self.name, "timeout", "3", "bash", "-c", script]
        return self.engine.run(cmd, check=False).returncode == 0

    def wait_ready(self) -> None:
        wait_for(self.tcp_probe, START_TIMEOUT, f"{self.name}: the chart's tcpSocket probe")
        self.ready_seconds = time.monotonic() - self.started

    def stop(self) -> None:
        """As the kubelet stops the pod: SIGTERM, then the grace period, then gone."""
        timeout = self.pod.grace_seconds + 30
        self.engine.run(["stop", "-t", str(self.pod.grace_seconds), self.name], timeout=timeout)
        self.engine.run(["rm", "-f", self.name])


@dataclass
class ChartRun:
    """Starts the image as the chart's pod; removes every container and volume it made."""

    engine: DockerEngine
    image: str
    workdir: Path
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def volume(self, fs_group: int) -> str:
        """A fresh volume as the kubelet hands one to a pod with fsGroup: its root owned by
        that group, group-writable and setgid, and nothing copied in from the image."""
        name = f"energy-hivemq-{uuid.uuid4().hex[:8]}"
        self.engine.run(["volume", "create", "--label", LABEL, name])
        self.volumes.append(name)
        self.engine.run([
            "run", "--rm", "--label", LABEL, "--user", "0:0", "--entrypoint", "sh",
            "--mount", f"type=volume,src={name},dst=/volume,volume-nocopy", self.image,
            "-c", f"chgrp {fs_group} /volume && chmod 2775 /volume",
        ])  # fmt: skip
        return name

    def start(self, pod: ChartPod, volumes: dict[str, str]) -> Broker:
        assert not pod.has_command, "the chart runs the image's own entrypoint and command"
        config = self.workdir / f"config-{uuid.uuid4().hex[:8]}" / pod.config_sub_path
        config.parent.mkdir(parents=True)
        config.write_text(pod.config_xml)
        config.chmod(0o644)  # a ConfigMap volume's default mode
        name = f"energy-hivemq-{uuid.uuid4().hex[:8]}"
        args = [
            "run", "-d", "--name", name, "--label", LABEL,
            "--user", f"{pod.uid}:{pod.gid}", "--group-add", str(pod.fs_group),
            "--memory", _docker_memory(pod.memory_limit),
            "--publish", f"127.0.0.1::{pod.port}",
            "--mount", f"type=bind,src={config},dst={pod.mounts['config']},readonly",
        ]  # fmt: skip
        for volume, source in volumes.items():
            args += ["--mount", f"type=volume,src={source},dst={pod.mounts[volume]},volume-nocopy"]
        for cap in pod.cap_drop:
            args += ["--cap-drop", cap]
        if pod.no_new_privileges:
            args += ["--security-opt", "no-new-privileges"]
        if pod.read_only:
            args.append("--read-only")
        for key, value in pod.env.items():
            args += ["--env", f"{key}={value}"]
        started = time.monotonic()
        self.engine.run([*args, self.image])
        self.containers.append(name)
        broker = Broker(self.engine, pod, name, started)
        broker.wait_ready()
        return broker

    def cleanup(self) -> None:
        if self.containers:
            self.engine.run(["rm", "-f", "-v", *self.containers], check=False)
        if self.volumes:
            self.engine.run(["volume", "rm", "-f", *self.volumes], check=False)


@pytest.fixture(scope="module")
def hivemq_image(image: Callable[[str], str]) -> str:
    return image("hivemq")


@pytest.fixture
def chart_run(docker_engine: DockerEngine, hivemq_image: str, tmp_path: Path) -> Iterator[ChartRun]:
    run = ChartRun(docker_engine, hivemq_image, tmp_path)
    try:
        yield run
    finally:
        run.cleanup()


# ---------------------------------------------------------------------------------------------
# MQTT 5 client side
# ---------------------------------------------------------------------------------------------


def _client(client_id: str | None = None) -> mqtt.Client:
    return mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )


def connack(address: tuple[str, int]) -> ReasonCode:
    """The reason code of the broker's CONNACK to a plain MQTT 5 CONNECT (no credentials)."""
    answered = threading.Event()
    codes: list[ReasonCode] = []
    client = _client()

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, code: ReasonCode, props: Any) -> None:
        codes.append(code)
        answered.set()

    client.on_connect = on_connect
    client.connect(*address, keepalive=10)
    client.loop_start()
    try:
        assert answered.wait(15), "no CONNACK within 15 s"
        return codes[0]
    finally:
        client.disconnect()
        client.loop_stop()


class Subscriber:
    """A QoS 1 subscriber; with `session_expiry` its session outlives its connection."""

    def __init__(self, topic: str, session_expiry: int = 0) -> None:
        self.topic = topic
        self.session_expiry = session_expiry
        self.client_id = f"sub-{uuid.uuid4().hex[:8]}"
        self.received: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.client: mqtt.Client | None = None

    def connect(self, address: tuple[str, int], subscribe: bool) -> bool:
        """Connects (clean start only without a session expiry); returns session present."""
        connected = threading.Event()
        answers: list[tuple[ReasonCode, bool]] = []
        subscribed = threading.Event()
        granted: list[ReasonCode] = []
        client = _client(self.client_id)

        def on_connect(c: mqtt.Client, userdata: Any, flags: Any, code: ReasonCode,
                       props: Any) -> None:  # fmt: skip
            answers.append((code, flags.session_present))
            connected.set()

        def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode],
                         props: Any) -> None:  # fmt: skip
            granted.extend(codes)
            subscribed.set()

        def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.received.append((message.payload.decode(), message.qos))

        client.on_connect, client.on_subscribe = on_connect, on_subscribe
        client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        client.connect(*address, clean_start=self.session_expiry == 0, properties=props)
        client.loop_start()
        self.client = client
        assert connected.wait(15), "no CONNACK within 15 s"
        code, session_present = answers[0]
        assert code.value == 0, f"CONNACK {code}"
        if subscribe:
            assert client.subscribe(self.topic, qos=1)[0] == mqtt.MQTT_ERR_SUCCESS
            assert subscribed.wait(15), "no SUBACK within 15 s"
            assert [code.value for code in granted] == [1], f"SUBACK {granted}"
        return session_present

    def disconnect(self) -> None:
        assert self.client is not None
        self.client.disconnect()
        self.client.loop_stop()
        self.client = None

    def wait_for(self, count: int, timeout: float = 30) -> list[tuple[str, int]]:
        def enough() -> bool:
            with self.lock:
                return len(self.received) >= count

        wait_for(enough, timeout, f"{count} messages on {self.topic}", interval=0.1)
        time.sleep(1.0)  # a duplicate or a stray message would arrive now
        with self.lock:
            return list(self.received)


def publish(address: tuple[str, int], topic: str, payloads: list[str]) -> None:
    """QoS 1 publishes, each acknowledged by the broker (PUBACK) before this returns."""
    client = _client()
    client.connect(*address)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(15)
            assert info.is_published(), f"no PUBACK for message {info.mid}"
    finally:
        client.disconnect()
        client.loop_stop()


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_the_image_has_the_official_images_contract(
    docker_engine: DockerEngine, hivemq_image: str
) -> None:
    config = json.loads(docker_engine.run(["image", "inspect", hivemq_image]).stdout)[0]["Config"]
    assert config["User"] == "10000"
    assert config["Entrypoint"] == ["/opt/docker-entrypoint.sh"]
    assert config["Cmd"] == ["/opt/hivemq/bin/run.sh"]
    assert config["WorkingDir"] == "/opt/hivemq"
    assert set(config["Volumes"]) == {"/opt/hivemq/data", "/opt/hivemq/log"}
    assert set(config["ExposedPorts"]) == {"1883/tcp", "8000/tcp"}
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HIVEMQ_ALLOW_ALL_CLIENTS"] == "true"
    assert env["JAVA_OPTS"] == "-XX:+UnlockExperimentalVMOptions -XX:+UseNUMA"
    assert env["HOME"] == "/opt/hivemq"
    listing = docker_engine.run([
        "run", "--rm", "--label", LABEL, "--entrypoint", "bash", hivemq_image, "-c",
        "id -u; id -g; stat -c '%U:%G %a %n' /opt/hivemq /opt/hivemq/data /opt/hivemq/log "
        "/opt/hivemq/extensions /opt/hivemq/extensions/hivemq-allow-all-extension "
        "/opt/hivemq/conf/config.xml; grep -o '<id>[^<]*</id>' "
        "/opt/hivemq/extensions/hivemq-allow-all-extension/hivemq-extension.xml",
    ]).stdout.splitlines()  # fmt: skip
    assert listing == [
        "10000",
        "0",  # a bare uid runs in group 0, which the folders below let write
        "root:root 775 /opt/hivemq",
        "root:root 775 /opt/hivemq/data",
        "root:root 775 /opt/hivemq/log",
        "root:root 775 /opt/hivemq/extensions",
        "root:root 775 /opt/hivemq/extensions/hivemq-allow-all-extension",
        "root:root 664 /opt/hivemq/conf/config.xml",
        "<id>hivemq-allow-all-extension</id>",
    ]


def test_as_the_chart_starts_it_a_client_gets_exactly_its_qos1_messages(
    chart_run: ChartRun, helm_template: Callable[..., str]
) -> None:
    pod = chart_pod(helm_template("hivemq"))
    assert pod.env["HIVEMQ_ALLOW_ALL_CLIENTS"] == "true"
    assert set(pod.mounts.values()) == {
        "/opt/hivemq/conf/config.xml", "/opt/hivemq/data", "/opt/hivemq/log",
    }  # fmt: skip
    volumes = {"data": chart_run.volume(pod.fs_group), "log": chart_run.volume(pod.fs_group)}
    broker = chart_run.start(pod, volumes)

    # The chart's JAVA_OPTS reached the JVM (PID 1, after the entrypoint and run.sh exec'd).
    cmdline = broker.exec("cat", "/proc/1/cmdline").split("\0")
    assert cmdline[0] == "java"
    for option in pod.env["JAVA_OPTS"].split():
        assert option in cmdline
    assert broker.exec("id", "-u").strip() == str(pod.uid)
    logs = broker.logs()
    # The chart's config.xml is the one read: its one TCP listener, no WebSocket listener
    # (the image's own default has one), file persistence.
    assert "Started TCP Listener on address 0.0.0.0 and on port 1883." in logs
    assert "Websocket" not in logs
    assert "Starting with file persistence mode." in logs
    assert "HiveMQ version: 2025.5" in logs
    assert broker.exec("ls", "/opt/hivemq/extensions").split() == ["hivemq-allow-all-extension"]
    assert int(broker.exec("stat", "-c", "%s", "/opt/hivemq/log/hivemq.log")) > 0

    address = broker.address
    assert connack(address).value == 0
    topic = f"energy/test-{uuid.uuid4().hex[:6]}/temperature/0"
    subscriber = Subscriber(topic)
    subscriber.connect(address, subscribe=True)
    payloads = [f"reading-{i}" for i in range(200)]
    publish(address, topic, payloads)
    got = subscriber.wait_for(len(payloads))
    subscriber.disconnect()
    assert got == [(payload, 1) for payload in payloads]


def test_with_allow_all_clients_false_the_broker_starts_and_refuses_the_client(
    chart_run: ChartRun, helm_template: Callable[..., str]
) -> None:
    pod = chart_pod(helm_template("hivemq", "--set", "auth.allowAllClients=false"))
    assert pod.env["HIVEMQ_ALLOW_ALL_CLIENTS"] == "false"
    volumes = {"data": chart_run.volume(pod.fs_group), "log": chart_run.volume(pod.fs_group)}
    broker = chart_run.start(pod, volumes)  # started: the chart's probe passes

    assert broker.exec("ls", "-A", "/opt/hivemq/extensions").split() == []
    logs = broker.logs()
    assert "Disabling allow all extension" in logs
    assert "Started TCP Listener on address 0.0.0.0 and on port 1883." in logs
    # No security extension: HiveMQ CE answers every CONNECT with "Not authorized".
    code = connack(broker.address)
    assert (code.value, code.getName()) == (135, "Not authorized")
    assert broker.running()


def test_a_restart_on_the_same_data_volume_keeps_a_sessions_queued_qos1_messages(
    chart_run: ChartRun, helm_template: Callable[..., str]
) -> None:
    pod = chart_pod(helm_template("hivemq"))
    data = chart_run.volume(pod.fs_group)
    broker = chart_run.start(pod, {"data": data, "log": chart_run.volume(pod.fs_group)})
    topic = f"energy/test-{uuid.uuid4().hex[:6]}/temperature/0"
    subscriber = Subscriber(topic, session_expiry=3600)
    assert subscriber.connect(broker.address, subscribe=True) is False
    subscriber.disconnect()
    queued = [f"offline-{i}" for i in range(200)]
    publish(broker.address, topic, queued)

    # The pod is deleted and recreated: a new container on the same data volume, and a
    # fresh log volume (the chart's log is an emptyDir).
    broker.stop()
    broker = chart_run.start(pod, {"data": data, "log": chart_run.volume(pod.fs_group)})

    assert subscriber.connect(broker.address, subscribe=False) is True, "the session was lost"
    got = subscriber.wait_for(len(queued))
    subscriber.disconnect()
    assert got == [(payload, 1) for payload in queued]
