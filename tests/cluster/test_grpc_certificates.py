"""The operator's gRPC certificate Secrets against the real API server, under the operator's
own RBAC (manifests/rbac.yaml): the CA created once and never regenerated, the server and
client certificates issued, reused while valid and renewed when due (a clock is injected).
`reconcile_certificates` is called directly, with a ConfigMap standing in as the owner.
The certificates are checked with `openssl verify`, not with the library that made them.
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.pki import TestPki
from energy_operator import crd
from energy_operator.kube import Kube, new_api_client
from energy_operator.reconcile import Outcome, reconcile_certificates

pytestmark = pytest.mark.cluster

SPEC: dict[str, Any] = {
    "mqtt": {"host": "m"},
    "kafka": {"bootstrapServers": "k:9092"},
    "database": {"urlSecret": {"name": "pg"}},
}
SECRETS = ("demo-grpc-ca", "demo-inference-tls", "demo-ingest-tls")
SERVICE_NAME = "demo-inference.{namespace}.svc.cluster.local"


def tls_spec(**tls: Any) -> dict[str, Any]:
    return crd.with_defaults({**SPEC, "inference": {"tls": {"enabled": True, **tls}}})


def adopt(children: list[dict[str, Any]], owner: Mapping[str, Any]) -> None:
    for child in children:
        child["metadata"]["ownerReferences"] = [{
            "apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": False,
        }]


@pytest.fixture
def namespace(kube: KubeControlPlane) -> Iterator[str]:
    name = f"grpc-tls-{uuid.uuid4().hex[:8]}"
    admin = Kube(kube.api_client)
    admin.request("POST", "/api/v1/namespaces",
                  body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    admin.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture
def operator(operator_kubeconfig: Any) -> Kube:
    """The API as the operator's ServiceAccount sees it."""
    return Kube(new_api_client(str(operator_kubeconfig)))


def owner(kube: KubeControlPlane, namespace: str) -> dict[str, Any]:
    return Kube(kube.api_client).create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "demo",
                                                               "namespace": namespace}})


def run(client: Kube, body: dict[str, Any], spec: dict[str, Any], at: datetime) -> Outcome:
    outcome = Outcome()
    reconcile_certificates(client, body, spec, adopt, outcome, at)
    return outcome


def data(client: Kube, namespace: str, name: str) -> dict[str, str]:
    secret = client.get("v1", "Secret", namespace, name)
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def versions(client: Kube, namespace: str) -> dict[str, str]:
    return {name: client.get("v1", "Secret", namespace, name)["metadata"]["resourceVersion"]
            for name in SECRETS}


def openssl(*args: str, stdin: str = "") -> str:
    result = subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def verify(tmp_path: Path, ca_pem: str, leaf: Mapping[str, str], purpose: str,
           at: datetime | None = None) -> str:
    """`openssl verify` of a leaf against a CA, for a purpose (sslserver, sslclient), at a
    time (the injected clock's: a certificate issued "two hours from now" is valid then)."""
    (tmp_path / "ca.pem").write_text(ca_pem)
    (tmp_path / "leaf.pem").write_text(leaf["tls.crt"])
    when = ["-attime", str(int(at.timestamp()))] if at is not None else []
    return openssl("verify", *when, "-CAfile", str(tmp_path / "ca.pem"), "-purpose", purpose,
                   str(tmp_path / "leaf.pem")).strip()


def serial(pem: str) -> str:
    return openssl("x509", "-noout", "-serial", stdin=pem).strip()


def test_secrets_are_created_once_reused_and_renewed_when_due(
    kube: KubeControlPlane, operator: Kube, namespace: str, tmp_path: Path
) -> None:
    body = owner(kube, namespace)
    spec = tls_spec(certificateLifetimeHours=3)  # renewal due 2 h after issue
    t0 = datetime.now(UTC)

    first = run(operator, body, spec, t0)
    assert first.problems == []
    assert [e.reason for e in first.events] == [
        "CertificateAuthorityCreated", "CertificateIssued", "CertificateIssued"]
    assert first.changes == [f"created Secret {s}" if s.endswith("-ca") else f"issued Secret {s}"
                             for s in SECRETS]
    ca, server, client = (data(operator, namespace, s) for s in SECRETS)
    for name in SECRETS:
        secret = operator.get("v1", "Secret", namespace, name)
        assert secret["type"] == "kubernetes.io/tls"
        assert secret["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    assert set(ca) == {"tls.crt", "tls.key"}
    assert set(server) == set(client) == {"tls.crt", "tls.key", "ca.crt"}
    assert server["ca.crt"] == client["ca.crt"] == ca["tls.crt"]
    assert verify(tmp_path, ca["tls.crt"], server, "sslserver") == f"{tmp_path}/leaf.pem: OK"
    assert verify(tmp_path, ca["tls.crt"], client, "sslclient") == f"{tmp_path}/leaf.pem: OK"
    names = openssl("x509", "-noout", "-ext", "subjectAltName", stdin=server["tls.crt"])
    assert f"DNS:{SERVICE_NAME.format(namespace=namespace)}" in names
    before = versions(operator, namespace)

    # An hour later: nothing is due, nothing is written.
    again = run(operator, body, spec, t0 + timedelta(hours=1))
    assert (again.events, again.problems, again.changes) == ([], [], [])
    assert versions(operator, namespace) == before

    # Two thirds of the lifetime passed: both certificates renewed in place, the CA kept.
    later = t0 + timedelta(hours=2, minutes=1)
    renewed = run(operator, body, spec, later)
    assert renewed.problems == []
    assert [e.reason for e in renewed.events] == ["CertificateRenewed", "CertificateRenewed"]
    assert all("renewal due since" in e.message for e in renewed.events)
    after = versions(operator, namespace)
    assert after["demo-grpc-ca"] == before["demo-grpc-ca"]
    assert data(operator, namespace, "demo-grpc-ca") == ca
    new_server, new_client = (data(operator, namespace, s) for s in SECRETS[1:])
    assert serial(new_server["tls.crt"]) != serial(server["tls.crt"])
    assert serial(new_client["tls.crt"]) != serial(client["tls.crt"])
    assert new_server["tls.key"] != server["tls.key"]
    ok = f"{tmp_path}/leaf.pem: OK"
    assert verify(tmp_path, ca["tls.crt"], new_server, "sslserver", later) == ok
    assert verify(tmp_path, ca["tls.crt"], new_client, "sslclient", later) == ok

    # And the renewed ones are fresh again.
    settled = run(operator, body, spec, t0 + timedelta(hours=2, minutes=2))
    assert (settled.events, settled.problems) == ([], [])
    assert versions(operator, namespace) == after


def test_the_ca_is_never_regenerated_and_a_users_ca_is_used_once_it_exists(
    kube: KubeControlPlane, operator: Kube, namespace: str, tmp_path: Path
) -> None:
    admin = Kube(kube.api_client)
    body = owner(kube, namespace)
    now = datetime.now(UTC)
    run(operator, body, tls_spec(), now)
    # Someone breaks the operator's CA Secret: reported, not replaced by a new CA (that
    # would lock every pod out until all certificates were re-issued).
    broken = admin.get("v1", "Secret", namespace, "demo-grpc-ca")
    broken["data"]["tls.key"] = base64.b64encode(b"not a key").decode()
    version = admin.replace(broken)["metadata"]["resourceVersion"]
    out = run(operator, body, tls_spec(), now)
    [problem] = out.problems
    assert problem.reason == "CertificateAuthorityInvalid"
    assert problem.message == (
        f"Secret {namespace}/demo-grpc-ca: unreadable: Unable to load PEM file. See "
        "https://cryptography.io/en/latest/faq/#why-can-t-i-import-my-pem-file for more "
        "details. MalformedFraming")
    assert out.events == []
    assert admin.get("v1", "Secret", namespace, "demo-grpc-ca")["metadata"][
        "resourceVersion"] == version

    # The user's own CA (made with openssl): missing first, which is said; then used.
    spec = tls_spec(caSecret={"name": "corp-ca"})
    out = run(operator, body, spec, now)
    assert [p.reason for p in out.problems] == ["SecretMissing"]
    assert "kubectl create secret tls corp-ca" in out.problems[0].message
    pki = TestPki(tmp_path / "pki")
    corp = pki.ca("corp")
    admin.create({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "corp-ca", "namespace": namespace},
        "data": {"tls.crt": base64.b64encode(corp.read_bytes()).decode(),
                 "tls.key": base64.b64encode((pki.dir / "corp.key").read_bytes()).decode()},
    })
    out = run(operator, body, spec, now)
    assert out.problems == []
    # Signed by another CA than before: both issued again, from the user's.
    assert [e.reason for e in out.events] == ["CertificateRenewed", "CertificateRenewed"]
    assert all("the CA changed" in e.message for e in out.events)
    server = data(operator, namespace, "demo-inference-tls")
    assert server["ca.crt"].strip() == corp.read_text().strip()
    assert verify(tmp_path, corp.read_text(), server, "sslserver") == f"{tmp_path}/leaf.pem: OK"
