"""`energy-pipeline <command>`: one entry point for every worker and tool."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from energy_pipeline.logs import configure_logging

log = logging.getLogger("energy_pipeline.cli")


def _stack_install(args: argparse.Namespace) -> int:
    from energy_pipeline.localstack.install import install_all

    found = install_all(*([args.kafka_version] if args.kafka_version else []))
    print(json.dumps(found, indent=2))
    return 0


def _kube_install(args: argparse.Namespace) -> int:
    from energy_pipeline.localstack.kube_install import install_kube

    print(json.dumps(install_kube(), indent=2))
    return 0


def _kube_up(args: argparse.Namespace) -> int:
    from energy_pipeline.localstack.kube import KubeControlPlane

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    base = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="energy-kube-"))
    with KubeControlPlane(base) as plane:
        print(f"export KUBECONFIG={plane.kubeconfig}", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def _stack_up(args: argparse.Namespace) -> int:
    from energy_pipeline.localstack import LocalStack

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


# Which module adds each subcommand: it has `register(commands)` taking the argparse
# sub-parsers object and setting `func` on the parsers it adds. A worker imports only its
# own module: the bridge has no use for LightGBM, SciPy or the Kubernetes client, which
# cost start-up time and memory in every pod.
COMMAND_MODULES: dict[str, str] = {
    "migrate": "energy_pipeline.admin_commands",
    "topics": "energy_pipeline.admin_commands",
    "simulate": "energy_pipeline.simulation.commands",
    "bridge": "energy_pipeline.bridge",
    "ingest": "energy_pipeline.ingest",
    "demo": "energy_pipeline.demo",
    "backtest": "energy_pipeline.forecasting.commands",
    "train": "energy_pipeline.forecasting.train",
    "inference": "energy_pipeline.inference.server",
    "api": "energy_pipeline.api.server",
    "operator": "energy_operator.command",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; with a known `command`, only the module that adds it is imported."""
    parser = argparse.ArgumentParser(prog="energy-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    stack = commands.add_parser("stack", help="real Kafka, PostgreSQL and MQTT as local processes")
    stack_commands = stack.add_subparsers(dest="stack_command", required=True)
    install = stack_commands.add_parser("install", help="install system packages and Kafka jars")
    install.add_argument("--kafka-version", default=None)
    install.set_defaults(func=_stack_install)
    up = stack_commands.add_parser("up", help="start the stack and keep it running until Ctrl-C")
    up.add_argument("--kafka-nodes", type=int, default=3)
    up.add_argument("--data-dir", default=None, help="default: a new temp dir")
    up.add_argument("--keep-data", action="store_true")
    up.set_defaults(func=_stack_up)

    kube = commands.add_parser(
        "kube", help="a real Kubernetes v1.33 control plane with kwok nodes, for tests"
    )
    kube_commands = kube.add_subparsers(dest="kube_command", required=True)
    kube_install = kube_commands.add_parser("install", help="build the binaries (cached)")
    kube_install.set_defaults(func=_kube_install)
    kube_up = kube_commands.add_parser("up", help="start it and keep it running until Ctrl-C")
    kube_up.add_argument("--data-dir", default=None, help="default: a new temp dir")
    kube_up.set_defaults(func=_kube_up)

    if command in COMMAND_MODULES:
        modules = [COMMAND_MODULES[command]]
    elif command in ("stack", "kube"):
        modules = []
    else:  # --help, a typo: the full list of commands
        modules = list(dict.fromkeys(COMMAND_MODULES.values()))
    for module_name in modules:
        importlib.import_module(module_name).register(commands)
    return parser


def tune_gc() -> None:
    """Workers allocate a few short-lived objects per message but no reference cycles that
    matter; the cyclic collector instead kept rescanning the large heap of imported libraries
    (18 % of the bridge's CPU in a py-spy profile). Freeze what exists now and collect less
    often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    configure_logging(component=args.command)
    tune_gc()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
