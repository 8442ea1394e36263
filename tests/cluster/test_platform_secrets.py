"""The energy-platform chart's certificate hook against a real API server.

kwok runs no container, so the hook Job's own command line (from `helm template`) is run
here as a real process, with the identity of the hook's ServiceAccount and so exactly the
hook's Role: what the Job's pod does on a real node (the node suite runs it there too).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.localstack.workers import energy_pipeline_argv
from energy_harness.operator_local import service_account_kubeconfig, service_account_token
from energy_operator import certificates
from energy_operator.kube import Kube

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
HOOK = "templates/platform-secrets.yaml"


@pytest.fixture(scope="module")
def chart(kube: KubeControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("charts") / "charts"
    shutil.copytree(ROOT / "charts", copy, ignore=shutil.ignore_patterns("charts", "__pycache__"))
    kube.helm("dependency", "build", str(copy / "energy-platform"))
    return copy / "energy-platform"


@pytest.fixture
def namespace(kube: KubeControlPlane) -> Iterator[str]:
    name = f"ps-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def hook_docs(kube: KubeControlPlane, chart: Path, namespace: str,
              *values: str) -> dict[str, dict[str, Any]]:
    """The hook's objects as `helm template` renders them (`values`: more helm arguments)."""
    rendered = kube.helm("template", "energy", str(chart), "--namespace", namespace,
                         *values, "--show-only", HOOK).stdout
    return {d["kind"]: d for d in yaml.safe_load_all(rendered) if d}


def run_hook(kube: KubeControlPlane, docs: dict[str, dict[str, Any]], namespace: str,
             tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The Job's container command line, as its ServiceAccount."""
    token = service_account_token(Kube(kube.api_client), namespace, "energy-platform-secrets")
    kubeconfig = service_account_kubeconfig(kube.kubeconfig, token,
                                            tmp_path / f"kubeconfig-{uuid.uuid4().hex[:4]}")
    (container,) = docs["Job"]["spec"]["template"]["spec"]["containers"]
    return subprocess.run(energy_pipeline_argv(container["args"]), capture_output=True,
                          text=True, timeout=120,
                          env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"})


def secret(kube: KubeControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(kube.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)


def decoded(obj: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}


def install_hook_rbac(kube: KubeControlPlane, docs: dict[str, dict[str, Any]]) -> None:
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(docs[kind]))


def test_the_hook_makes_the_ca_and_postgres_certificate_once_with_its_own_role(
    kube: KubeControlPlane, chart: Path, namespace: str, tmp_path: Path,
) -> None:
    docs = hook_docs(kube, chart, namespace)
    install_hook_rbac(kube, docs)
    first = run_hook(kube, docs, namespace, tmp_path)
    assert first.returncode == 0, first.stderr
    ca = decoded(secret(kube, namespace, "energy-platform-ca"))
    pg = secret(kube, namespace, "energy-postgres-tls")
    assert pg["type"] == "kubernetes.io/tls"
    assert pg["metadata"]["labels"]["app.kubernetes.io/instance"] == "energy"
    files = decoded(pg)
    assert files["ca.crt"] == ca["tls.crt"]
    cert = certificates.KeyPair(files["tls.crt"], files["tls.key"]).certificate()
    cert.verify_directly_issued_by(certificates.read_ca(ca).certificate())
    assert certificates.reissue_reason(files, certificates.read_ca(ca), [
        f"energy-postgres.{namespace}.svc", f"energy-postgres.{namespace}.svc.cluster.local",
        f"energy-postgres.{namespace}", "energy-postgres"], cert.not_valid_before_utc) is None
    # The other Secrets of its command line: the role Secrets, Grafana's admin, the MQTT users.
    app = decoded(secret(kube, namespace, "energy-postgres-app"))
    assert app["DATABASE_URL"] == (f"postgresql://energy:{app['password']}@energy-postgres."
                                   f"{namespace}.svc:5432/energy")
    assert sorted(decoded(secret(kube, namespace, "energy-grafana-admin"))) == [
        "admin-password", "admin-user"]
    assert sorted(decoded(secret(kube, namespace, "energy-mqtt-users"))) == [
        "bridge-password", "bridge-username", "simulator-password", "simulator-username",
        "users"]
    made = [d["metadata"]["name"] for d in json.loads(kube.kubectl(
        "get", "secrets", "-n", namespace, "-l", "app.kubernetes.io/managed-by=energy-pipeline",
        "-o", "json").stdout)["items"]]
    assert sorted(made) == sorted(docs["Role"]["rules"][1]["resourceNames"])
    versions = {name: secret(kube, namespace, name)["metadata"]["resourceVersion"]
                for name in made}
    # The next install or upgrade runs it again: nothing is written.
    again = run_hook(kube, docs, namespace, tmp_path)
    assert again.returncode == 0, again.stderr
    assert {name: secret(kube, namespace, name)["metadata"]["resourceVersion"]
            for name in versions} == versions
    assert "left as it is: valid" in again.stdout
    # The Role lets it read and replace its own Secrets only.
    account = f"system:serviceaccount:{namespace}:energy-platform-secrets"
    for verb, target, allowed in [("get", "secrets/energy-postgres-tls", "yes"),
                                  ("update", "secrets/energy-platform-ca", "yes"),
                                  ("get", "secrets/demo-api-tokens", "no"),
                                  ("list", "secrets", "no"),
                                  ("delete", "secrets/energy-postgres-tls", "no")]:
        done = kube.kubectl("auth", "can-i", verb, target, "-n", namespace, f"--as={account}",
                            check=False)
        assert done.stdout.strip() == allowed, (verb, target)
    done = kube.kubectl("auth", "can-i", "get", "secrets/energy-postgres-tls", "-n", "default",
                        f"--as={account}", check=False)
    assert done.stdout.strip() == "no"


def test_a_certificate_of_someone_else_is_left_alone_and_a_missing_role_named(
    kube: KubeControlPlane, chart: Path, namespace: str, tmp_path: Path,
) -> None:
    docs = hook_docs(kube, chart, namespace)
    # cert-manager's (or a hand-made) Secret under the name the hook would use.
    kube.kubectl("create", "secret", "generic", "energy-postgres-tls", "-n", namespace,
                 "--from-literal=tls.crt=theirs")
    theirs = secret(kube, namespace, "energy-postgres-tls")
    # Without its Role the hook fails in one line naming what it needs.
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(docs["ServiceAccount"]))
    refused = run_hook(kube, docs, namespace, tmp_path)
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("energy-pipeline platform-secrets: error: Kubernetes API: 403 ")
    assert line.endswith(f"the ServiceAccount needs get, create and update on Secrets in "
                         f"namespace {namespace}")
    install_hook_rbac(kube, docs)
    done = run_hook(kube, docs, namespace, tmp_path)
    assert done.returncode == 0, done.stderr
    assert secret(kube, namespace, "energy-postgres-tls")["metadata"]["resourceVersion"] == (
        theirs["metadata"]["resourceVersion"])
    assert ("energy-postgres-tls left as it is: not made by energy-pipeline (no managed-by "
            "label): left to its owner") in done.stdout
