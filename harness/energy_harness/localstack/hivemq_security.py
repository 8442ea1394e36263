"""What a secured HiveMQ needs: the credentials file our auth extension reads
(hivemq-extension/AuthMain.java), and a throw-away CA with a server certificate in a keystore.

Credentials file: one user per line, `<user> publish|subscribe <topic filter> <hash>`, the hash
`pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>` (PBKDF2-HMAC-SHA256, 32 bytes, over the
password's UTF-8 bytes). Devices get `publish energy/<site>/#`, the bridge
`subscribe $share/<group>/energy/#`.

Certificates are made with the `openssl` CLI in a test's directory (EC P-256, fast to make)
and never committed; HiveMQ CE reads a Java keystore only, so the PEM pair becomes a PKCS#12
file (openssl) and then a JKS one (keytool), as the chart's init container does.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from energy_operator import mqtt_credentials
from energy_operator.mqtt_credentials import ITERATIONS, hash_password

from energy_harness.localstack.install import require
from energy_harness.localstack.process import ServiceError

CERT_DAYS = 7


@dataclass(frozen=True)
class MqttUser:
    name: str
    password: str
    activity: str  # "publish" (a device) or "subscribe" (the bridge)
    topic_filter: str

    def line(self, iterations: int = ITERATIONS) -> str:
        return mqtt_credentials.line(
            mqtt_credentials.Permission(self.name, self.activity, self.topic_filter),
            hash_password(self.password, iterations),
        )


def device_user(name: str, site: str, password: str | None = None) -> MqttUser:
    """A device of `site`: may publish under energy/<site>/ only."""
    return MqttUser(name, password or secrets.token_urlsafe(18), "publish", f"energy/{site}/#")


def bridge_user(
    name: str = "bridge", password: str | None = None, group: str = "bridge",
    topic_filter: str = "energy/#",
) -> MqttUser:
    """The bridge: may only hold the shared subscription `$share/<group>/<topic_filter>`."""
    return MqttUser(
        name, password or secrets.token_urlsafe(18), "subscribe", f"$share/{group}/{topic_filter}"
    )


def write_credentials(path: Path, users: list[MqttUser], iterations: int = ITERATIONS) -> Path:
    """Write the credentials file atomically (the broker may read it at any moment)."""
    text = mqtt_credentials.render_file([user.line(iterations) for user in users])
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(text)
    staging.chmod(0o600)
    staging.replace(path)
    return path


def _run(tool: str, *args: str) -> None:
    result = subprocess.run([require(tool), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"{tool} {' '.join(args[:2])} failed: {result.stderr.strip()[-1500:]}")


@dataclass(frozen=True)
class BrokerTls:
    """A test CA and the broker's certificate in `directory`; `keystore` is what HiveMQ reads."""

    directory: Path
    ca_cert: Path
    keystore: Path
    keystore_password: str


def make_broker_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                    ca_name: str = "energy-pipeline test CA") -> BrokerTls:
    """A fresh CA and a server certificate for `hosts`, signed by it, as PEM files and a JKS."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _run(
        "openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_cert),
        "-days", str(CERT_DAYS), "-subj", f"/CN={ca_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )
    key, csr, cert, ext = (directory / f"broker.{s}" for s in ("key", "csr", "crt", "ext"))
    sans = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
    ext.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n"
    )
    _run("openssl", "req", "-new", *ec, "-keyout", str(key), "-out", str(csr),
         "-subj", f"/CN={hosts[0]}")
    _run(
        "openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", str(CERT_DAYS), "-extfile", str(ext),
    )
    password = secrets.token_hex(16)
    p12, jks = directory / "broker.p12", directory / "broker.jks"
    _run(
        "openssl", "pkcs12", "-export", "-in", str(cert), "-inkey", str(key),
        "-certfile", str(ca_cert), "-name", "hivemq", "-out", str(p12),
        "-passout", f"pass:{password}",
    )
    _run(
        "keytool", "-importkeystore", "-noprompt", "-srckeystore", str(p12),
        "-srcstoretype", "PKCS12", "-srcstorepass", password, "-destkeystore", str(jks),
        "-deststoretype", "JKS", "-deststorepass", password, "-destkeypass", password,
    )
    for private in (ca_key, key, p12, jks):
        private.chmod(0o600)
    return BrokerTls(directory, ca_cert, jks, password)
