"""The gRPC certificates of one EnergyPipeline: a CA, inference's server and ingest's client.

Pure functions (PEM in, PEM and manifests out, the time given): the reconciler
(`reconcile.reconcile_certificates`) reads the Secrets, asks `plan` what to write and
writes it, and `render` mounts the Secrets named here. The only module that needs the
`cryptography` package.

- CA: spec.inference.tls.caSecret (the user's: tls.crt and tls.key), or `<name>-grpc-ca`,
  which the operator creates once and never regenerates (a CA that changed would cut every
  pod off until all certificates are re-issued; deleting the Secret is how to ask for one).
- `<name>-inference-tls` (server) and `<name>-ingest-tls` (client): kubernetes.io/tls
  Secrets with tls.crt, tls.key and ca.crt, cert-manager's layout, so a cert-manager
  Certificate's Secret can be named instead (spec.inference.tls.serverSecret /
  clientSecret) and the operator then issues nothing for that side.
- A certificate is issued again when two thirds of its lifetime have passed, when the CA
  that signed it is no longer the pipeline's, or when the names it must carry changed. The
  kubelet updates the mounted files in place and the workers reload them (no restart).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from energy_operator.naming import CLUSTER_DOMAIN, ChildNames, labels

CA_LIFETIME = timedelta(days=3650)
# Renewed after this share of the lifetime, so a failing renewal has a third left to be fixed.
RENEW_AFTER = 2 / 3
# Tolerates clocks of nodes a little behind the operator's.
BACKDATE = timedelta(minutes=5)
# Where ingest and inference mount their Secret (each its own, at the same path).
MOUNT_PATH = "/etc/energy-pipeline/grpc-tls"
TLS_FILES = {"GRPC_TLS_CERT_FILE": "tls.crt", "GRPC_TLS_KEY_FILE": "tls.key",
             "GRPC_TLS_CA_FILE": "ca.crt"}
# Which side of the connection each worker is, and so which Secret it mounts.
SIDES = {"inference": "server", "ingest": "client"}
RENEW_ANNOTATION = "energy.pipeline.dev/renew-after"


@dataclass(frozen=True)
class KeyPair:
    cert: str  # PEM
    key: str  # PEM (PKCS#8, unencrypted)

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert.encode())

    def private_key(self) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.key.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError("the key must be an EC or RSA key")  # ours are EC P-256
        return key


def ca_secret_name(name: str, spec: Mapping[str, Any]) -> str:
    ref = spec["inference"]["tls"].get("caSecret")
    return ref["name"] if ref else f"{name}-grpc-ca"


def operator_owns_ca(spec: Mapping[str, Any]) -> bool:
    return not spec["inference"]["tls"].get("caSecret")


def secret_name(name: str, spec: Mapping[str, Any], side: str) -> str:
    """The Secret `side` ("server" or "client") mounts: the user's, or the operator's."""
    ref = spec["inference"]["tls"].get(f"{side}Secret")
    if ref:
        return str(ref["name"])
    return f"{name}-{'inference' if side == 'server' else 'ingest'}-tls"


def managed_sides(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The sides whose certificate the operator issues (not named by the user)."""
    return tuple(s for s in ("server", "client") if not spec["inference"]["tls"].get(f"{s}Secret"))


def server_names(name: str, namespace: str) -> list[str]:
    """Every name ingest may use for the headless inference Service (render.inference_target
    uses the last); pod addresses carry no name, so clients given those check this one too."""
    service = ChildNames(name).inference_service
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.{CLUSTER_DOMAIN}"]


def client_name(name: str, namespace: str) -> str:
    return f"{ChildNames(name).deployment('ingest')}.{namespace}"


def lifetime(spec: Mapping[str, Any]) -> timedelta:
    return timedelta(hours=int(spec["inference"]["tls"]["certificateLifetimeHours"]))


# -- issuing --------------------------------------------------------------------------------

def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    return KeyPair(
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()).decode(),
    )


def new_ca(common_name: str, now: datetime) -> KeyPair:
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem(cert, key)


def issue(ca: KeyPair, common_name: str, dns_names: list[str], side: str,
          valid_for: timedelta, now: datetime) -> KeyPair:
    """A server, client or peer (both: Kafka's brokers present theirs to each other)
    certificate signed by `ca`, valid from now for `valid_for`."""
    ca_cert, ca_key = ca.certificate(), ca.private_key()
    key = _new_key()
    usages = {"server": [ExtendedKeyUsageOID.SERVER_AUTH],
              "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
              "peer": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]}[side]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=False, key_cert_sign=False,
            crl_sign=False, content_commitment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
    )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
    return _pem(builder.sign(ca_key, hashes.SHA256()), key)


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def client_auth(cert: x509.Certificate) -> bool:
    """Whether the certificate may authenticate a client (extended key usage clientAuth)."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in usages


def renew_after(cert: x509.Certificate) -> datetime:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * RENEW_AFTER


# -- checking what exists -------------------------------------------------------------------

def secret_data(secret: Mapping[str, Any] | None) -> dict[str, str]:
    """A Secret's values, decoded (empty for a missing Secret)."""
    if secret is None:
        return {}
    out = {k: base64.b64decode(v).decode(errors="replace")
           for k, v in (secret.get("data") or {}).items()}
    out.update(secret.get("stringData") or {})
    return out


def read_ca(data: Mapping[str, str]) -> KeyPair:
    """The CA in a Secret (tls.crt, tls.key); ValueError with the reason if it is no CA."""
    if "tls.crt" not in data or "tls.key" not in data:
        raise ValueError("needs keys tls.crt and tls.key (the CA certificate and its key)")
    pair = KeyPair(data["tls.crt"], data["tls.key"])
    try:
        cert, key = pair.certificate(), pair.private_key()
    except ValueError as exc:
        raise ValueError(f"unreadable: {exc}") from exc
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ValueError("tls.crt is not a CA certificate (basicConstraints CA:TRUE)")
    if cert.public_key() != key.public_key():
        raise ValueError("tls.key is not the key of tls.crt")
    return pair


def reissue_reason(data: Mapping[str, str], ca: KeyPair, dns_names: list[str],
                   now: datetime) -> str | None:
    """Why the certificate in a Secret's `data` must be issued again, or None if it is fine."""
    if not data:
        return "missing"
    try:
        cert = KeyPair(data.get("tls.crt", ""), data.get("tls.key", "")).certificate()
    except ValueError:
        return "unreadable"
    if data.get("ca.crt", "").strip() != ca.cert.strip():
        return "the CA changed"
    try:
        cert.verify_directly_issued_by(ca.certificate())
    except (ValueError, TypeError, InvalidSignature):
        return "the CA changed"
    if dns_names:
        try:
            names = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        if sorted(names) != sorted(dns_names):
            return "its names changed"
    if now >= renew_after(cert):
        return f"renewal due since {renew_after(cert):%Y-%m-%dT%H:%M:%SZ}"
    return None


# -- manifests ------------------------------------------------------------------------------

def _secret(name: str, namespace: str, secret: str, component: str, data: Mapping[str, str],
            annotations: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret, "namespace": namespace,
                     "labels": labels(name, component), "annotations": dict(annotations)},
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def ca_secret(name: str, namespace: str, spec: Mapping[str, Any], ca: KeyPair) -> dict[str, Any]:
    return _secret(name, namespace, ca_secret_name(name, spec), "grpc-ca",
                   {"tls.crt": ca.cert, "tls.key": ca.key}, {})


def leaf_secret(name: str, namespace: str, spec: Mapping[str, Any], side: str,
                ca: KeyPair, pair: KeyPair) -> dict[str, Any]:
    component = "inference" if side == "server" else "ingest"
    return _secret(
        name, namespace, secret_name(name, spec, side), component,
        {"tls.crt": pair.cert, "tls.key": pair.key, "ca.crt": ca.cert},
        {RENEW_ANNOTATION: f"{renew_after(pair.certificate()):%Y-%m-%dT%H:%M:%SZ}"},
    )


def issue_for(name: str, namespace: str, spec: Mapping[str, Any], side: str, ca: KeyPair,
              now: datetime) -> dict[str, Any]:
    """The Secret of `side` with a newly issued certificate."""
    if side == "server":
        names = server_names(name, namespace)
        pair = issue(ca, names[-1], names, side, lifetime(spec), now)
    else:
        pair = issue(ca, client_name(name, namespace), [], side, lifetime(spec), now)
    return leaf_secret(name, namespace, spec, side, ca, pair)


def expected_names(name: str, namespace: str, side: str) -> list[str]:
    return server_names(name, namespace) if side == "server" else []


# -- what the pods mount (render) -----------------------------------------------------------

def volume(name: str, spec: Mapping[str, Any], worker: str) -> dict[str, Any]:
    return {"name": "grpc-tls",
            "secret": {"secretName": secret_name(name, spec, SIDES[worker]),
                       "defaultMode": 0o440}}


def volume_mount() -> dict[str, Any]:
    return {"name": "grpc-tls", "mountPath": MOUNT_PATH, "readOnly": True}


def file_settings() -> dict[str, str]:
    """GRPC_TLS_*_FILE: the same paths for both sides, each pod mounting its own Secret."""
    return {env: f"{MOUNT_PATH}/{key}" for env, key in TLS_FILES.items()}
