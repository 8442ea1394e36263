"""Shared fixtures: real services started once per test session through the local stack.

Every test carries exactly one of the markers unit / integration / cluster / container /
e2e / node; the suite runs them in that order so the fast ones fail first.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from energy_harness.images import IMAGES, build_image
from energy_harness.localstack import KafkaCluster, MosquittoBroker, PostgresServer
from energy_harness.localstack.docker import DockerEngine
from energy_harness.localstack.hivemq import HiveMQBroker, SecureHiveMQBroker, SecureMqtt
from energy_harness.localstack.hivemq_security import (
    bridge_user,
    device_user,
    make_broker_tls,
    write_credentials,
)
from energy_harness.localstack.install import ensure_kafka, ensure_system_packages
from energy_harness.localstack.kafka import KafkaSecurity
from energy_harness.localstack.postgres import dsn
from energy_harness.testing import admin_sql
from energy_pipeline.core.contracts import all_kafka_topics
from energy_pipeline.dataplane.topics import TopicSpec, create_topic
from energy_pipeline.db.migrate import migrate

MARKER_ORDER = ("unit", "integration", "cluster", "container", "e2e", "node")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        kinds = [m for m in MARKER_ORDER if item.get_closest_marker(m)]
        if len(kinds) != 1:
            raise pytest.UsageError(
                f"{item.nodeid}: needs exactly one of the markers {MARKER_ORDER}, has {kinds}"
            )
        return MARKER_ORDER.index(kinds[0])

    items.sort(key=rank)


_terminal: list[object] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    _terminal[:] = [session.config.pluginmanager.get_plugin("terminalreporter")]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A failure's reason and time on a line of its own, at once: CI shows only the tail of
    the log, and a run stopped by CI's time limit never reaches pytest's summary."""
    if not report.failed or not _terminal or _terminal[0] is None:
        return
    crash = getattr(report.longrepr, "reprcrash", None)
    reason = crash.message.splitlines()[0][:300] if crash is not None else "see the log"
    _terminal[0].write_line(  # type: ignore[attr-defined]
        f"\nFAILED {report.nodeid} ({report.when}, {report.duration:.0f}s): {reason}")


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    """Outside pytest's basetemp: a concurrent pytest run prunes old basetemps, and with them
    the data directories of services that are still running."""
    path = Path(tempfile.mkdtemp(prefix="energy-test-services-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def system_packages() -> None:
    ensure_system_packages()


@pytest.fixture(scope="session")
def kafka_cluster(services_dir: Path, system_packages: None) -> Iterator[KafkaCluster]:
    """A 3-node KRaft cluster; tests that stop a node must start it again before they end."""
    ensure_kafka()
    cluster = KafkaCluster(services_dir / "kafka", size=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session")
def secured_kafka(services_dir: Path, system_packages: None) -> Iterator[KafkaCluster]:
    """A second 3-node cluster, secured as the chart runs it (SASL_SSL + SCRAM-SHA-512 for
    clients, mutual TLS between nodes, StandardAuthorizer, one user per role): started only
    by the tests that ask for it. Its `security` holds the CA and the users' password files;
    tests that rotate a password must leave the cluster usable."""
    ensure_kafka()
    cluster = KafkaCluster(
        services_dir / "kafka-secured", size=3,
        security=KafkaSecurity(services_dir / "kafka-secured-auth"),
        # TLS on every link makes the first election slower; a loaded CI machine slower still.
        start_timeout=600,
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session")
def postgres(services_dir: Path, system_packages: None) -> Iterator[PostgresServer]:
    server = PostgresServer(services_dir / "postgres", fast=True)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def database(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, migrated database per test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    admin_sql(postgres, f'CREATE DATABASE "{name}"')
    url = dsn(postgres.port, postgres.password, name)
    migrate(url)
    try:
        yield url
    finally:
        # A fresh connection: the test may have restarted the server.
        admin_sql(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def mqtt_broker(services_dir: Path, system_packages: None) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(services_dir / "mqtt")
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
def own_mqtt_broker(tmp_path: Path, system_packages: None) -> Iterator[HiveMQBroker]:
    """A HiveMQ broker per test, the product's broker: sessions of one test never see another
    test's data, and shared subscriptions survive a broker restart (Mosquitto's do not)."""
    broker = HiveMQBroker(tmp_path / "mqtt")
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture(scope="module")
def secure_mqtt(
    tmp_path_factory: pytest.TempPathFactory, system_packages: None
) -> Iterator[SecureMqtt]:
    """HiveMQ as the chart's secure mode runs it: a test CA made with openssl in a tmp dir, the
    broker's certificate in a keystore, a credentials file with the bridge and one device per
    site (site-a, site-b) and no plain listener. The plain `own_mqtt_broker` stays as it was."""
    base = tmp_path_factory.mktemp("secure-mqtt")
    users = [bridge_user(), device_user("device-a", "site-a"), device_user("device-b", "site-b")]
    credentials = write_credentials(base / "credentials" / "users", users)
    broker = SecureHiveMQBroker(
        base / "mqtt", tls=make_broker_tls(base / "tls"), credentials_file=credentials
    )
    broker.start()
    try:
        yield SecureMqtt(broker, {u.name: u for u in users})
    finally:
        broker.cleanup()


@pytest.fixture
def topic_prefix(kafka_cluster: KafkaCluster) -> str:
    """A fresh `<prefix>.*` topic set on the session's Kafka (4 partitions, RF 2)."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    for name in all_kafka_topics(prefix):
        create_topic(admin, TopicSpec(name, partitions=4, replication_factor=2))
    return prefix


# -- Docker (tests/container, tests/node) ------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """The harness's engine (`energy_harness.localstack.docker`): found running, or started
    here and stopped at the end with every container and network the tests labelled."""
    engine = DockerEngine()
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def image(docker_engine: DockerEngine) -> Callable[[str], str]:
    """`image("worker")` -> its tag, built on first use in this session, exactly as `make image`
    builds it; the engine's build cache makes an unchanged image cost a few seconds."""
    built: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in built:
            assert name in IMAGES, f"unknown image {name!r}: one of {sorted(IMAGES)}"
            built[name] = str(build_image(docker_engine, name)["tag"])
        return built[name]

    return get
