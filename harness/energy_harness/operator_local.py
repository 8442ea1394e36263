"""The operator as a local process against any cluster, for tests and demos.

`OperatorProcess` runs `energy-pipeline operator` exactly as its Deployment does, with
`service_account_kubeconfig` giving it the identity (and so only the RBAC) of the operator's
ServiceAccount instead of an admin's.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from energy_operator.kube import Kube

from energy_harness.localstack.process import ManagedProcess, free_port, wait_until
from energy_harness.localstack.workers import energy_pipeline_argv


def service_account_token(kube: Kube, namespace: str, name: str, seconds: int = 7200) -> str:
    """A bound token of the ServiceAccount (TokenRequest, as `kubectl create token`)."""
    review = kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
              "spec": {"expirationSeconds": seconds}},
    )
    return str(review["status"]["token"])


def service_account_kubeconfig(admin_kubeconfig: Path, token: str, path: Path) -> Path:
    """A kubeconfig for the same server and CA as `admin_kubeconfig`, authenticating by token."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator",
                      "context": {"cluster": cluster["name"], "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class OperatorProcess:
    """`energy-pipeline operator` with its own HTTP port and log file."""

    kubeconfig: Path
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    name: str = "energy-operator"
    process: ManagedProcess | None = field(default=None, init=False)

    def environment(self) -> dict[str, str]:
        keep = {"PATH", "HOME", "LANG", "TZ"}
        base = {k: v for k, v in os.environ.items() if k in keep}
        return {
            **base,
            "KUBECONFIG": str(self.kubeconfig),
            "HTTP_PORT": str(self.http_port),
            **self.env,
        }

    def start(self, timeout: float = 30) -> OperatorProcess:
        self.process = ManagedProcess(
            name=self.name,
            argv=energy_pipeline_argv(["operator"]),
            log_path=self.log_path,
            env=self.environment(),
            stop_signal=signal.SIGTERM,
        )
        self.process.start()
        wait_until(self.healthy, timeout=timeout, what="waiting for the operator's /healthz",
                   process=self.process)
        return self

    def stop(self, timeout: float = 40) -> int | None:
        if self.process is None:
            return None
        self.process.stop(timeout)
        return self.process.returncode()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def restart(self) -> OperatorProcess:
        self.stop()
        return self.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}",
                                        timeout=3) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def healthy(self) -> bool:
        return self._get("/healthz")[0] == 200

    def role(self) -> str:
        """'leader', 'standby' or 'starting' (the detail of /readyz)."""
        return str(json.loads(self._get("/readyz")[1] or b"{}").get("detail", ""))

    def wait_role(self, role: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.role() != role:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} is {self.role()!r}, not {role!r}")
            time.sleep(0.3)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


OPERATOR_CHART = Path(__file__).resolve().parents[2] / "charts" / "energy-operator"


def install_chart_rbac(kube: Any, release: str, namespace: str,
                       set_values: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The operator chart's ServiceAccount and RBAC exactly as `helm template` renders them
    (release `release` in `namespace`, `--set` each of `set_values`), applied with kubectl.

    `kube` is a started KubeControlPlane (its helm and kubectl). The cluster tests run the
    operator under these, so what they test is what the chart ships. Returns the objects.
    """
    args = ["template", release, str(OPERATOR_CHART), "--namespace", namespace,
            "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"]
    for value in set_values:
        args += ["--set", value]
    manifest = kube.helm(*args).stdout
    kube.kubectl("apply", "-f", "-", input=manifest)
    return [d for d in yaml.safe_load_all(manifest) if d]
