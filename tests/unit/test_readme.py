"""README.md stays true: every environment variable a worker reads is documented there."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from energy_harness import generate

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"


def settings_variables() -> set[str]:
    """Every variable of every settings dataclass in the runtime package (the generator's walk)."""
    return {f.metadata["env"] for cls in generate.settings_classes()
            for f in dataclasses.fields(cls) if "env" in f.metadata}


def test_every_worker_environment_variable_is_in_the_readme() -> None:
    # In the configuration reference itself, not merely somewhere in the README.
    text = README.read_text().split(generate.SETTINGS_START)[1].split(generate.SETTINGS_END)[0]
    variables = settings_variables()
    assert "KAFKA_BOOTSTRAP_SERVERS" in variables  # the walk found the settings at all
    missing = sorted(v for v in variables if f"| `{v}` |" not in text)
    assert not missing, f"README.md does not document {missing}"


def test_readme_gives_the_test_command() -> None:
    assert "make test" in README.read_text()
