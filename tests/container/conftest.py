"""Fixtures of the image tests: networks and rendered charts (the engine and the images are
the shared `docker_engine` and `image` fixtures of tests/conftest.py)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from energy_harness.localstack.docker import LABEL, DockerEngine
from energy_harness.localstack.kube_install import ensure_kube_tools

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"


@pytest.fixture
def docker_network(docker_engine: DockerEngine) -> Iterator[str]:
    """A labelled user-defined network (container DNS by name and alias), removed afterwards."""
    name = f"energy-test-{uuid.uuid4().hex[:8]}"
    docker_engine.run(["network", "create", "--label", LABEL, name])
    try:
        yield name
    finally:
        ids = docker_engine.run(
            ["ps", "-aq", "--filter", f"network={name}"], check=False
        ).stdout.split()
        if ids:
            docker_engine.run(["rm", "-f", "-v", *ids], check=False)
        docker_engine.run(["network", "rm", name], check=False)


@pytest.fixture(scope="session")
def helm_template() -> Callable[..., str]:
    """`helm_template(chart, "--set", "k=v", ...)` -> the rendered manifests of a chart
    from charts/, as the user's `helm install` would render them."""
    helm = ensure_kube_tools().helm

    def render(chart: str, *args: str) -> str:
        result = subprocess.run(
            [str(helm), "template", "test", str(CHARTS / chart), *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, f"helm template {chart}:\n{result.stderr}"
        return result.stdout

    return render
