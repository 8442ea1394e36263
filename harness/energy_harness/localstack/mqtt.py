"""A real MQTT 5 broker (Mosquitto from Debian) with persistence, as a local process."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from energy_harness.localstack.install import require
from energy_harness.localstack.process import (
    ManagedProcess,
    ServiceError,
    free_port,
    wait_until,
)


def render_mosquitto_conf(
    port: int, persistence_dir: Path, run_as_root: bool, log_file: Path | None = None
) -> str:
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        # Queued QoS 1 messages and persistent sessions survive a broker restart.
        "persistence true",
        f"persistence_location {persistence_dir}/",
        "autosave_interval 1",
        "persistent_client_expiration 7d",
        # A bridge that is down for a while must not lose readings queued for it.
        "max_queued_messages 0",
        # Also the Receive Maximum announced to MQTT 5 clients for their QoS 1 publishes.
        "max_inflight_messages 1000",
        # A file log is flushed line by line; stdout to a file would be block-buffered.
        f"log_dest file {log_file}" if log_file else "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if run_as_root:
        # Otherwise Mosquitto drops to the `mosquitto` user, who cannot write our temp dir.
        lines.append("user root")
    return "\n".join(lines) + "\n"


def mqtt_connack(
    host: str, port: int, timeout: float = 3.0, ca_file: str = "", any_answer: bool = False
) -> bool:
    """True once the broker answers an MQTT 5 CONNECT with a successful CONNACK (with
    `any_answer`, with any CONNACK: a secured broker refuses this anonymous probe). With
    `ca_file`, over TLS verified against that CA."""
    import paho.mqtt.client as mqtt

    connected = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if any_answer or not reason_code.is_failure:
            connected.set()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"probe-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.on_connect = on_connect
    if ca_file:
        client.tls_set(ca_certs=ca_file)
    try:
        client.connect(host, port, keepalive=10)
        client.loop_start()
        return connected.wait(timeout)
    finally:
        client.loop_stop()
        client.disconnect()


def _port_taken(failure: str) -> bool:
    return "already in use" in failure or "BindException" in failure


@dataclass
class MqttBrokerProcess:
    """What every local MQTT broker shares: a loopback port kept across restarts (clients
    reconnect to the same address), one managed process, readiness on an MQTT CONNACK."""

    base_dir: Path
    port: int = field(default_factory=free_port)
    process: ManagedProcess | None = field(default=None, init=False)
    _started_once: bool = field(default=False, init=False, repr=False)

    host: ClassVar[str] = "127.0.0.1"
    start_timeout: ClassVar[float] = 30.0
    stop_timeout: ClassVar[float] = 15.0

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        try:
            self._start_process()
        except ServiceError as exc:
            # free_port() can only promise a port was free a moment ago; another process may
            # have taken it since. A first start may move; a restart keeps its port, since
            # clients reconnect to the old address.
            if self._started_once or not _port_taken(str(exc)):
                raise
            self.port = free_port()
            self._start_process()
        self._started_once = True

    def _start_process(self) -> None:
        raise NotImplementedError

    def _launch(self, process: ManagedProcess) -> None:
        self.process = process
        process.start()
        wait_until(
            self.answers,
            timeout=self.start_timeout,
            what="waiting for an MQTT CONNACK",
            process=process,
            interval=0.3,
        )

    def answers(self) -> bool:
        return mqtt_connack(self.host, self.port)

    def stop(self) -> None:
        # SIGTERM lets the broker write its persistence before it exits.
        if self.process is not None:
            self.process.stop(timeout=self.stop_timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


@dataclass
class MosquittoBroker(MqttBrokerProcess):
    def _start_process(self) -> None:
        mosquitto = require("mosquitto")
        persistence = self.base_dir / "persistence"
        persistence.mkdir(parents=True, exist_ok=True)
        conf = self.base_dir / "mosquitto.conf"
        log_path = self.base_dir / "mosquitto.log"
        conf.write_text(render_mosquitto_conf(self.port, persistence, os.geteuid() == 0, log_path))
        self._launch(
            ManagedProcess(name="mosquitto", argv=[mosquitto, "-c", str(conf)], log_path=log_path)
        )
