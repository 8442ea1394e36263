"""`energy-pipeline platform-secrets`, the chart hook's planner: pure functions, no cluster.

The certificate is checked with Python's ssl module (OpenSSL) in a TLS handshake in memory,
with the host name the workers' DATABASE_URL uses, as libpq's verify-full does.
"""

from __future__ import annotations

import base64
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from energy_operator import certificates, platform_secrets
from energy_operator.platform_secrets import WantedCertificate, Write

pytestmark = pytest.mark.unit

# Whole seconds (X.509 times have no fractions) and in the past: OpenSSL checks validity.
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
LIFETIME = timedelta(days=825)
NAMES = ("energy-postgres.db.svc", "energy-postgres.db.svc.cluster.local",
         "energy-postgres.db", "energy-postgres")
WANTED = WantedCertificate("energy-postgres-tls", NAMES)


def stored(write: Write, resource_version: str = "7") -> dict[str, Any]:
    """The Secret as the API server would return it after the write."""
    manifest = write.manifest
    return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": resource_version}}


def data(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def new_ca(now: datetime = NOW) -> tuple[certificates.KeyPair, dict[str, Any]]:
    ca, write = platform_secrets.plan_ca(None, "energy-platform-ca", "db", "energy", now)
    assert write is not None
    return ca, stored(write)


def handshake(tmp_path: Path, server: dict[str, str], host: str) -> None:
    """A TLS handshake in memory; raises ssl.SSLError when the client refuses the server."""
    for key, value in server.items():
        (tmp_path / key).write_text(value)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(tmp_path / "ca.crt")
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(pipes[0], pipes[1], server_hostname=host)
    srv = server_ctx.wrap_bio(pipes[1], pipes[0], server_side=True)
    for _ in range(10):
        done = 0
        for side in (client, srv):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        if done == 2:
            return
    raise AssertionError("handshake did not finish")


def test_first_run_makes_a_ca_and_a_certificate_the_workers_host_name_verifies(
    tmp_path: Path,
) -> None:
    ca, ca_secret = new_ca()
    assert ca_secret["type"] == "kubernetes.io/tls" and set(data(ca_secret)) == {
        "tls.crt", "tls.key"}
    assert ca_secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "energy-pipeline"
    write = platform_secrets.plan_certificate(None, WANTED, ca, "db", "energy", LIFETIME, NOW)
    assert isinstance(write, Write) and not write.replace and write.why == "missing"
    secret = write.manifest
    assert secret["metadata"]["name"] == "energy-postgres-tls"
    assert "resourceVersion" not in secret["metadata"]
    files = data(secret)
    assert set(files) == {"tls.crt", "tls.key", "ca.crt"} and files["ca.crt"] == ca.cert
    for host in NAMES:
        handshake(tmp_path, files, host)
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        handshake(tmp_path, files, "energy-kafka.db.svc")
    cert = certificates.KeyPair(files["tls.crt"], files["tls.key"]).certificate()
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == LIFETIME + certificates.BACKDATE


def test_a_second_run_writes_nothing() -> None:
    ca, ca_secret = new_ca()
    again, write = platform_secrets.plan_ca(ca_secret, "energy-platform-ca", "db", "energy",
                                            NOW + timedelta(days=30))
    assert write is None and again == ca
    first = platform_secrets.plan_certificate(None, WANTED, ca, "db", "energy", LIFETIME, NOW)
    assert isinstance(first, Write)
    later = NOW + timedelta(days=500)  # before two thirds of 825 days
    assert platform_secrets.plan_certificate(stored(first), WANTED, ca, "db", "energy",
                                             LIFETIME, later) == "valid"


@pytest.mark.parametrize(("change", "why"), [
    ("renewal", "renewal due since"),
    ("names", "its names changed"),
    ("ca", "the CA changed"),
])
def test_a_certificate_is_issued_again_when_due_renamed_or_signed_by_another_ca(
    change: str, why: str, tmp_path: Path,
) -> None:
    ca, _ = new_ca()
    first = platform_secrets.plan_certificate(None, WANTED, ca, "db", "energy", LIFETIME, NOW)
    assert isinstance(first, Write)
    when, wanted, signer = NOW + timedelta(days=1), WANTED, ca
    if change == "renewal":
        when = NOW + timedelta(days=551)
    elif change == "names":
        wanted = WantedCertificate(WANTED.secret, (*NAMES, "pg.example"))
    else:
        signer, _ = new_ca(NOW + timedelta(seconds=1))
    write = platform_secrets.plan_certificate(stored(first), wanted, signer, "db", "energy",
                                              LIFETIME, when)
    assert isinstance(write, Write) and write.replace and write.why.startswith(why)
    # Replaced with the version read: a concurrent writer makes the PUT fail, not vanish.
    assert write.manifest["metadata"]["resourceVersion"] == "7"
    files = data(write.manifest)
    cert = certificates.KeyPair(files["tls.crt"], files["tls.key"]).certificate()
    assert cert.not_valid_before_utc == when - certificates.BACKDATE
    if change != "renewal":  # a certificate made 551 days from now is not valid yet today
        handshake(tmp_path, files, wanted.names[-1])


def test_a_secret_it_did_not_make_is_never_touched() -> None:
    ca, _ = new_ca()
    theirs = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": "energy-postgres-tls", "resourceVersion": "3",
                           "labels": {"controller.cert-manager.io/fao": "true"}},
              "data": {"tls.crt": base64.b64encode(b"not even PEM").decode()}}
    decision = platform_secrets.plan_certificate(theirs, WANTED, ca, "db", "energy", LIFETIME,
                                                 NOW)
    assert decision == "not made by energy-pipeline (no managed-by label): left to its owner"


def test_a_ca_of_the_users_own_is_used_and_a_broken_one_is_refused() -> None:
    users = certificates.new_ca("campus CA", NOW)
    secret = {"metadata": {"name": "campus-ca", "resourceVersion": "1"},
              "data": {"tls.crt": base64.b64encode(users.cert.encode()).decode(),
                       "tls.key": base64.b64encode(users.key.encode()).decode()}}
    ca, write = platform_secrets.plan_ca(secret, "campus-ca", "db", "energy", NOW)
    assert write is None and ca == users
    leaf = certificates.issue(users, "x", ["x"], "server", LIFETIME, NOW)
    broken = {"metadata": {"name": "campus-ca"},
              "data": {"tls.crt": base64.b64encode(leaf.cert.encode()).decode(),
                       "tls.key": base64.b64encode(leaf.key.encode()).decode()}}
    with pytest.raises(ValueError, match=r"Secret db/campus-ca holds no usable CA: tls.crt is "
                       r"not a CA certificate"):
        platform_secrets.plan_ca(broken, "campus-ca", "db", "energy", NOW)


@pytest.mark.parametrize(("text", "message"), [
    ("energy-postgres-tls", "expected SECRET=NAME"),
    ("energy-postgres-tls=", "expected SECRET=NAME"),
    ("Energy_TLS=pg", "is not a Secret name"),
    ("pg-tls=pg.db.svc,bad name", "not DNS names: bad name"),
])
def test_certificate_arguments_are_checked(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        platform_secrets.parse_certificate(text)
    assert platform_secrets.parse_certificate("pg-tls=a.b, c ") == WantedCertificate(
        "pg-tls", ("a.b", "c"))
