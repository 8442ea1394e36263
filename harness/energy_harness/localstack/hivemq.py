"""A real HiveMQ Community Edition broker (the product's MQTT broker) as a local process.

Where broker behaviour matters, tests use HiveMQ rather than Mosquitto: HiveMQ keeps shared
subscriptions and their queued messages across a restart, Mosquitto 2.0 does not restore
`$share` subscriptions from its persistence file, so messages published right after its
restart reach no bridge.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from energy_harness.localstack.hivemq_security import BrokerTls, MqttUser
from energy_harness.localstack.install import ensure_hivemq, require
from energy_harness.localstack.mqtt import MqttBrokerProcess, mqtt_connack
from energy_harness.localstack.process import ManagedProcess, ServiceError

JVM_OPTS = (
    "-Xms128m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:ParallelGCThreads=1",
    "-XX:ConcGCThreads=1",
    "-XX:CICompilerCount=2",
    "-Djava.net.preferIPv4Stack=true",
)


@dataclass(frozen=True)
class TlsListener:
    port: int
    keystore: Path
    # Written into config.xml as ${ENV:HIVEMQ_KEYSTORE_PASSWORD}, as the chart does.
    password_env: str = "HIVEMQ_KEYSTORE_PASSWORD"


def render_config_xml(
    port: int | None, max_queue: int = 1_000_000, tls: TlsListener | None = None
) -> str:
    """config.xml: loopback listeners, file persistence, queues deep enough for an outage.

    `port` None: no plain MQTT listener at all (the secure mode), only `tls`.
    """
    listeners = []
    if port is not None:
        listeners.append(
            f"""        <tcp-listener>
            <port>{port}</port>
            <bind-address>127.0.0.1</bind-address>
        </tcp-listener>"""
        )
    if tls is not None:
        listeners.append(
            f"""        <tls-tcp-listener>
            <port>{tls.port}</port>
            <bind-address>127.0.0.1</bind-address>
            <tls>
                <keystore>
                    <path>{tls.keystore}</path>
                    <password>${{ENV:{tls.password_env}}}</password>
                    <private-key-password>${{ENV:{tls.password_env}}}</private-key-password>
                </keystore>
                <protocols>
                    <protocol>TLSv1.3</protocol>
                    <protocol>TLSv1.2</protocol>
                </protocols>
                <client-authentication-mode>NONE</client-authentication-mode>
            </tls>
        </tls-tcp-listener>"""
        )
    listeners_xml = "\n".join(listeners)
    return f"""<?xml version="1.0"?>
<hivemq>
    <listeners>
{listeners_xml}
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
        self._start_hivemq(render_config_xml(self.port), "extension", {})

    def _start_hivemq(self, config_xml: str, extension_attr: str, env: dict[str, str]) -> None:
        install = ensure_hivemq()
        java = require("java")
        for sub in ("conf", "data", "log", "extensions"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (self.home / "conf" / "config.xml").write_text(config_xml)
        source = getattr(install, extension_attr)
        extension = self.home / "extensions" / source.name
        if not extension.exists():
            shutil.copytree(source, extension)
        argv = [
            java,
            *JVM_OPTS,
            f"-Dhivemq.home={self.home}",
            "-cp",
            f"{install.libs}/*",
            "com.hivemq.HiveMQServer",
        ]
        self._launch(
            ManagedProcess(
                name="hivemq",
                argv=argv,
                log_path=self.base_dir / "hivemq.log",
                env={**os.environ, **env} if env else None,
            )
        )


@dataclass
class SecureHiveMQBroker(HiveMQBroker):
    """HiveMQ as the chart's secure mode runs it: our auth extension reading
    `credentials_file` (users with hashed passwords, one topic permission each), a TLS
    listener on `port` with `tls.keystore`, and no plain MQTT listener.

    `port` is the TLS port (what clients use as MQTT_PORT); its certificate names 127.0.0.1
    and localhost and is signed by `tls.ca_cert`.
    """

    tls: BrokerTls | None = None
    credentials_file: Path | None = None
    # TLS and PBKDF2 add to HiveMQ's start; on a loaded 2-core machine it took over 90 s.
    start_timeout: ClassVar[float] = 180.0

    def _start_process(self) -> None:
        if self.tls is None or self.credentials_file is None:
            raise ServiceError("SecureHiveMQBroker needs tls and credentials_file")
        listener = TlsListener(self.port, self.tls.keystore)
        self._start_hivemq(
            render_config_xml(None, tls=listener),
            "auth_extension",
            {
                listener.password_env: self.tls.keystore_password,
                "MQTT_CREDENTIALS_FILE": str(self.credentials_file),
            },
        )

    def answers(self) -> bool:
        # Up once a TLS CONNECT without credentials gets its CONNACK: a refusal, which also
        # shows that the auth extension is in place.
        assert self.tls is not None
        return mqtt_connack(self.host, self.port, ca_file=str(self.tls.ca_cert), any_answer=True)


@dataclass
class SecureMqtt:
    """A secured HiveMQ (TLS only, our auth extension) and the users in its credentials file."""

    broker: SecureHiveMQBroker
    users: dict[str, MqttUser]

    @property
    def ca_file(self) -> str:
        assert self.broker.tls is not None
        return str(self.broker.tls.ca_cert)

    def client_env(self, user: str, secrets_dir: Path) -> dict[str, str]:
        """The worker environment of `user`: MQTT_* for TLS and login, the password in a file."""
        password_file = secrets_dir / f"{user}.password"
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.write_text(self.users[user].password + "\n")
        return {
            "MQTT_HOST": self.broker.host,
            "MQTT_PORT": str(self.broker.port),
            "MQTT_TLS": "true",
            "MQTT_CA_FILE": self.ca_file,
            "MQTT_USERNAME": user,
            "MQTT_PASSWORD_FILE": str(password_file),
        }
