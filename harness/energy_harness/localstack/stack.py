"""The whole local stack: a 3-node Kafka cluster, PostgreSQL and an MQTT broker."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from energy_harness.localstack.install import install_all
from energy_harness.localstack.kafka import KafkaCluster
from energy_harness.localstack.mqtt import MosquittoBroker
from energy_harness.localstack.postgres import PostgresServer


@dataclass
class LocalStack:
    """Starts the services in dependency order and stops them in reverse, always."""

    base_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="energy-stack-")))
    kafka_nodes: int = 3
    fast_postgres: bool = False
    keep_data: bool = False
    kafka: KafkaCluster = field(init=False)
    postgres: PostgresServer = field(init=False)
    mqtt: MosquittoBroker = field(init=False)

    def __post_init__(self) -> None:
        self.kafka = KafkaCluster(self.base_dir / "kafka", size=self.kafka_nodes)
        self.postgres = PostgresServer(self.base_dir / "postgres", fast=self.fast_postgres)
        self.mqtt = MosquittoBroker(self.base_dir / "mqtt")

    def start(self) -> None:
        install_all()
        try:
            self.postgres.start()
            self.mqtt.start()
            self.kafka.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.kafka.stop()
        self.mqtt.stop()
        self.postgres.stop()
        if not self.keep_data:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """Connection settings as the workers read them from their environment."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "DATABASE_URL": self.postgres.dsn,
            # The server's test CA: the workers verify it (sslmode=verify-full), as in a cluster.
            **({"DATABASE_CA_FILE": str(self.postgres.ca_file)} if self.postgres.tls else {}),
            "MQTT_HOST": self.mqtt.host,
            "MQTT_PORT": str(self.mqtt.port),
        }

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
