"""The one Kafka connection builder the workers and the operator share."""

from __future__ import annotations

from pathlib import Path

import pytest
from energy_pipeline.core.errors import CommandError
from energy_pipeline.core.kafka import (
    ClientErrors,
    check_reachable,
    client_config,
    client_logging,
    raise_if_refused,
    refusal,
)
from energy_pipeline.core.settings import KafkaSettings, load

pytestmark = pytest.mark.unit


def test_plaintext_has_no_sasl_settings() -> None:
    assert client_config("k1:9092,k2:9092") == {
        **client_logging("k1:9092,k2:9092"),
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
        **client_logging("k:9093", "ingest"),
        "bootstrap.servers": "k:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "ingest",
        "sasl.password": "s3cret",
    }


def test_an_empty_user_name_means_no_sasl() -> None:
    config = client_config("k:9092", "SSL", sasl_mechanism="PLAIN", sasl_password="unused")
    assert config == {**client_logging("k:9092"), "bootstrap.servers": "k:9092",
                      "security.protocol": "SSL"}


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


def test_a_ca_file_is_the_trust_store() -> None:
    config = client_config("k:9093", "SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                           sasl_username="bridge", sasl_password="pw", ca_file="/etc/ca.crt")
    assert config["ssl.ca.location"] == "/etc/ca.crt"
    assert "ssl.ca.location" not in client_config("k:9093", "SASL_SSL")


def test_the_password_file_wins_and_is_read_at_each_build(tmp_path: Path) -> None:
    secret = tmp_path / "bridge-password"
    secret.write_text("from-the-secret\n")
    environ = {
        "KAFKA_BOOTSTRAP_SERVERS": "k:9093",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_USERNAME": "bridge",
        "KAFKA_SASL_PASSWORD": "from-the-env",
        "KAFKA_SASL_PASSWORD_FILE": str(secret),
        "KAFKA_CA_FILE": "/etc/kafka-ca/ca.crt",
    }
    settings = load(KafkaSettings, environ)
    assert settings.kafka_client_config() == client_config(
        "k:9093", "SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="bridge",
        sasl_password="from-the-secret", ca_file="/etc/kafka-ca/ca.crt",
    )
    secret.write_text("rotated")
    assert settings.kafka_client_config()["sasl.password"] == "rotated"


def test_an_unreadable_password_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    settings = load(KafkaSettings, {"KAFKA_BOOTSTRAP_SERVERS": "k:9093",
                                    "KAFKA_SASL_USERNAME": "bridge",
                                    "KAFKA_SASL_PASSWORD_FILE": str(missing)})
    with pytest.raises(CommandError) as raised:
        settings.kafka_client_config()
    assert str(raised.value) == (
        f"cannot read KAFKA_SASL_PASSWORD_FILE={missing}: No such file or directory; mount the "
        "Secret there or set KAFKA_SASL_PASSWORD_FILE to the file that holds it"
    )


class FakeError:
    """The parts of confluent_kafka.KafkaError a refusal reads (as librdkafka 2.16 words it)."""

    def __init__(self, name: str, text: str) -> None:
        self._name, self._text = name, text

    def name(self) -> str:
        return self._name

    def str(self) -> str:
        return self._text

    def fatal(self) -> bool:
        return False


AUTH = FakeError("_AUTHENTICATION", "sasl_ssl://127.0.0.1:9092/bootstrap: SASL authentication "
                 "error: Authentication failed during authentication due to invalid credentials "
                 "with SASL mechanism SCRAM-SHA-512 (after 321ms in state AUTH_REQ)")
SSL = FakeError("_SSL", "sasl_ssl://127.0.0.1:9092/bootstrap: SSL handshake failed: "
                "error:0A000086:SSL routines::certificate verify failed (after 5ms in state "
                "SSL_HANDSHAKE, 1 identical error(s) suppressed)")


def test_refusals_name_the_variables_to_fix() -> None:
    assert str(refusal(AUTH, "k:9092", "ingest")) == (
        "Kafka at KAFKA_BOOTSTRAP_SERVERS=k:9092 refused the login of KAFKA_SASL_USERNAME=ingest "
        "(SASL authentication error: Authentication failed during authentication due to invalid "
        "credentials with SASL mechanism SCRAM-SHA-512); check KAFKA_SASL_USERNAME and its "
        "password (KAFKA_SASL_PASSWORD_FILE or KAFKA_SASL_PASSWORD) against the users Secret "
        "the brokers read"
    )
    assert str(refusal(SSL, "k:9092", ca_file="/ca.crt")) == (
        "TLS with Kafka at KAFKA_BOOTSTRAP_SERVERS=k:9092 failed, KAFKA_CA_FILE=/ca.crt (SSL "
        "handshake failed: error:0A000086:SSL routines::certificate verify failed); set "
        "KAFKA_CA_FILE to the CA certificate that signed the brokers' certificates"
    )
    assert refusal(FakeError("_TRANSPORT", "k:9092/1: Connection refused"), "k:9092") is None
    # A broker gone in the middle of a handshake is no reason to give up.
    assert refusal(FakeError("_SSL", "k:9092/1: SSL handshake failed: unexpected eof while "
                             "reading"), "k:9092") is None


def test_a_client_remembers_its_refusal_and_raises_it() -> None:
    config = client_config("k:9092", "SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                           sasl_username="ingest", sasl_password="x")
    errors = config["error_cb"]
    assert isinstance(errors, ClientErrors)
    errors(FakeError("_ALL_BROKERS_DOWN", "1/1 brokers are down"))
    raise_if_refused(None, config)  # not a refusal: the worker keeps waiting
    errors(AUTH)
    with pytest.raises(CommandError) as raised:
        raise_if_refused(None, config)
    assert raised.value is errors.refused


class RefusedClient:
    """A client whose metadata request times out after its brokers refused the login."""

    def __init__(self, config: dict[str, object]) -> None:
        self.config = config

    def list_topics(self, timeout: float) -> None:
        from confluent_kafka import KafkaError, KafkaException

        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    def poll(self, timeout: float) -> int:
        self.config["error_cb"](AUTH)  # type: ignore[operator]
        return 0


def test_a_command_reports_the_refusal_not_an_unreachable_cluster() -> None:
    config = client_config("k:9092", "SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                           sasl_username="operator", sasl_password="x")
    with pytest.raises(CommandError) as raised:
        check_reachable(RefusedClient(config), config, timeout_s=1)
    assert raised.value.message.startswith(
        "Kafka at KAFKA_BOOTSTRAP_SERVERS=k:9092 refused the login of KAFKA_SASL_USERNAME=operator")
