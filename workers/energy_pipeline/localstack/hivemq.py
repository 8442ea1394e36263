"""A real HiveMQ Community Edition broker (the product's MQTT broker) as a local process.

Where broker behaviour matters, tests use HiveMQ rather than Mosquitto: HiveMQ keeps shared
subscriptions and their queued messages across a restart, Mosquitto 2.0 does not restore
`$share` subscriptions from its persistence file, so messages published right after its
restart reach no bridge.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from energy_pipeline.localstack.install import ensure_hivemq, require
from energy_pipeline.localstack.mqtt import mqtt_connack
from energy_pipeline.localstack.process import ManagedProcess, free_port, wait_until

JVM_OPTS = (
    "-Xms128m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:ParallelGCThreads=1",
    "-XX:ConcGCThreads=1",
    "-XX:CICompilerCount=2",
    "-Djava.net.preferIPv4Stack=true",
)


def render_config_xml(port: int, max_queue: int = 1_000_000) -> str:
    """config.xml: loopback listener, file persistence, queues deep enough for an outage."""
    return f"""<?xml version="1.0"?>
<hivemq>
    <listeners>
        <tcp-listener>
            <port>{port}</port>
            <bind-address>127.0.0.1</bind-address>
        </tcp-listener>
    </listeners>
    <mqtt>
        <queued-messages>
            <!-- per client and per shared subscription; a bridge that is away for a while
                 must find every reading still queued when it returns -->
            <max-queue-size>{max_queue}</max-queue-size>
            <strategy>discard</strategy>
        </queued-messages>
        <receive-maximum>
            <server-receive-maximum>1000</server-receive-maximum>
        </receive-maximum>
    </mqtt>
    <persistence>
        <mode>file</mode>
    </persistence>
    <anonymous-usage-statistics>
        <enabled>false</enabled>
    </anonymous-usage-statistics>
</hivemq>
"""


@dataclass
class HiveMQBroker:
    base_dir: Path
    port: int = field(default_factory=free_port)
    start_timeout: float = 90.0
    process: ManagedProcess | None = field(default=None, init=False)

    host = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def home(self) -> Path:
        return self.base_dir / "home"

    def start(self) -> None:
        install = ensure_hivemq()
        java = require("java")
        for sub in ("conf", "data", "log", "extensions"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "conf" / "config.xml").write_text(render_config_xml(self.port))
        extension = self.home / "extensions" / install.extension.name
        if not extension.exists():
            shutil.copytree(install.extension, extension)
        self.process = ManagedProcess(
            name="hivemq",
            argv=[
                java,
                *JVM_OPTS,
                f"-Dhivemq.home={self.home}",
                "-cp",
                f"{install.libs}/*",
                "com.hivemq.HiveMQServer",
            ],
            log_path=self.base_dir / "hivemq.log",
        )
        self.process.start()
        wait_until(
            lambda: mqtt_connack(self.host, self.port),
            timeout=self.start_timeout,
            what="waiting for an MQTT CONNACK",
            process=self.process,
            interval=0.5,
        )

    def stop(self) -> None:
        # SIGTERM runs HiveMQ's shutdown hooks, which close its persistence cleanly.
        if self.process is not None:
            self.process.stop(timeout=60)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
