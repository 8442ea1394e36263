"""The worker/operator image from the repository's Dockerfile, built and run for real.

The workers run in containers as the charts and the operator run them: uid 10001, read-only
root file system, every capability dropped, no privilege escalation. They reach the test's
Kafka (3 brokers), PostgreSQL and HiveMQ CE on the host network (127.0.0.1), and the data
plane's exact-storage guarantee holds through them.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from energy_harness.localstack import KafkaCluster
from energy_harness.localstack.docker import LABEL, DockerEngine
from energy_harness.localstack.hivemq import HiveMQBroker
from energy_harness.localstack.process import free_port
from energy_harness.testing import expected_rows, stored_rows, wait_for
from energy_pipeline.api.auth import entry

pytestmark = pytest.mark.container

# As the operator's Deployments run the workers (operator/energy_operator/render.py).
HARDENED = [
    "--read-only",
    "--user", "10001:10001",
    "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges",
    "--tmpfs", "/tmp:size=64m",
]  # fmt: skip
SIMULATION = [
    "--sites", "2", "--devices", "4", "--interval", "15m", "--duration", "12h",
    "--start", "2025-02-01T00:00:00Z", "--seed", "5",
]  # fmt: skip


@pytest.fixture(scope="module")
def worker_image(image: Callable[[str], str]) -> str:
    return image("worker")


def test_the_image_runs_as_uid_10001_with_a_read_only_root(
    docker_engine: DockerEngine, worker_image: str
) -> None:
    config = json.loads(docker_engine.run(["image", "inspect", worker_image]).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["energy-pipeline"]
    uid = docker_engine.run(
        ["run", "--rm", "--label", LABEL, *HARDENED, "--entrypoint", "id", worker_image, "-u"]
    ).stdout
    assert uid.strip() == "10001"
    # Without --user too: the image's own default is the unprivileged user.
    assert docker_engine.run(
        ["run", "--rm", "--label", LABEL, "--entrypoint", "id", worker_image, "-u"]
    ).stdout.strip() == "10001"
    help_text = docker_engine.run(["run", "--rm", "--label", LABEL, *HARDENED, worker_image]).stdout
    for command in ("bridge", "ingest", "inference", "api", "train", "migrate", "operator"):
        assert command in help_text


def test_the_image_holds_no_harness_and_no_machine_ca(
    docker_engine: DockerEngine, worker_image: str, tmp_path: Path
) -> None:
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "('energy_pipeline', 'energy_operator', 'energy_harness', 'grpc_tools', 'pytest')}))"
    )
    found = json.loads(
        docker_engine.run(
            ["run", "--rm", "--label", LABEL, "--entrypoint", "python", worker_image, "-c", probe]
        ).stdout
    )
    assert found == {
        "energy_pipeline": True, "energy_operator": True,
        "energy_harness": False, "grpc_tools": False, "pytest": False,
    }  # fmt: skip

    # The CA bundle this machine's builds use reaches the build only as a secret. Every
    # certificate of it that Debian's own bundle lacks must appear in no file of the image.
    cert = os.environ.get("PIP_CERT")
    if not cert or not Path(cert).is_file():
        pytest.skip("PIP_CERT names no CA bundle on this machine: no machine CA to look for")
    debian_bundle = docker_engine.run(
        ["run", "--rm", "--label", LABEL, "--entrypoint", "cat", worker_image,
         "/etc/ssl/certs/ca-certificates.crt"], check=False,
    ).stdout  # fmt: skip
    image_certs = set(pem_bodies(debian_bundle))
    machine_only = [c for c in pem_bodies(Path(cert).read_text()) if c not in image_certs]
    if not machine_only:
        pytest.skip("the machine's CA bundle holds only Debian's certificates")
    container = f"energy-export-{uuid.uuid4().hex[:8]}"
    docker_engine.run(["create", "--label", LABEL, "--name", container, worker_image])
    try:
        archive = tmp_path / "rootfs.tar"
        docker_engine.run(["export", "-o", str(archive), container], timeout=600)
        needles = [body[:64].encode() for body in machine_only]
        with tarfile.open(archive) as tar:
            for member in tar:
                if not member.isfile() or member.size > 50_000_000:
                    continue
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                assert not any(n in data for n in needles), f"{member.name} holds the machine CA"
    finally:
        docker_engine.run(["rm", "-f", container], check=False)


def pem_bodies(text: str) -> list[str]:
    """The base64 bodies of the certificates in a PEM bundle, one line each."""
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
    return ["".join(block.split()) for block in blocks]


@dataclass
class ContainerWorkers:
    """Workers as containers on the host network, removed when the test ends."""

    engine: DockerEngine
    image: str
    env: dict[str, str]
    names: list[str] = field(default_factory=list)

    def start(self, command: list[str], volumes: tuple[str, ...] = (),
              **extra_env: str) -> tuple[str, int]:
        """Start `energy-pipeline COMMAND` (with `-v` mounts `volumes`); its container name and
        HTTP port once /healthz answers."""
        port = free_port()
        name = f"energy-{command[0]}-{uuid.uuid4().hex[:8]}"
        env = {**self.env, **extra_env, "HTTP_PORT": str(port)}
        args = ["run", "-d", "--name", name, "--label", LABEL, "--network", "host", *HARDENED]
        for volume in volumes:
            args += ["-v", volume]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        self.engine.run([*args, self.image, *command])
        self.names.append(name)
        # status() fails at once, with the container's log, if the worker exits.
        wait_for(lambda: self.status(name, port, "/healthz") == 200, 90,
                 f"{command[0]} /healthz in its container", interval=0.5)  # fmt: skip
        return name, port

    def status(self, name: str, port: int, path: str) -> int:
        state = self.engine.run(["inspect", "-f", "{{.State.Running}}", name]).stdout.strip()
        assert state == "true", f"{name} exited:\n{self.logs(name)}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def run(self, command: list[str], timeout: float = 300) -> str:
        """A one-shot command (migrate, simulate, train) in a container, which must exit 0;
        its output and log lines (stdout, then stderr)."""
        args = ["run", "--rm", "--label", LABEL, "--network", "host", *HARDENED]
        for key, value in self.env.items():
            args += ["-e", f"{key}={value}"]
        result = self.engine.run([*args, self.image, *command], timeout=timeout)
        return result.stdout + result.stderr

    def report(self, workers: tuple[tuple[str, int], ...]) -> str:
        """Each worker's message counters and last log lines, for a failure message."""
        parts = []
        for name, port in workers:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
                    counters = [
                        line for line in r.read().decode().splitlines()
                        if line.startswith("energy_") and "_bucket" not in line
                    ]  # fmt: skip
            except OSError as exc:
                counters = [f"/metrics: {exc}"]
            parts.append(f"--- {name}\n" + "\n".join(counters) + "\n" + self.logs(name))
        return "\n".join(parts)

    def logs(self, name: str) -> str:
        result = self.engine.run(["logs", "--tail", "30", name], check=False)
        return result.stdout + result.stderr

    def remove_all(self) -> None:
        if self.names:
            self.engine.run(["rm", "-f", *self.names], check=False)


@pytest.fixture
def containers(
    docker_engine: DockerEngine,
    worker_image: str,
    kafka_cluster: KafkaCluster,
    database: str,
    own_mqtt_broker: HiveMQBroker,
    topic_prefix: str,
) -> Iterator[ContainerWorkers]:
    hivemq, prefix = own_mqtt_broker, topic_prefix
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_cluster.bootstrap_servers,
        "DATABASE_URL": database,
        "MQTT_HOST": hivemq.host,
        "MQTT_PORT": str(hivemq.port),
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_CONSUMER_GROUP": f"ingest-{prefix}",
        "PIPELINE_NAME": "container",
    }
    workers = ContainerWorkers(docker_engine, worker_image, env)
    try:
        yield workers
    finally:
        workers.remove_all()


def test_workers_in_containers_store_every_reading_exactly_once(
    containers: ContainerWorkers, database: str, tmp_path: Path
) -> None:
    """bridge, ingest, inference and api start hardened; readings published by the simulator
    (itself in a container) arrive in PostgreSQL exactly as generated."""
    containers.run(["migrate"])  # already migrated: must be a no-op, not a failure
    # The training job starts (LightGBM loads), connects and finds nothing to train yet.
    assert "no hourly_features yet; nothing to train" in containers.run(["train"])
    bridge = containers.start(["bridge"])
    ingest = containers.start(["ingest"], KAFKA_SESSION_TIMEOUT_MS="6000")
    # Nothing calls it here; plaintext gRPC knowingly (mutual TLS: test_inference_server.py).
    inference = containers.start(["inference"], GRPC_PORT=str(free_port()), GRPC_TLS="false")
    # The read API's tokens file, mounted read-only as the operator mounts its Secret.
    tokens = tmp_path / "api-tokens"
    tokens.write_text(entry("tests", "token") + "\n")
    tokens.chmod(0o644)  # the container's non-root user reads it
    api = containers.start(["api"], volumes=(f"{tokens}:/run/api-tokens/tokens:ro",),
                           API_PORT=str(free_port()), API_TOKENS_FILE="/run/api-tokens/tokens")
    for name, port in (bridge, ingest, api):
        wait_for(lambda n=name, p=port: containers.status(n, p, "/readyz") == 200, 60,
                 f"{name} /readyz")  # fmt: skip
    # No model is promoted yet: alive, and saying so, but not ready.
    assert containers.status(*inference, "/healthz") == 200

    expected = expected_rows(SIMULATION)
    containers.run(["simulate", *SIMULATION])
    try:
        wait_for(lambda: len(stored_rows(database)) >= len(expected), 180,
                 f"{len(expected)} readings stored", interval=1.0)  # fmt: skip
    except AssertionError as exc:
        # Where the readings stopped: counts, each worker's counters and its last log lines.
        raise AssertionError(
            f"{exc}\nstored {len(stored_rows(database))} of {len(expected)}\n"
            + containers.report((bridge, ingest))
        ) from None
    assert stored_rows(database) == expected
