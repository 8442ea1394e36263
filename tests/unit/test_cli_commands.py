"""The CLI imports only the module of the command it runs."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest
from energy_pipeline.cli import COMMAND_MODULES, build_parser

pytestmark = pytest.mark.unit


def test_every_module_registers_exactly_the_commands_mapped_to_it() -> None:
    for module_name in set(COMMAND_MODULES.values()):
        commands = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module_name).register(commands)
        mapped = {name for name, module in COMMAND_MODULES.items() if module == module_name}
        assert set(commands.choices) == mapped, module_name


def test_the_full_parser_lists_every_command() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(COMMAND_MODULES) | {"stack", "kube"} == set(sub.choices)  # type: ignore[arg-type]


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
