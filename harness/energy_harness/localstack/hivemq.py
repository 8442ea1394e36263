"""A real HiveMQ Community Edition broker (the product's MQTT broker) as a local process.

Where broker behaviour matters, tests use HiveMQ rather than Mosquitto: HiveMQ keeps shared
subscriptions and their queued messages across a restart, Mosquitto 2.0 does not restore
`$share` subscriptions from its persistence file, so messages published right after its
restart reach no bridge.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from energy_harness.localstack.install import ensure_hivemq, require
from energy_harness.localstack.mqtt import MqttBrokerProcess
from energy_harness.localstack.process import ManagedProcess

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
class HiveMQBroker(MqttBrokerProcess):
    start_timeout: ClassVar[float] = 90.0
    # HiveMQ's shutdown hooks close its persistence cleanly; give them time.
    stop_timeout: ClassVar[float] = 60.0

    @property
    def home(self) -> Path:
        return self.base_dir / "home"

    def _start_process(self) -> None:
        install = ensure_hivemq()
        java = require("java")
        for sub in ("conf", "data", "log", "extensions"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "conf" / "config.xml").write_text(render_config_xml(self.port))
        extension = self.home / "extensions" / install.extension.name
        if not extension.exists():
            shutil.copytree(install.extension, extension)
        argv = [
            java,
            *JVM_OPTS,
            f"-Dhivemq.home={self.home}",
            "-cp",
            f"{install.libs}/*",
            "com.hivemq.HiveMQServer",
        ]
        self._launch(
            ManagedProcess(name="hivemq", argv=argv, log_path=self.base_dir / "hivemq.log")
        )
