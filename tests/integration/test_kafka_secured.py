"""The secured Kafka (SASL_SSL + SCRAM-SHA-512, mutual TLS between nodes, StandardAuthorizer,
one user per role) refuses what it must, with the exact error, against the real 3 brokers.

Refusals are shown with our own command (`energy-pipeline topics create`, one line), with
confluent-kafka as the workers use it, and with `kcat` (Debian's, librdkafka 2.0.2), a client
nobody here wrote. That kcat cannot log in with SCRAM to Kafka 4.x at all (librdkafka before
2.6.1 builds a SCRAM proof Kafka 4 rejects: confluentinc/librdkafka#4895), so it shows the
refusals of clients without credentials; its positive control is the mutual-TLS listener.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from energy_harness.localstack import KafkaCluster
from energy_harness.localstack.certs import LocalCA
from energy_harness.localstack.install import require
from energy_harness.localstack.workers import energy_pipeline_argv
from energy_harness.testing import wait_for
from energy_pipeline.core.contracts import all_kafka_topics
from energy_pipeline.dataplane.topics import set_topic_config, topic_config

pytestmark = pytest.mark.integration

AUTH_FAILED = (
    "SASL authentication error: Authentication failed during authentication due to invalid "
    "credentials with SASL mechanism SCRAM-SHA-512"
)
FIX_LOGIN = (
    "check KAFKA_SASL_USERNAME and its password (KAFKA_SASL_PASSWORD_FILE or "
    "KAFKA_SASL_PASSWORD) against the users Secret the brokers read"
)


def topics_create(cluster: KafkaCluster, user: str, **env: str) -> subprocess.CompletedProcess:
    """`energy-pipeline topics create` as `user`, as the operator would run it."""
    assert cluster.security is not None
    full = {
        "PATH": "/usr/bin:/bin",
        "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": cluster.security.topic_prefix,
        "KAFKA_REPLICATION_FACTOR": "2",
        **cluster.security.worker_env(user),
        **env,
    }
    return subprocess.run(
        [*energy_pipeline_argv(["topics", "create"]), "--timeout", "10"],
        env=full, capture_output=True, text=True, timeout=120,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def topics(secured_kafka: KafkaCluster) -> list[str]:
    """The pipeline's topics, created by the operator's user (it may)."""
    assert secured_kafka.security is not None
    names = all_kafka_topics(secured_kafka.security.topic_prefix)
    result = topics_create(secured_kafka, "operator")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert sorted(out["created"] + out["existing"]) == sorted(names)
    return names


def client(cluster: KafkaCluster, user: str | None, password: str | None = None
           ) -> dict[str, str]:
    assert cluster.security is not None
    return cluster.security.client_config(cluster.bootstrap_servers, user, password)


def produce_one(config: dict[str, str], topic: str) -> KafkaError | None:
    """One record; the delivery error, or None when the brokers took it."""
    outcome: list[KafkaError | None] = []
    producer = Producer({**config, "acks": "all", "message.timeout.ms": 30_000})
    producer.produce(topic, key=b"site-0/0", value=b"{}",
                     on_delivery=lambda err, _msg: outcome.append(err))
    assert producer.flush(40) == 0
    return outcome[0]


def kcat(*args: str) -> tuple[int, str]:
    result = subprocess.run([require("kcat"), *args], capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


def test_the_bridge_writes_readings_and_the_ingest_user_may_not(
    secured_kafka: KafkaCluster, topics: list[str]
) -> None:
    readings = topics[0]
    assert produce_one(client(secured_kafka, "bridge"), readings) is None
    refused = produce_one(client(secured_kafka, "ingest"), readings)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_ingest_user_cannot_delete_or_create_topics(
    secured_kafka: KafkaCluster, topics: list[str]
) -> None:
    admin = AdminClient(client(secured_kafka, "ingest"))
    for future in admin.delete_topics([topics[0]], operation_timeout=20).values():
        with pytest.raises(KafkaException) as deleted:
            future.result(30)
        assert deleted.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    new = NewTopic("energy.forged", num_partitions=1, replication_factor=1)
    for future in admin.create_topics([new], operation_timeout=20).values():
        with pytest.raises(KafkaException) as created:
            future.result(30)
        assert created.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # The topic is still there, for its rightful readers.
    assert topics[0] in AdminClient(client(secured_kafka, "operator")).list_topics(
        timeout=10).topics


def test_a_wrong_password_or_ca_fails_with_one_line(
    secured_kafka: KafkaCluster, tmp_path: Path, topics: list[str]
) -> None:
    wrong = topics_create(secured_kafka, "operator", KAFKA_SASL_PASSWORD_FILE="",
                          KAFKA_SASL_PASSWORD="not-the-password")
    assert wrong.returncode == 1
    assert error_line(wrong) == (
        "energy-pipeline topics create: error: Kafka at KAFKA_BOOTSTRAP_SERVERS="
        f"{secured_kafka.bootstrap_servers} refused the login of KAFKA_SASL_USERNAME=operator "
        f"({AUTH_FAILED}); {FIX_LOGIN}"
    )
    other_ca = LocalCA(tmp_path / "other-ca").create()
    untrusted = topics_create(secured_kafka, "operator", KAFKA_CA_FILE=str(other_ca.cert))
    assert untrusted.returncode == 1
    assert error_line(untrusted) == (
        "energy-pipeline topics create: error: TLS with Kafka at KAFKA_BOOTSTRAP_SERVERS="
        f"{secured_kafka.bootstrap_servers} failed, KAFKA_CA_FILE={other_ca.cert} (SSL "
        "handshake failed: error:0A000086:SSL routines::certificate verify failed: broker "
        "certificate could not be verified, verify that ssl.ca.location is correctly "
        "configured or root CA certificates are installed (install ca-certificates package)); "
        "set KAFKA_CA_FILE to the CA certificate that signed the brokers' certificates"
    )


def test_kcat_without_credentials_is_refused(
    secured_kafka: KafkaCluster, topics: list[str]
) -> None:
    security = secured_kafka.security
    assert security is not None
    ca = security.ca
    client_listener = secured_kafka.bootstrap_servers.split(",")[0]
    internal = secured_kafka.internal_bootstrap_servers.split(",")[0]
    controller = f"127.0.0.1:{next(iter(secured_kafka.nodes.values())).spec.controller_port}"
    # Positive control: kcat and this CA work against these brokers (the node certificate
    # on the mutual-TLS listener is the super user).
    code, out = kcat("-b", internal, "-L", "-m", "10", "-X", "security.protocol=SSL",
                     "-X", f"ssl.ca.location={ca.cert}",
                     "-X", f"ssl.certificate.location={ca.directory / 'node.crt'}",
                     "-X", f"ssl.key.location={ca.directory / 'node.key'}")
    assert code == 0 and " 3 brokers:" in out, out
    # The client listener: no TLS at all, then TLS without a SASL login.
    code, out = kcat("-b", client_listener, "-L", "-m", "5")
    assert code != 0
    assert "Disconnected while requesting ApiVersion" in out, out
    assert "% ERROR: Failed to acquire metadata: Local: Broker transport failure" in out, out
    code, out = kcat("-b", client_listener, "-L", "-m", "5", "-X", "security.protocol=SSL",
                     "-X", f"ssl.ca.location={ca.cert}")
    assert code != 0
    assert "Disconnected: verify that security.protocol is correctly configured, broker might "\
        "require SASL authentication" in out, out
    assert " brokers:" not in out
    # The brokers' and the controllers' listeners: no node certificate, no handshake.
    for listener in (internal, controller):
        code, out = kcat("-b", listener, "-L", "-m", "5", "-X", "security.protocol=SSL",
                         "-X", f"ssl.ca.location={ca.cert}")
        assert code != 0
        assert "SSL routines::sslv3 alert bad certificate: SSL alert number 42" in out, out
        assert " brokers:" not in out


def test_a_password_rotated_in_the_secret_takes_effect_after_a_restart(
    secured_kafka: KafkaCluster, topics: list[str]
) -> None:
    security = secured_kafka.security
    assert security is not None
    old = security.password("operator")
    security.set_password("operator", "rotated-" + old[::-1])
    # Until the brokers restart, the old password is the valid one.
    before = topics_create(secured_kafka, "operator", KAFKA_SASL_PASSWORD_FILE="",
                           KAFKA_SASL_PASSWORD=old)
    assert before.returncode == 0, before.stderr
    secured_kafka.restart()
    stale = topics_create(secured_kafka, "operator", KAFKA_SASL_PASSWORD_FILE="",
                          KAFKA_SASL_PASSWORD=old)
    assert stale.returncode == 1
    assert error_line(stale) == (
        "energy-pipeline topics create: error: Kafka at KAFKA_BOOTSTRAP_SERVERS="
        f"{secured_kafka.bootstrap_servers} refused the login of KAFKA_SASL_USERNAME=operator "
        f"({AUTH_FAILED}); {FIX_LOGIN}"
    )
    # The new one, read from the Secret's file as a restarted worker reads it.
    fresh = topics_create(secured_kafka, "operator")
    assert fresh.returncode == 0, fresh.stderr
    assert sorted(json.loads(fresh.stdout)["existing"]) == sorted(topics)


def test_only_the_operator_may_read_and_set_the_topics_configs(
    secured_kafka: KafkaCluster, topics: list[str]
) -> None:
    """What the operator does to keep min.insync.replicas on existing topics, as each role."""
    operator = AdminClient(client(secured_kafka, "operator"))
    set_topic_config(operator, topics[:1], "min.insync.replicas", "1")
    # The controller has committed the change when the call returns; the broker answering
    # DescribeConfigs may apply it a moment later (two full runs read the old value).
    wait_for(lambda: topic_config(operator, topics[:1], "min.insync.replicas")
             == {topics[0]: "1"}, 30, "the broker showing min.insync.replicas 1")
    set_topic_config(operator, topics[:1], "min.insync.replicas", "2")
    wait_for(lambda: topic_config(operator, topics, "min.insync.replicas")
             == dict.fromkeys(topics, "2"), 30, "every topic at min.insync.replicas 2")
    for role in ("bridge", "ingest"):
        admin = AdminClient(client(secured_kafka, role))
        with pytest.raises(KafkaException) as refused:
            set_topic_config(admin, topics[:1], "min.insync.replicas", "1")
        assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, role
