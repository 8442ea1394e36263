"""A real Apache Kafka cluster (KRaft, combined broker+controller nodes) as local processes.

Plain by default (what most tests use). With `security` (`KafkaSecurity`) it is the secured
cluster the product's chart runs: clients on SASL_SSL with SCRAM-SHA-512, brokers and the
controller quorum on mutual TLS, StandardAuthorizer with one principal per role, and SCRAM
users upserted from the password files (a mounted Secret's layout) on every start.
"""

from __future__ import annotations

import base64
import logging
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from energy_pipeline.core.contracts import (
    SENSOR_NAMES,
    deadletter_topic,
    kafka_topic,
    weather_topic,
)

from energy_harness.localstack.certs import Issued, LocalCA
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
    # The brokers' own listener (mutual TLS) of a secured cluster; None when plain.
    internal_port: int | None = None


# ---------------------------------------------------------------------------------------------
# The secured cluster: who may do what
# ---------------------------------------------------------------------------------------------

MECHANISM = "SCRAM-SHA-512"
# The principal of every node's certificate (CN, mapped by ssl.principal.mapping.rules): the
# only super user. The harness's own admin client presents the same identity.
BROKER_PRINCIPAL = "kafka-broker"
# One SCRAM user per role. Their passwords are files `<user>-password` in
# KafkaSecurity.secret_dir: the keys of the chart's users Secret, as mounted in a pod.
ROLES = ("bridge", "ingest", "operator")
SCRAM_ITERATIONS = 8192


@dataclass(frozen=True)
class Acl:
    """One ALLOW rule: `principal` (a SCRAM user) may do `operation` on a literal resource."""

    principal: str
    resource: str  # "topic" or "group"
    name: str
    operation: str  # an AclOperation name: READ, WRITE, DESCRIBE, CREATE, ALTER, DELETE


def role_acls(topic_prefix: str, consumer_group: str) -> list[Acl]:
    """The least each role's code needs, on the topics of core.contracts.

    bridge: produces readings to `<prefix>.<sensor>`, forecast weather to
    `<prefix>.weather_forecast` and rejects to `<prefix>.deadletter`.
    ingest: consumes `<prefix>.<sensor>` and `<prefix>.weather_forecast` in its group (READ on
    the group commits offsets) and produces the records it rejects to `<prefix>.deadletter`
    (dataplane/ingest.py).
    operator: creates the topics, reads their state, grows partitions (ALTER), keeps their
    min.insync.replicas (DESCRIBE_CONFIGS, ALTER_CONFIGS) and deletes them when
    spec.kafka.deleteTopicsOnDelete says so.
    """
    readings = [kafka_topic(topic_prefix, sensor) for sensor in SENSOR_NAMES]
    readings.append(weather_topic(topic_prefix))
    deadletter = deadletter_topic(topic_prefix)
    acls: list[Acl] = []
    for topic in [*readings, deadletter]:
        acls += [Acl("bridge", "topic", topic, op) for op in ("WRITE", "DESCRIBE")]
        acls += [Acl("operator", "topic", topic, op)
                 for op in ("CREATE", "DESCRIBE", "ALTER", "DELETE", "DESCRIBE_CONFIGS",
                            "ALTER_CONFIGS")]
    for topic in readings:
        acls += [Acl("ingest", "topic", topic, op) for op in ("READ", "DESCRIBE")]
    acls += [Acl("ingest", "topic", deadletter, op) for op in ("WRITE", "DESCRIBE")]
    acls += [Acl("ingest", "group", consumer_group, op) for op in ("READ", "DESCRIBE")]
    return acls


@dataclass(frozen=True)
class KafkaSecurity:
    """Where a secured cluster keeps its certificates and users' password files, and which
    topics and group its ACLs are for."""

    directory: Path
    topic_prefix: str = "energy"
    consumer_group: str = "ingest"

    @property
    def ca(self) -> LocalCA:
        return LocalCA(self.directory / "tls")

    @property
    def secret_dir(self) -> Path:
        """Stands for the mounted users Secret: one `<user>-password` file per role."""
        return self.directory / "users"

    def password_file(self, user: str) -> Path:
        return self.secret_dir / f"{user}-password"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()

    def set_password(self, user: str, password: str) -> None:
        """What rotating the Secret does; the brokers take it at their next start."""
        path = self.password_file(user)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password)
        path.chmod(0o600)

    def prepare(self) -> None:
        """Certificates and passwords, made once and kept across restarts."""
        self.ca.create()
        if not (self.ca.directory / "node.crt").exists():
            self.ca.issue("node", BROKER_PRINCIPAL)
        for user in ROLES:
            if not self.password_file(user).exists():
                self.set_password(user, secrets.token_urlsafe(24))

    @property
    def node_keystore(self) -> Path:
        return self.ca.directory / "node-keystore.pem"

    def worker_env(self, user: str) -> dict[str, str]:
        """The environment of a worker that logs in as `user` (what the operator renders)."""
        return {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": MECHANISM,
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD_FILE": str(self.password_file(user)),
            "KAFKA_CA_FILE": str(self.ca.cert),
        }

    def client_config(self, bootstrap_servers: str, user: str | None,
                      password: str | None = None) -> dict[str, str]:
        """librdkafka settings of `user` on the client listener (SASL_SSL); None: TLS only,
        no login (what a client without credentials sends)."""
        config = {
            "bootstrap.servers": bootstrap_servers,
            "security.protocol": "SASL_SSL" if user else "SSL",
            "ssl.ca.location": str(self.ca.cert),
        }
        if user:
            config.update({
                "sasl.mechanism": MECHANISM,
                "sasl.username": user,
                "sasl.password": self.password(user) if password is None else password,
            })
        return config


def secured_properties(node: KafkaNodeSpec, security: KafkaSecurity) -> dict[str, str]:
    """The settings that make a node the secured one (render_server_properties adds them)."""
    ca = security.ca
    return {
        "listeners": (
            f"CLIENT://127.0.0.1:{node.broker_port},INTERNAL://127.0.0.1:{node.internal_port},"
            f"CONTROLLER://127.0.0.1:{node.controller_port}"
        ),
        "advertised.listeners": (
            f"CLIENT://127.0.0.1:{node.broker_port},INTERNAL://127.0.0.1:{node.internal_port}"
        ),
        "inter.broker.listener.name": "INTERNAL",
        "listener.security.protocol.map": "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL",
        # Clients log in with SCRAM; the server side of SCRAM needs its login module named.
        "listener.name.client.sasl.enabled.mechanisms": MECHANISM,
        f"listener.name.client.{MECHANISM.lower()}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        # Replication and the Raft quorum: mutual TLS, nodes only.
        "listener.name.internal.ssl.client.auth": "required",
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(security.node_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca.cert),
        # A certificate's principal is its CN (User:kafka-broker), not the whole DN.
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{BROKER_PRINCIPAL}",
        "allow.everyone.if.no.acl.found": "false",
        # TLS handshakes on every quorum link cost three cold JVMs on two shared cores seconds
        # each at start; with the defaults (1 s election, 2 s fetch and request timeouts) the
        # leadership flapped for minutes on a loaded machine before any broker registered.
        "controller.quorum.election.timeout.ms": "5000",
        "controller.quorum.fetch.timeout.ms": "10000",
        "controller.quorum.request.timeout.ms": "10000",
        "broker.session.timeout.ms": "30000",
    }


def render_server_properties(
    node: KafkaNodeSpec,
    cluster: list[KafkaNodeSpec],
    overrides: Mapping[str, str] | None = None,
    security: KafkaSecurity | None = None,
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
        **(secured_properties(node, security) if security is not None else {}),
        "log.dirs": str(node.log_dir),
        # The product's topic defaults: 4 partitions, RF 2, and min ISR 2 so that nothing
        # acknowledged lives on one broker only (charts/kafka/values.yaml says why).
        "num.partitions": "4",
        "default.replication.factor": str(min(2, size)),
        "min.insync.replicas": str(min(2, size)),
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
        # Retention acts within a second, not the default 5 minutes: fault tests watch it
        # delete records (topics keep the 7-day default unless a test shortens it).
        "log.retention.check.interval.ms": "1000",
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
    # None: PLAINTEXT, no authorizer. Set: the secured cluster (module docstring).
    security: KafkaSecurity | None = None
    nodes: dict[int, KafkaNode] = field(default_factory=dict, init=False)
    _classpath: str = field(default="", init=False, repr=False)
    _admin: AdminClient | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        """The client listeners (SASL_SSL when secured)."""
        return ",".join(f"127.0.0.1:{n.spec.broker_port}" for n in self.nodes.values())

    @property
    def internal_bootstrap_servers(self) -> str:
        """The brokers' mutual-TLS listeners of a secured cluster (the super user's way in)."""
        return ",".join(f"127.0.0.1:{n.spec.internal_port}" for n in self.nodes.values())

    def start(self) -> None:
        libs = ensure_kafka(*([self.version] if self.version else []))
        java = require("java")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        log4j = self.base_dir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES)
        if self.security is not None:
            self.security.prepare()
            node = self.security.ca.directory
            Issued(node / "node.crt", node / "node.key").key_and_chain(
                self.security.ca.cert, self.security.node_keystore)
        specs = [
            KafkaNodeSpec(
                node_id=i,
                broker_port=free_port(),
                controller_port=free_port(),
                log_dir=self.base_dir / f"node-{i}" / "data",
                internal_port=free_port() if self.security is not None else None,
            )
            for i in range(1, self.size + 1)
        ]
        classpath = self._classpath = f"{libs}/*"
        for spec in specs:
            config = self.base_dir / f"node-{spec.node_id}" / "server.properties"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(
                render_server_properties(spec, specs, self.overrides, self.security))
            self._format_storage(config)
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
            self.apply_users()
        except BaseException:
            self.stop()
            raise

    def _format_storage(self, config: Path) -> None:
        result = subprocess.run(
            [require("java"), "-cp", self._classpath, "kafka.tools.StorageTool", "format",
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
            config: dict[str, object] = {"bootstrap.servers": self.bootstrap_servers}
            if self.security is not None:
                # The super user: a node's own certificate on the mutual-TLS listener.
                ca = self.security.ca.directory
                config = {
                    "bootstrap.servers": self.internal_bootstrap_servers,
                    "security.protocol": "SSL",
                    "ssl.ca.location": str(self.security.ca.cert),
                    "ssl.certificate.location": str(ca / "node.crt"),
                    "ssl.key.location": str(ca / "node.key"),
                }
            self._admin = AdminClient({**config, "logger": _quiet_librdkafka})
        return self._admin

    def apply_users(self, timeout: float = 30.0) -> None:
        """Upsert every role's SCRAM credential from its password file, and its ACLs.

        Runs on every start and restart, so a password changed in the Secret replaces the old
        one (which stops working) and a cluster that was plain before gets its users; SCRAM
        credentials set only at the first format would never change again.
        """
        if self.security is None:
            return
        admin = self.admin()
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        upserts = [
            UserScramCredentialUpsertion(user, info, self.security.password(user).encode())
            for user in ROLES
        ]
        for future in admin.alter_user_scram_credentials(
            upserts, request_timeout=timeout
        ).values():
            future.result(timeout)
        self.grant(self.security.topic_prefix, self.security.consumer_group, timeout)

    def grant(self, topic_prefix: str, consumer_group: str, timeout: float = 30.0) -> None:
        """The roles' ACLs (`role_acls`) for one pipeline's topics and group; they live in the
        cluster metadata from then on."""
        bindings = [
            AclBinding(
                ResourceType[acl.resource.upper()], acl.name, ResourcePatternType.LITERAL,
                f"User:{acl.principal}", "*", AclOperation[acl.operation],
                AclPermissionType.ALLOW,
            )
            for acl in role_acls(topic_prefix, consumer_group)
        ]
        for future in self.admin().create_acls(bindings, request_timeout=timeout).values():
            future.result(timeout)

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

    def wipe_node(self, node_id: int) -> None:
        """kill -9 one node and lose its disk: its log directory (partitions, the KRaft
        metadata log, meta.properties) deleted and formatted anew, as a pod finds a new, empty
        volume. Start it again with start_node."""
        node = self.nodes[node_id]
        node.process.kill()
        shutil.rmtree(node.spec.log_dir)
        self._format_storage(node.config_path)

    def start_node(self, node_id: int, restarts: int = 0) -> None:
        """Restart a stopped node on its old ports and data; returns once it is a live broker.

        A node that exits while starting is started again after 5 s, up to `restarts` times,
        as the StatefulSet restarts a pod: a wiped controller exits until the others have
        elected a leader of a newer epoch than the one it can no longer remember.
        """
        node = self.nodes[node_id]
        for attempt in range(restarts + 1):
            node.process.start()
            try:
                self.wait_for_brokers({node_id}, self.start_timeout)
                break
            except ServiceError:
                if node.process.alive() or attempt == restarts:
                    raise
                time.sleep(5)
        self.apply_users()

    def restart(self, timeout: float = 60.0) -> None:
        """Stop every node and start them again on their ports and data (a full restart, as
        after a change to the users Secret); returns once all are brokers with their users."""
        self.stop(timeout)
        for node in self.nodes.values():
            node.process.start()
        self.wait_for_brokers(set(self.nodes), self.start_timeout)
        self.apply_users()

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
