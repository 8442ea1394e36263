"""`energy-pipeline stack ...` and `energy-pipeline kube ...`: the local services the tests and
the demo run, as commands (registered through the `energy_pipeline.commands` entry points, so
the runtime package knows nothing of them)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

log = logging.getLogger("energy_harness.commands")


def _stack_install(args: argparse.Namespace) -> int:
    from energy_harness.localstack.install import install_all

    found = install_all(*([args.kafka_version] if args.kafka_version else []))
    print(json.dumps(found, indent=2))
    return 0


def _kube_install(args: argparse.Namespace) -> int:
    from energy_harness.localstack.kube_install import install_kube
    from energy_harness.localstack.node_install import install_node

    # The real node's programs too (containerd, CNI, CoreDNS, the pause image).
    print(json.dumps({**install_kube(), **install_node()}, indent=2))
    return 0


def _kube_up(args: argparse.Namespace) -> int:
    from energy_harness.localstack.kube import KubeControlPlane

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    base = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="energy-kube-"))
    with KubeControlPlane(base, nodes=args.kwok_nodes, real_node=args.real_node) as plane:
        print(f"export KUBECONFIG={plane.kubeconfig}", file=sys.stderr)
        if plane.node is not None:
            print(f"# images: docker save IMAGE | ctr --address="
                  f"{plane.node.layout.containerd_socket} -n k8s.io images import -",
                  file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def _stack_up(args: argparse.Namespace) -> int:
    from energy_harness.localstack import LocalStack

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stack_kwargs: dict[str, object] = {"kafka_nodes": args.kafka_nodes, "keep_data": args.keep_data}
    if args.data_dir:
        stack_kwargs["base_dir"] = Path(args.data_dir)
    with LocalStack(**stack_kwargs) as stack:  # type: ignore[arg-type]
        env = stack.env()
        log.info("local stack ready", extra={"env": env, "data_dir": str(stack.base_dir)})
        for key, value in env.items():
            print(f"export {key}={value!r}", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        log.info("stopping local stack")
    return 0


def _docker_up(args: argparse.Namespace) -> int:
    from energy_harness.localstack.docker import DockerEngine

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with DockerEngine() as engine:
        print(f"export DOCKER_HOST={engine.host}", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def register_docker(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    docker = commands.add_parser(
        "docker", help="the Docker engine the image tests use, as a local service"
    )
    docker_commands = docker.add_subparsers(dest="docker_command", required=True)
    up = docker_commands.add_parser("up", help="start it (or find it) and keep it until Ctrl-C")
    up.set_defaults(func=_docker_up)


def register_stack(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    stack = commands.add_parser("stack", help="real Kafka, PostgreSQL and MQTT as local processes")
    stack_commands = stack.add_subparsers(dest="stack_command", required=True)
    install = stack_commands.add_parser(
        "install",
        help="install system packages and Kafka jars",
        description="Installs what the local stack needs and is missing: the Debian packages "
        "(postgresql, mosquitto, a JDK, maven; needs root) and the Kafka and HiveMQ CE jars "
        "from Maven Central, cached in ~/.cache/energy-pipeline (ENERGY_PIPELINE_CACHE). "
        "Prints what it found.",
    )
    install.add_argument(
        "--kafka-version", default=None, help="Apache Kafka version (default: the pinned one)"
    )
    install.set_defaults(func=_stack_install)
    up = stack_commands.add_parser(
        "up",
        help="start the stack and keep it running until Ctrl-C",
        description="Starts a KRaft Kafka cluster, PostgreSQL and Mosquitto (not HiveMQ: the "
        "demo and the tests start HiveMQ themselves) as local processes on free ports of "
        "127.0.0.1, then prints the variables the workers need (KAFKA_BOOTSTRAP_SERVERS, "
        "DATABASE_URL, DATABASE_CA_FILE of its TLS-only PostgreSQL, MQTT_HOST, MQTT_PORT) as "
        "`export` lines on stderr and keeps them "
        "running until Ctrl-C or SIGTERM, which stops every one.",
    )
    up.add_argument("--kafka-nodes", type=int, default=3, help="Kafka broker+controller nodes")
    up.add_argument(
        "--data-dir", default=None, help="where the services keep their data (default: a new "
        "temporary directory)",
    )
    up.add_argument(
        "--keep-data", action="store_true", help="leave the data directory behind when stopping"
    )
    up.set_defaults(func=_stack_up)


def register_kube(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    kube = commands.add_parser(
        "kube", help="a real Kubernetes v1.33 control plane with kwok nodes, for tests"
    )
    kube_commands = kube.add_subparsers(dest="kube_command", required=True)
    kube_install = kube_commands.add_parser("install", help="build the binaries (cached)")
    kube_install.set_defaults(func=_kube_install)
    kube_up = kube_commands.add_parser("up", help="start it and keep it running until Ctrl-C")
    kube_up.add_argument("--data-dir", default=None, help="default: a new temp dir")
    kube_up.add_argument("--kwok-nodes", type=int, default=3, help="fake nodes (default 3)")
    kube_up.add_argument(
        "--real-node", action="store_true",
        help="also a real kubelet node (containerd, kube-proxy, CNI, CoreDNS; needs root)",
    )
    kube_up.set_defaults(func=_kube_up)
