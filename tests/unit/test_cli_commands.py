"""The CLI imports only the module of the command it runs."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest
from energy_pipeline.cli import build_parser, command_entry_points

pytestmark = pytest.mark.unit


# The runtime distribution's commands and the harness's (demo, stack, kube, image, docker).
EXPECTED = {
    "migrate", "topics", "bridge", "ingest", "simulate", "backtest", "train", "inference",
    "api", "api-token", "operator", "platform-secrets", "demo", "stack", "kube", "image", "docker",
}  # fmt: skip


def test_every_registered_function_adds_exactly_the_commands_mapped_to_it() -> None:
    entry_points = command_entry_points()
    assert set(entry_points) == EXPECTED
    for value in {ep.value for ep in entry_points.values()}:
        commands = argparse.ArgumentParser().add_subparsers()
        module_name, _, function = value.partition(":")
        getattr(importlib.import_module(module_name), function)(commands)
        mapped = {name for name, ep in entry_points.items() if ep.value == value}
        assert set(commands.choices) == mapped, value


def test_the_full_parser_lists_every_command() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == EXPECTED  # type: ignore[arg-type]


def test_the_bridge_does_not_load_forecasting_or_kubernetes_libraries() -> None:
    code = (
        "import sys; from energy_pipeline.cli import build_parser; "
        "build_parser('bridge').parse_args(['bridge']); "
        "print(sorted(m for m in ('lightgbm', 'scipy', 'kubernetes', 'kopf', 'grpc') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"
