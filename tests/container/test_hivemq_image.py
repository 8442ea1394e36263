"""The HiveMQ CE stand-in image, started as charts/hivemq's StatefulSet starts its container.

The chart is rendered with `helm template`; from the rendered StatefulSet and ConfigMap come
(through energy_harness.chart_containers) the environment, the config.xml (mounted read-only
at the chart's path), the data claim (a labelled Docker volume, given the pod's fsGroup as the
kubelet does), tmpfs for the log emptyDir, the pod's uid/gid/fsGroup, the container's
security context and memory limit, the grace period and the startup probe. Only the image
differs from what a user installs. An MQTT 5 client in the test reaches the broker on a port
published on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from energy_harness.chart_containers import Container, Manifests, Pod, PodRunner
from energy_harness.localstack.docker import LABEL, DockerEngine
from energy_harness.testing import wait_for
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

pytestmark = pytest.mark.container

START_TIMEOUT = 120.0  # the chart's startupProbe allows 300 s; a start here takes seconds


def chart_pod(rendered: str) -> Pod:
    """The chart's one pod (energy_harness.chart_containers starts it as a container)."""
    return Manifests.parse(rendered).workload().pod(0)


def mount_paths(pod: Pod) -> set[str]:
    return {mount["mountPath"] for mount in pod.workload.container["volumeMounts"]}


@dataclass
class Broker:
    """One run of the image as the chart's pod (a restart keeps the data claim's volume)."""

    container: Container
    ready_seconds: float = 0.0

    @property
    def address(self) -> tuple[str, int]:
        return self.container.address("mqtt")

    def logs(self) -> str:
        return self.container.logs()

    def exec(self, *argv: str) -> str:
        return self.container.exec(*argv).stdout

    def running(self) -> bool:
        return self.container.running()

    def stop(self) -> None:
        """As the kubelet stops the pod: SIGTERM, then the grace period, then gone."""
        self.container.stop()
        self.container.remove()


@dataclass
class ChartRun:
    """Starts the image as the chart's pod; removes every container and volume it made."""

    runner: PodRunner
    image: str

    def start(self, pod: Pod) -> Broker:
        container = pod.workload.container
        assert "command" not in container and "args" not in container, (
            "the chart runs the image's own entrypoint and command"
        )
        broker = Broker(self.runner.start(pod, self.image, publish=["mqtt"]))
        broker.ready_seconds = broker.container.wait_for_probe("startupProbe", START_TIMEOUT)
        print(f"{broker.container.name} ready: {broker.ready_seconds:.1f}s")
        return broker


@pytest.fixture(scope="module")
def hivemq_image(image: Callable[[str], str]) -> str:
    return image("hivemq")


@pytest.fixture
def chart_run(docker_engine: DockerEngine, hivemq_image: str, tmp_path: Path) -> Iterator[ChartRun]:
    run = ChartRun(PodRunner(docker_engine, tmp_path), hivemq_image)
    try:
        yield run
    finally:
        run.runner.cleanup()


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
    assert mount_paths(pod) == {
        "/opt/hivemq/conf/config.xml", "/opt/hivemq/data", "/opt/hivemq/log",
    }  # fmt: skip
    broker = chart_run.start(pod)

    # The chart's JAVA_OPTS reached the JVM (PID 1, after the entrypoint and run.sh exec'd).
    cmdline = broker.exec("cat", "/proc/1/cmdline").split("\0")
    assert cmdline[0] == "java"
    for option in pod.env["JAVA_OPTS"].split():
        assert option in cmdline
    assert broker.exec("id", "-u").strip() == str(pod.user[0])
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
    broker = chart_run.start(pod)  # started: the chart's probe passes

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
    broker = chart_run.start(pod)
    topic = f"energy/test-{uuid.uuid4().hex[:6]}/temperature/0"
    subscriber = Subscriber(topic, session_expiry=3600)
    assert subscriber.connect(broker.address, subscribe=True) is False
    subscriber.disconnect()
    queued = [f"offline-{i}" for i in range(200)]
    publish(broker.address, topic, queued)

    # The pod is deleted and recreated: a new container on the same data volume, and a
    # fresh log directory (the chart's log is an emptyDir).
    broker.stop()
    broker = chart_run.start(pod)

    assert subscriber.connect(broker.address, subscribe=False) is True, "the session was lost"
    got = subscriber.wait_for(len(queued))
    subscriber.disconnect()
    assert got == [(payload, 1) for payload in queued]
