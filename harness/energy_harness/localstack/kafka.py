"""A real Apache Kafka cluster (KRaft, combined broker+controller nodes) as local processes."""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from energy_harness.localstack.install import ensure_kafka, require
from energy_harness.localstack.process import (
    ManagedProcess,
    ServiceError,
    free_port,
    wait_until,
)

# Small heaps and few GC/compiler threads: three JVMs share two cores with everything else.
DEFAULT_JVM_OPTS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:ParallelGCThreads=1",
    "-XX:ConcGCThreads=1",
    "-XX:CICompilerCount=2",
    "-Djava.awt.headless=true",
)

_quiet_librdkafka = logging.getLogger("energy_harness.localstack.librdkafka")
_quiet_librdkafka.setLevel(logging.CRITICAL)

LOG4J2_PROPERTIES = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka never issues ids starting with '-': they would read as command-line flags.
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class KafkaNodeSpec:
    node_id: int
    broker_port: int
    controller_port: int
    log_dir: Path


def render_server_properties(
    node: KafkaNodeSpec,
    cluster: list[KafkaNodeSpec],
    overrides: Mapping[str, str] | None = None,
) -> str:
    """server.properties for one combined broker+controller node of a static KRaft quorum."""
    size = len(cluster)
    internal_rf = min(3, size)
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in cluster)
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.log_dir),
        # The product's topic defaults (DESIGN: 4 partitions, RF 2, min ISR 1).
        "num.partitions": "4",
        "default.replication.factor": str(min(2, size)),
        "min.insync.replicas": "1",
        # Topics are created explicitly (by the operator, the stack, or tests), never by typos.
        "auto.create.topics.enable": "false",
        # Internal topics survive the loss of one node.
        "offsets.topic.replication.factor": str(internal_rf),
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": str(internal_rf),
        "transaction.state.log.min.isr": str(min(2, internal_rf)),
        "share.coordinator.state.topic.replication.factor": str(internal_rf),
        "share.coordinator.state.topic.min.isr": str(min(2, internal_rf)),
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.segment.bytes": str(64 * 1024 * 1024),
        "unclean.leader.election.enable": "false",
    }
    props.update(overrides or {})
    return "".join(f"{key}={value}\n" for key, value in props.items())


@dataclass
class KafkaNode:
    spec: KafkaNodeSpec
    config_path: Path
    process: ManagedProcess


@dataclass
class KafkaCluster:
    """`size` KRaft nodes sharing one cluster id, each broker and controller at once."""

    base_dir: Path
    size: int = 3
    version: str | None = None
    jvm_opts: tuple[str, ...] = DEFAULT_JVM_OPTS
    overrides: Mapping[str, str] = field(default_factory=dict)
    start_timeout: float = 120.0
    cluster_id: str = field(default_factory=new_cluster_id)
    nodes: dict[int, KafkaNode] = field(default_factory=dict, init=False)
    _admin: AdminClient | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{n.spec.broker_port}" for n in self.nodes.values())

    def start(self) -> None:
        libs = ensure_kafka(*([self.version] if self.version else []))
        java = require("java")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        log4j = self.base_dir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES)
        specs = [
            KafkaNodeSpec(
                node_id=i,
                broker_port=free_port(),
                controller_port=free_port(),
                log_dir=self.base_dir / f"node-{i}" / "data",
            )
            for i in range(1, self.size + 1)
        ]
        classpath = f"{libs}/*"
        for spec in specs:
            config = self.base_dir / f"node-{spec.node_id}" / "server.properties"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(render_server_properties(spec, specs, self.overrides))
            self._format_storage(java, classpath, config)
            argv = [
                java,
                *self.jvm_opts,
                f"-Dlog4j2.configurationFile={log4j}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(config),
            ]
            process = ManagedProcess(
                name=f"kafka-{spec.node_id}",
                argv=argv,
                log_path=self.base_dir / f"node-{spec.node_id}" / "kafka.log",
            )
            self.nodes[spec.node_id] = KafkaNode(spec, config, process)
        try:
            for node in self.nodes.values():
                node.process.start()
            self.wait_for_brokers(set(self.nodes), self.start_timeout)
        except BaseException:
            self.stop()
            raise

    def _format_storage(self, java: str, classpath: str, config: Path) -> None:
        result = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "format",
             "-t", self.cluster_id, "-c", str(config), "--ignore-formatted"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"kafka storage format failed for {config}:\n"
                f"{(result.stdout + result.stderr)[-2000:]}"
            )

    def admin(self) -> AdminClient:
        """One admin client per cluster; its connection errors while nodes are down are
        expected and are reported through the brokers' logs instead."""
        if self._admin is None:
            self._admin = AdminClient({
                "bootstrap.servers": self.bootstrap_servers,
                "logger": _quiet_librdkafka,
            })
        return self._admin

    def registered_brokers(self) -> set[int]:
        return set(self.admin().list_topics(timeout=5).brokers)

    def wait_for_brokers(self, node_ids: set[int], timeout: float) -> None:
        """Ready means the metadata lists every node in `node_ids` as a live broker."""

        def ready() -> bool:
            for node_id in node_ids:
                process = self.nodes[node_id].process
                if not process.alive():
                    raise process.failure(f"exited with code {process.returncode()} at start")
            return node_ids <= self.registered_brokers()

        try:
            wait_until(
                ready,
                timeout=timeout,
                what=f"waiting for brokers {sorted(node_ids)} in the cluster metadata",
                interval=0.5,
            )
        except ServiceError as exc:
            logs = ", ".join(str(self.nodes[i].process.log_path) for i in sorted(node_ids))
            raise ServiceError(f"{exc}; broker logs: {logs}") from exc

    def stop_node(self, node_id: int, timeout: float = 60.0) -> None:
        """Stop one node gracefully (controlled shutdown moves its partition leadership)."""
        self.nodes[node_id].process.stop(timeout)

    def kill_node(self, node_id: int) -> None:
        self.nodes[node_id].process.kill()

    def start_node(self, node_id: int) -> None:
        """Restart a stopped node on its old ports and data; returns once it is a live broker."""
        node = self.nodes[node_id]
        node.process.start()
        self.wait_for_brokers({node_id}, self.start_timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop all nodes at once: one by one, the last would wait for a quorum that is gone."""
        for node in self.nodes.values():
            node.process.request_stop()
        deadline = time.monotonic() + timeout
        for node in self.nodes.values():
            node.process.wait_stopped(deadline - time.monotonic())
        self._admin = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
