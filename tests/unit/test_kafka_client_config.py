"""The one Kafka connection builder the workers and the operator share."""

from __future__ import annotations

import pytest
from energy_pipeline.core.kafka import client_config, client_logging
from energy_pipeline.core.settings import KafkaSettings, load

pytestmark = pytest.mark.unit


def test_plaintext_has_no_sasl_settings() -> None:
    assert client_config("k1:9092,k2:9092") == {
        **client_logging(),
        "bootstrap.servers": "k1:9092,k2:9092",
        "security.protocol": "PLAINTEXT",
    }


def test_sasl_settings_come_with_a_user_name() -> None:
    config = client_config(
        "k:9093",
        "SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="ingest",
        sasl_password="s3cret",
    )
    assert config == {
        **client_logging(),
        "bootstrap.servers": "k:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "ingest",
        "sasl.password": "s3cret",
    }


def test_an_empty_user_name_means_no_sasl() -> None:
    config = client_config("k:9092", "SSL", sasl_mechanism="PLAIN", sasl_password="unused")
    assert config == {**client_logging(), "bootstrap.servers": "k:9092", "security.protocol": "SSL"}


def test_the_workers_settings_build_through_it() -> None:
    environ = {
        "KAFKA_BOOTSTRAP_SERVERS": "k:9093",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_USERNAME": "bridge",
        "KAFKA_SASL_PASSWORD": "pw",
    }
    settings = load(KafkaSettings, environ)
    assert settings.kafka_client_config() == client_config(
        "k:9093",
        "SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="bridge",
        sasl_password="pw",
    )
    plain = load(KafkaSettings, {"KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    assert plain.kafka_client_config() == client_config("k:9092")
