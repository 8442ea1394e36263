"""Fixtures of the node tests: a control plane with a real kubelet node.

`node_kube` (per module) is `KubeControlPlane(real_node=True)` without kwok nodes, so every
pod lands on the real node: containerd runs it, the kubelet probes it, kube-proxy routes its
Services and CoreDNS resolves its names. `node_images` builds the images with the shared
Docker engine and imports them into the node's containerd (`docker save`, then `ctr images
import`), as `kind load docker-image` would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from energy_harness.localstack.docker import DockerEngine
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.localstack.kube_install import KubeTools, ensure_kube_tools
from energy_harness.localstack.node_install import NodeTools, ensure_node_tools
from energy_harness.localstack.process import ServiceError

_tools: tuple[KubeTools, NodeTools] | None = None
_install_error: ServiceError | None = None

# Every image the platform's pods run.
NODE_IMAGES = ("worker", "kafka", "postgres", "hivemq")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Build kubelet, CoreDNS and pause before the first node test, outside any timeout."""
    global _tools, _install_error
    if config.option.collectonly or not any(i.get_closest_marker("node") for i in items):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("node tests: checking kubelet, containerd, CNI and CoreDNS")
    try:
        _tools = (ensure_kube_tools(), ensure_node_tools())
    except ServiceError as exc:
        _install_error = exc


# Per module: one real node per machine at a time, so a module that starts its own (or none)
# never meets this one.
@pytest.fixture(scope="module")
def node_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeControlPlane]:
    if _install_error is not None:
        raise _install_error
    plane = KubeControlPlane(
        tmp_path_factory.mktemp("node-kube"), nodes=0, real_node=True, start_timeout=180,
        tools=_tools[0] if _tools else None,
    )
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def node_images(
    node_kube: KubeControlPlane,
    docker_engine: DockerEngine,
    image: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """{"worker": tag, ...}: built (cached by the engine) and imported into the node."""
    tags = {name: image(name) for name in NODE_IMAGES}
    archive: Path = tmp_path_factory.mktemp("node-images") / "images.tar"
    docker_engine.run(["save", "-o", str(archive), *tags.values()], timeout=600)
    assert node_kube.node is not None
    try:
        node_kube.node.load_images([archive])
    finally:
        archive.unlink(missing_ok=True)
    return tags
