"""README.md stays true: every environment variable a worker reads is documented there."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import energy_pipeline
import pytest

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"


def settings_variables() -> set[str]:
    names: set[str] = set()
    for module_info in pkgutil.walk_packages(energy_pipeline.__path__, "energy_pipeline."):
        if ".bench" in module_info.name or module_info.name.endswith("_pb2_grpc"):
            continue
        module = importlib.import_module(module_info.name)
        for _, obj in inspect.getmembers(module, dataclasses.is_dataclass):
            if inspect.isclass(obj):
                names |= {f.metadata["env"] for f in dataclasses.fields(obj) if "env" in f.metadata}
    return names


def test_every_worker_environment_variable_is_in_the_readme() -> None:
    text = README.read_text()
    variables = settings_variables()
    assert "KAFKA_BOOTSTRAP_SERVERS" in variables  # the walk found the settings at all
    missing = sorted(v for v in variables if f"`{v}`" not in text)
    assert not missing, f"README.md does not document {missing}"


def test_readme_gives_the_test_command() -> None:
    assert "make test" in README.read_text()
