"""The operator's gRPC certificates and what the pods mount: pure functions, no cluster.

The certificates are checked with Python's ssl module (OpenSSL), not with the library that
made them: a mutual TLS handshake in memory, with the names ingest uses.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from energy_operator import certificates, crd, render
from energy_operator.certificates import KeyPair

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "mqtt": {"host": "m"},
    "kafka": {"bootstrapServers": "k:9092"},
    "database": {"urlSecret": {"name": "pg"}},
}


def tls_spec(**tls: Any) -> dict[str, Any]:
    return crd.with_defaults({**SPEC, "inference": {"tls": {"enabled": True, **tls}}})


def pods(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for child in render.render_children("demo", "energy", spec):
        if child["kind"] == "Deployment":
            out[child["metadata"]["labels"]["app.kubernetes.io/component"]] = (
                child["spec"]["template"]["spec"])
    return out


def test_mutual_tls_is_the_default_and_plaintext_a_knowing_choice() -> None:
    default = crd.with_defaults(SPEC)
    assert render.config_data("demo", "energy", default)["GRPC_TLS"] == "true"
    for worker, pod in pods(default).items():
        mounted = "grpc-tls" in [v["name"] for v in pod["volumes"]]
        assert mounted == (worker in ("ingest", "inference")), worker
    plaintext = crd.with_defaults({**SPEC, "inference": {"tls": {"enabled": False}}})
    data = render.config_data("demo", "energy", plaintext)
    assert data["GRPC_TLS"] == "false"
    assert "GRPC_TLS_CERT_FILE" not in data
    assert render.config_keys("ingest", data).count("GRPC_TLS") == 1
    assert "GRPC_TLS" in render.config_keys("inference", data)
    assert "GRPC_TLS" not in render.config_keys("bridge", data)
    for pod in pods(plaintext).values():
        assert "grpc-tls" not in [v["name"] for v in pod["volumes"]]


def test_with_tls_ingest_and_inference_mount_their_own_secret_at_the_same_path() -> None:
    spec = tls_spec()
    data = render.config_data("demo", "energy", spec)
    assert {k: v for k, v in data.items() if k.startswith("GRPC_TLS")} == {
        "GRPC_TLS": "true",
        "GRPC_TLS_CERT_FILE": "/etc/energy-pipeline/grpc-tls/tls.crt",
        "GRPC_TLS_KEY_FILE": "/etc/energy-pipeline/grpc-tls/tls.key",
        "GRPC_TLS_CA_FILE": "/etc/energy-pipeline/grpc-tls/ca.crt",
    }
    assert set(render.config_keys("ingest", data)) >= {
        "GRPC_TLS", "GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CA_FILE"}
    found = pods(spec)
    for worker, secret in (("inference", "demo-inference-tls"), ("ingest", "demo-ingest-tls")):
        volume = next(v for v in found[worker]["volumes"] if v["name"] == "grpc-tls")
        assert volume["secret"] == {"secretName": secret, "defaultMode": 0o440}
        assert {"name": "grpc-tls", "mountPath": "/etc/energy-pipeline/grpc-tls",
                "readOnly": True} in found[worker]["containers"][0]["volumeMounts"]
    assert [v["name"] for v in found["bridge"]["volumes"]] == ["tmp"]
    # cert-manager: the user's Secrets are mounted, and the operator issues nothing.
    managed = tls_spec(serverSecret={"name": "cm-inference"}, clientSecret={"name": "cm-ingest"})
    assert certificates.managed_sides(managed) == ()
    found = pods(managed)
    assert {v["secret"]["secretName"] for w in ("inference", "ingest")
            for v in found[w]["volumes"] if "secret" in v} == {"cm-inference", "cm-ingest"}


def test_the_crd_documents_tls_and_lets_a_user_name_a_ca() -> None:
    tls = crd.with_defaults(SPEC)["inference"]["tls"]
    assert tls == {"enabled": True, "certificateLifetimeHours": 2160}
    assert certificates.ca_secret_name("demo", tls_spec()) == "demo-grpc-ca"
    assert certificates.operator_owns_ca(tls_spec())
    own = tls_spec(caSecret={"name": "corp-ca"})
    assert certificates.ca_secret_name("demo", own) == "corp-ca"
    assert not certificates.operator_owns_ca(own)
    setting = next(s for s in crd.settings() if s.env == "GRPC_TLS")
    assert setting.workers == ("ingest", "inference")


def handshake(server: KeyPair, client: KeyPair | None, ca: KeyPair, host: str,
              tmp_path: Path) -> str:
    """A TLS 1.3 handshake in memory, the server requiring a client certificate; the
    client's view: "ok" or the error either side raised."""
    def files(name: str, pair: KeyPair) -> tuple[str, str]:
        (tmp_path / f"{name}.crt").write_text(pair.cert)
        (tmp_path / f"{name}.key").write_text(pair.key)
        return str(tmp_path / f"{name}.crt"), str(tmp_path / f"{name}.key")

    (tmp_path / "ca.crt").write_text(ca.cert)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*files("server", server))
    server_ctx.load_verify_locations(str(tmp_path / "ca.crt"))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    if client is not None:
        client_ctx.load_cert_chain(*files("client", client))
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    s = server_ctx.wrap_bio(pipes[0], pipes[1], server_side=True)
    c = client_ctx.wrap_bio(pipes[2], pipes[3], server_hostname=host)
    done = {"server": False, "client": False}
    for _ in range(10):
        for side, conn, out, into in (("client", c, pipes[3], pipes[0]),
                                      ("server", s, pipes[1], pipes[2])):
            try:
                if not done[side]:
                    conn.do_handshake()
                    done[side] = True
                if side == "client":
                    conn.write(b"x")
                else:
                    conn.read(1)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                return f"{side}: {exc.reason}"
            into.write(out.read())
        if all(done.values()):
            pass
    return "ok" if all(done.values()) else "incomplete"


def test_issued_certificates_pass_a_mutual_tls_handshake_under_the_service_name(
    tmp_path: Path,
) -> None:
    spec = tls_spec()
    ca = certificates.new_ca("energy/demo gRPC CA", NOW)
    other = certificates.new_ca("another CA", NOW)
    now = datetime.now(UTC)  # the ssl module checks validity against the real clock
    server = certificates.secret_data(
        certificates.issue_for("demo", "energy", spec, "server", ca, now))
    client = certificates.secret_data(
        certificates.issue_for("demo", "energy", spec, "client", ca, now))
    assert server["ca.crt"] == client["ca.crt"] == ca.cert
    server_pair = KeyPair(server["tls.crt"], server["tls.key"])
    client_pair = KeyPair(client["tls.crt"], client["tls.key"])
    stranger = certificates.issue(other, "stranger", [], "client", timedelta(hours=1), now)
    for host in certificates.server_names("demo", "energy"):
        assert handshake(server_pair, client_pair, ca, host, tmp_path) == "ok", host
    assert render.inference_target("demo", "energy") == (
        f"dns:///{certificates.server_names('demo', 'energy')[-1]}:50051")
    assert handshake(server_pair, client_pair, ca, "elsewhere", tmp_path) == (
        "client: CERTIFICATE_VERIFY_FAILED")
    assert handshake(server_pair, None, ca, "demo-inference", tmp_path) == (
        "server: PEER_DID_NOT_RETURN_A_CERTIFICATE")
    assert handshake(server_pair, stranger, ca, "demo-inference", tmp_path) == (
        "server: CERTIFICATE_VERIFY_FAILED")
    # A client certificate cannot serve, nor a server certificate be a client.
    assert handshake(client_pair, client_pair, ca, "demo-inference", tmp_path) == (
        "client: CERTIFICATE_VERIFY_FAILED")


def test_certificates_are_issued_again_when_due_or_when_the_ca_or_names_change() -> None:
    spec = tls_spec(certificateLifetimeHours=3)
    ca = certificates.new_ca("ca", NOW)
    names = certificates.server_names("demo", "energy")
    secret = certificates.issue_for("demo", "energy", spec, "server", ca, NOW)
    data = certificates.secret_data(secret)
    assert secret["type"] == "kubernetes.io/tls"
    # Valid from 5 minutes before (node clocks), 3 hours; renewed after 2/3 of that.
    cert = KeyPair(data["tls.crt"], data["tls.key"]).certificate()
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(hours=3)
    due = NOW - timedelta(minutes=5) + (timedelta(hours=3, minutes=5)) * 2 / 3
    assert secret["metadata"]["annotations"][certificates.RENEW_ANNOTATION] == (
        f"{due:%Y-%m-%dT%H:%M:%SZ}")
    assert certificates.reissue_reason(data, ca, names, NOW) is None
    assert certificates.reissue_reason(data, ca, names, due - timedelta(seconds=1)) is None
    assert certificates.reissue_reason(data, ca, names, due) == (
        f"renewal due since {due:%Y-%m-%dT%H:%M:%SZ}")
    assert certificates.reissue_reason({}, ca, names, NOW) == "missing"
    assert certificates.reissue_reason(data, certificates.new_ca("ca", NOW), names, NOW) == (
        "the CA changed")
    assert certificates.reissue_reason(data, ca, names[:2], NOW) == "its names changed"
    assert certificates.reissue_reason({**data, "tls.crt": "junk"}, ca, names, NOW) == (
        "unreadable")


def test_a_users_ca_secret_is_checked_before_use() -> None:
    ca = certificates.new_ca("ca", NOW)
    assert certificates.read_ca({"tls.crt": ca.cert, "tls.key": ca.key}) == ca
    leaf = certificates.issue(ca, "leaf", [], "client", timedelta(hours=1), NOW)
    other = certificates.new_ca("other", NOW)
    for data, reason in (
        ({"tls.crt": ca.cert}, "needs keys tls.crt and tls.key"),
        ({"tls.crt": leaf.cert, "tls.key": leaf.key}, "tls.crt is not a CA certificate"),
        ({"tls.crt": ca.cert, "tls.key": other.key}, "tls.key is not the key of tls.crt"),
        ({"tls.crt": "x", "tls.key": ca.key}, "unreadable"),
    ):
        with pytest.raises(ValueError, match=reason):
            certificates.read_ca(data)
