"""`kopf run -m energy_operator.handlers`: the same handlers without our command around them
(no leader election), for a single replica or a developer's machine."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.localstack.process import ManagedProcess
from energy_operator.kube import Kube

pytestmark = pytest.mark.cluster


def test_kopf_run_reconciles_and_repairs_drift(
    kube: KubeControlPlane, operator_kubeconfig: Path, tmp_path: Path
) -> None:
    client = Kube(kube.api_client)
    namespace = f"kopf-{uuid.uuid4().hex[:8]}"
    client.request("POST", "/api/v1/namespaces",
                   body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kopf = Path(sys.executable).with_name("kopf")
    proc = ManagedProcess(
        name="kopf-run",
        argv=[str(kopf), "run", "-m", "energy_operator.handlers", "--standalone",
              "--namespace", namespace],
        log_path=tmp_path / "kopf-run.log",
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
             "KUBECONFIG": str(operator_kubeconfig), "RECONCILE_INTERVAL_S": "2"},
        stop_signal=signal.SIGTERM,
    )
    proc.start()
    try:
        body = {"apiVersion": "energy.pipeline.dev/v1alpha1", "kind": "EnergyPipeline",
                "metadata": {"name": "dev", "namespace": namespace},
                "spec": {"mqtt": {"host": "127.0.0.1"},
                         "kafka": {"bootstrapServers": "127.0.0.1:1"},
                         "database": {"urlSecret": {"name": "none"}}}}
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))

        def deployment() -> dict | None:
            return client.get("apps/v1", "Deployment", namespace, "dev-bridge")

        def wait(check, what: str, timeout: float = 40):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not proc.alive():
                    raise proc.failure("exited")
                value = check()
                if value:
                    return value
                time.sleep(0.3)
            raise proc.failure(f"timed out waiting for {what}")

        uid = wait(deployment, "the children")["metadata"]["uid"]
        client.request("DELETE", f"/apis/apps/v1/namespaces/{namespace}/deployments/dev-bridge")
        wait(lambda: (deployment() or {}).get("metadata", {}).get("uid") not in (None, uid),
             "the periodic pass to restore the Deployment")
        status = wait(lambda: (client.get("energy.pipeline.dev/v1alpha1", "EnergyPipeline",
                                          namespace, "dev") or {}).get("status"), "a status")
        assert status["observedGeneration"] == 1
    finally:
        proc.stop(timeout=30)
        client.request("DELETE", f"/api/v1/namespaces/{namespace}")
