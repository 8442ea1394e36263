"""Real Kafka, PostgreSQL and MQTT brokers as local processes, for tests and `make demo`."""

from energy_pipeline.localstack.kafka import KafkaCluster
from energy_pipeline.localstack.mqtt import MosquittoBroker
from energy_pipeline.localstack.postgres import PostgresServer
from energy_pipeline.localstack.process import ManagedProcess, ServiceError
from energy_pipeline.localstack.stack import LocalStack

__all__ = [
    "KafkaCluster",
    "LocalStack",
    "ManagedProcess",
    "MosquittoBroker",
    "PostgresServer",
    "ServiceError",
]
