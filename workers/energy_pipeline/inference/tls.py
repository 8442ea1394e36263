"""Mutual TLS between ingest (Forecaster client) and inference (Forecaster server).

Both sides read three PEM files named by the same variables: GRPC_TLS_CERT_FILE and
GRPC_TLS_KEY_FILE (the certificate this side presents: inference a server certificate,
ingest a client certificate) and GRPC_TLS_CA_FILE (the CA that signs the other side's).
On Kubernetes they are a mounted Secret in cert-manager's layout (tls.crt, tls.key,
ca.crt), which the kubelet updates in place when the Secret is renewed; so neither side
reads them once: the server looks at them before every TLS handshake
(`ServerCertificates.fetch`), the client every GRPC_TLS_RELOAD_S (`ForecasterClient`), and
a renewal takes effect without a restart.

A half-written renewal (a new certificate with the old key) is never used: a set of files
is taken only when the key matches the certificate and the contents did not change while
they were checked; until then the previous set stays in use and the refusal is logged once.

Plaintext only with GRPC_TLS=false, which each side logs as a warning at start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import threading
from dataclasses import dataclass

import grpc
from prometheus_client import Counter

from energy_pipeline.core.errors import USAGE, CommandError
from energy_pipeline.core.settings import env

log = logging.getLogger("energy_pipeline.inference.tls")

RELOADS = Counter(
    "energy_grpc_tls_reloads_total",
    "Certificate files read after they changed, by side and result (ok, or refused: kept the "
    "previous ones)",
    ["side", "result"],
)


@dataclass(frozen=True, kw_only=True)
class GrpcTlsSettings:
    grpc_tls: bool = env(
        "GRPC_TLS", True,
        doc="mutual TLS between ingest and inference; false = plaintext gRPC, logged as a "
        "warning (only for a network nobody else can reach)",
    )
    grpc_tls_cert_file: str = env(
        "GRPC_TLS_CERT_FILE", "",
        doc="PEM certificate this worker presents (inference: server, ingest: client); "
        "re-read when it changes",
    )
    grpc_tls_key_file: str = env(
        "GRPC_TLS_KEY_FILE", "", doc="PEM private key of GRPC_TLS_CERT_FILE"
    )
    grpc_tls_ca_file: str = env(
        "GRPC_TLS_CA_FILE", "",
        doc="PEM CA certificate(s) the other side's certificate must be signed by",
    )

    def tls_problems(self) -> list[str]:
        """What keeps TLS from starting: every missing file setting at once."""
        if not self.grpc_tls:
            return []
        return [
            f"{name} is required while GRPC_TLS is true (GRPC_TLS=false for plaintext)"
            for name, value in (
                ("GRPC_TLS_CERT_FILE", self.grpc_tls_cert_file),
                ("GRPC_TLS_KEY_FILE", self.grpc_tls_key_file),
                ("GRPC_TLS_CA_FILE", self.grpc_tls_ca_file),
            )
            if not value
        ]

    def tls_files(self) -> CertFiles | None:
        """The files to use, or None when the settings turn TLS off."""
        if not self.grpc_tls:
            return None
        return CertFiles(self.grpc_tls_cert_file, self.grpc_tls_key_file, self.grpc_tls_ca_file)


class CertFilesError(ValueError):
    """The certificate files cannot be used (missing, unreadable, or not matching)."""


@dataclass(frozen=True)
class KeyMaterial:
    cert: bytes
    key: bytes
    ca: bytes

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the presented certificate (DER), as `openssl x509 -fingerprint` shows."""
        der = ssl.PEM_cert_to_DER_cert(self.cert.decode("ascii", "replace"))
        return hashlib.sha256(der).hexdigest()


Signature = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class CertFiles:
    cert: str
    key: str
    ca: str

    def signature(self) -> Signature | None:
        """Changes whenever a file is replaced (stat follows the kubelet's symlinks)."""
        try:
            stats = [os.stat(path) for path in (self.cert, self.key, self.ca)]
        except OSError:
            return None
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def _read(self) -> KeyMaterial:
        out = []
        for name, path in (("GRPC_TLS_CERT_FILE", self.cert), ("GRPC_TLS_KEY_FILE", self.key),
                           ("GRPC_TLS_CA_FILE", self.ca)):
            try:
                with open(path, "rb") as f:
                    out.append(f.read())
            except OSError as exc:
                raise CertFilesError(f"{name} {path}: {exc.strerror or exc}") from exc
        return KeyMaterial(*out)

    def read(self) -> KeyMaterial:
        """The three files, checked: the key belongs to the certificate, the CA parses."""
        material = self._read()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            # An encrypted key would otherwise make OpenSSL prompt on the terminal.
            context.load_cert_chain(self.cert, self.key, password=lambda: b"")
        except (ssl.SSLError, OSError) as exc:
            raise CertFilesError(
                f"GRPC_TLS_CERT_FILE {self.cert} with GRPC_TLS_KEY_FILE {self.key}: "
                f"{_reason(exc)}"
            ) from exc
        try:
            context.load_verify_locations(cafile=self.ca)
        except (ssl.SSLError, OSError) as exc:
            raise CertFilesError(f"GRPC_TLS_CA_FILE {self.ca}: {_reason(exc)}") from exc
        if self._read() != material:  # replaced while being checked: look again later
            raise CertFilesError("certificate files changed while being read")
        return material


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)  # e.g. KEY_VALUES_MISMATCH, NO_START_LINE
    return str(exc)


class Reloader:
    """Hands out the newest usable set of files; keeps the previous one when a change is bad."""

    def __init__(self, files: CertFiles, side: str) -> None:
        self.files = files
        self.side = side
        self._lock = threading.Lock()
        self._signature = files.signature()
        try:
            self.material = files.read()
        except CertFilesError as exc:  # at start a bad file is fatal, said in one line
            raise CommandError(
                str(exc), fix="point GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE and GRPC_TLS_CA_FILE "
                "at PEM files (GRPC_TLS=false for plaintext)", status=USAGE,
            ) from exc
        self._refused: Signature | None = None

    def changed(self) -> KeyMaterial | None:
        """New material when the files changed and are usable, else None (keep the old)."""
        signature = self.files.signature()
        if signature is None or signature == self._signature or signature == self._refused:
            return None
        with self._lock:
            if signature == self._signature:
                return None
            try:
                material = self.files.read()
            except CertFilesError as exc:
                RELOADS.labels(self.side, "refused").inc()
                if signature != self._refused:
                    log.warning(
                        "renewed gRPC certificate files not usable; keeping the previous ones",
                        extra={"side": self.side, "error": str(exc)},
                    )
                self._refused = signature
                return None
            self._signature = signature
            self._refused = None
            if material == self.material:
                return None  # touched, not changed
            old = self.material.fingerprint
            self.material = material
        RELOADS.labels(self.side, "ok").inc()
        log.info(
            "gRPC certificate files reloaded",
            extra={"side": self.side, "sha256": material.fingerprint, "previous": old},
        )
        return material


class ServerCertificates:
    """The inference server's certificate, looked at before each TLS handshake."""

    def __init__(self, files: CertFiles) -> None:
        self.reloader = Reloader(files, "server")

    @staticmethod
    def configuration(material: KeyMaterial) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(material.key, material.cert)], root_certificates=material.ca
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's certificate_configuration_fetcher: None keeps the current configuration."""
        try:
            material = self.reloader.changed()
        except Exception:  # called from gRPC's handshake path: never raise into it
            log.exception("looking for renewed gRPC certificate files failed")
            return None
        return None if material is None else self.configuration(material)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.configuration(self.reloader.material),
            self.fetch,
            require_client_authentication=True,
        )


def channel_credentials(material: KeyMaterial) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca, private_key=material.key, certificate_chain=material.cert
    )


def warn_plaintext(side: str) -> None:
    log.warning(
        "gRPC without TLS (GRPC_TLS=false): anyone who reaches the port can call or "
        "impersonate the Forecaster service",
        extra={"side": side},
    )
