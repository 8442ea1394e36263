"""A build that fails stops with the failing step and its output, and leaves no tag behind."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from energy_harness.images import DEBIAN_BASE, build, ensure_base
from energy_harness.localstack.docker import DockerEngine
from energy_harness.localstack.process import ServiceError

pytestmark = pytest.mark.container


def test_a_failing_step_is_named_with_its_output_and_sets_no_tag(
    docker_engine: DockerEngine, tmp_path: Path
) -> None:
    ensure_base(docker_engine, DEBIAN_BASE)
    marker = uuid.uuid4().hex
    (tmp_path / "Dockerfile").write_text(
        f"FROM {DEBIAN_BASE}\nRUN echo first-step-{marker}\n"
        f"RUN echo the-failing-step-{marker} >&2 && exit 3\n"
    )
    tag = f"energy-pipeline-test/broken:{marker[:12]}"
    with pytest.raises(ServiceError) as failure:
        build(docker_engine, tag, tmp_path)
    message = str(failure.value)
    assert f"building {tag}" in message
    assert f"the-failing-step-{marker}" in message  # the step's own output
    assert "exit code: 3" in message
    assert not docker_engine.image_exists(tag)


def test_a_build_that_succeeds_sets_its_tag(docker_engine: DockerEngine, tmp_path: Path) -> None:
    ensure_base(docker_engine, DEBIAN_BASE)
    marker = uuid.uuid4().hex
    (tmp_path / "Dockerfile").write_text(f"FROM {DEBIAN_BASE}\nRUN echo {marker} > /marker\n")
    tag = f"energy-pipeline-test/ok:{marker[:12]}"
    try:
        build(docker_engine, tag, tmp_path)
        assert docker_engine.image_exists(tag)
    finally:
        docker_engine.run(["rmi", "-f", tag], check=False)
