"""Real Kafka, PostgreSQL and MQTT brokers as local processes, for tests and `make demo`."""

from energy_harness.localstack.kafka import KafkaCluster
from energy_harness.localstack.mqtt import MosquittoBroker
from energy_harness.localstack.postgres import PostgresServer
from energy_harness.localstack.process import ManagedProcess, ServiceError
from energy_harness.localstack.stack import LocalStack

__all__ = [
    "KafkaCluster",
    "LocalStack",
    "ManagedProcess",
    "MosquittoBroker",
    "PostgresServer",
    "ServiceError",
]
