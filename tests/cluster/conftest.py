"""The `kube` fixture: one real control plane (etcd, kube-apiserver, controller-manager,
scheduler, kwok with 3 fake nodes) per test session, plus kubectl and helm bound to it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.localstack.kube_install import KubeTools, ensure_kube_tools
from energy_harness.localstack.process import ServiceError

_tools: KubeTools | None = None
_install_error: ServiceError | None = None


# trylast: after `-m`/`-k` deselection, so `pytest -m unit` never triggers a build.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Build the binaries before the first cluster test, outside any test's timeout.

    A cold build takes many minutes, longer than pytest-timeout allows one test, and an
    interrupted build would start from scratch every run. A failure is kept and raised by
    the fixture, so only the cluster tests fail, each naming what went wrong.
    """
    global _tools, _install_error
    if config.option.collectonly or not any(i.get_closest_marker("cluster") for i in items):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("cluster tests: checking the Kubernetes binaries (built once, cached)")
    try:
        _tools = ensure_kube_tools()
    except ServiceError as exc:
        _install_error = exc


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeControlPlane]:
    """A ready cluster: `.kubeconfig`, `.api_client`, `.kubectl(...)`, `.helm(...)`.

    Tests share it, so each one works in a namespace of its own and cleans up after itself.
    Logs stay in the pytest temp dir (`<basetemp>/kube*/logs`) for post-mortems.
    """
    if _install_error is not None:
        raise _install_error
    plane = KubeControlPlane(tmp_path_factory.mktemp("kube"), tools=_tools)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


# -- EnergyPipeline operator (tests/cluster/test_operator*.py) --------------------------------


@pytest.fixture(scope="session")
def energy_crd(kube: KubeControlPlane) -> str:
    """The CRD from manifests/ and the operator's RBAC exactly as the operator chart renders
    it (release energy-operator in energy-system: ServiceAccount energy-operator), so the
    operator under test has the permissions that ship, no more."""
    from pathlib import Path

    from energy_harness.operator_local import install_chart_rbac

    manifests = Path(__file__).resolve().parents[2] / "manifests"
    kube.kubectl("create", "namespace", "energy-system", check=False)
    kube.kubectl("apply", "-f", str(manifests / "crd"))
    install_chart_rbac(kube, "energy-operator", "energy-system")
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/energypipelines.energy.pipeline.dev")
    return "energypipelines.energy.pipeline.dev"


@pytest.fixture(scope="session")
def operator_kubeconfig(
    kube: KubeControlPlane, energy_crd: str, tmp_path_factory: pytest.TempPathFactory
):
    """A kubeconfig of ServiceAccount energy-system/energy-operator: the chart's RBAC."""
    from energy_harness.operator_local import service_account_kubeconfig, service_account_token
    from energy_operator.kube import Kube

    token = service_account_token(Kube(kube.api_client), "energy-system", "energy-operator")
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    return service_account_kubeconfig(kube.kubeconfig, token, path)


@contextlib.contextmanager
def leading_operator(kubeconfig: Path, log_dir: Path, interval: int) -> Iterator[Any]:
    """`energy-pipeline operator` as a local process under the chart's RBAC (`kubeconfig`),
    reconciling every `interval` seconds, once it leads (a short Lease: a module's operator
    takes over quickly from the previous module's); stopped at the end."""
    from energy_harness.operator_local import OperatorProcess

    proc = OperatorProcess(
        kubeconfig=kubeconfig, log_path=log_dir / "operator.log",
        env={"RECONCILE_INTERVAL_S": str(interval),
             "LEADER_ELECTION_NAMESPACE": "energy-system",
             "LEADER_ELECTION_LEASE_S": "6", "LEADER_ELECTION_RENEW_S": "1"},
    )
    proc.start()
    try:
        proc.wait_role("leader", 20)
        yield proc
    finally:
        proc.stop()


# -- one helm release in a namespace of its own (the chart tests) ----------------------------

RELEASE = "energy"


@pytest.fixture
def release_namespace(kube: KubeControlPlane) -> Iterator[str]:
    """A fresh namespace for the helm release RELEASE: uninstalled and deleted after."""
    name = f"rel-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube.helm("uninstall", RELEASE, "--namespace", name, "--wait", check=False)
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
