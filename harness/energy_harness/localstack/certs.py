"""A throw-away certificate authority for tests, made with the `openssl` CLI.

Keys are EC P-256 (fast to make), unencrypted PKCS#8 PEM: what Kafka's PEM key store,
librdkafka, libpq and OpenSSL-based clients all read. Files live in a test's directory and
are never committed.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from energy_harness.localstack.install import require
from energy_harness.localstack.process import ServiceError

DAYS = 7


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as files."""

    cert: Path
    key: Path

    def key_and_chain(self, ca: Path, out: Path) -> Path:
        """Key, certificate and CA in one file: Kafka's `ssl.keystore.type=PEM` layout."""
        out.write_text(self.key.read_text() + self.cert.read_text() + ca.read_text())
        out.chmod(0o600)
        return out


def _openssl(*args: str) -> None:
    result = subprocess.run([require("openssl"), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


@dataclass(frozen=True)
class LocalCA:
    """A CA in `directory` (ca.crt, ca.key), made on first use and then reused."""

    directory: Path
    name: str = "energy-pipeline test CA"

    @property
    def cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def key(self) -> Path:
        return self.directory / "ca.key"

    def create(self) -> LocalCA:
        if self.cert.exists():
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(self.key), "-out", str(self.cert), "-days", str(DAYS),
            "-subj", f"/CN={self.name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )
        self.key.chmod(0o600)
        return self

    def issue(self, name: str, common_name: str, sans: tuple[str, ...] = ("IP:127.0.0.1",
              "DNS:localhost")) -> Issued:
        """A certificate for `common_name`, good for TLS servers and clients alike (a Kafka
        node is both: it serves and it connects to the other nodes)."""
        self.create()
        cert, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        csr, ext = self.directory / f"{name}.csr", self.directory / f"{name}.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            + (f"subjectAltName={','.join(sans)}\n" if sans else "")
        )
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={common_name}",
        )
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-out", str(cert), "-days", str(DAYS), "-extfile", str(ext),
        )
        key.chmod(0o600)
        csr.unlink()
        ext.unlink()
        return Issued(cert, key)
