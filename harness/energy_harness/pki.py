"""Test certificates from the `openssl` CLI, and Secret volumes updated as the kubelet does.

The argv come from localstack.kube (the control plane's own PKI), so there is one way to
call openssl in the harness. Nothing here is committed: certificates live in tmp dirs.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from energy_harness.localstack.install import require
from energy_harness.localstack.kube import (
    _OPENSSL_CONFIG,
    CertSpec,
    render_openssl_ca_argv,
    render_openssl_cert_argv,
)


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl failed: {' '.join(argv)}\n{result.stderr[-2000:]}")
    return result.stdout


class TestPki:
    """CAs and leaf certificates in one directory: `<name>.crt` and `<name>.key`."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.openssl = require("openssl")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "openssl.cnf").write_text(_OPENSSL_CONFIG)

    def ca(self, name: str) -> Path:
        _run(render_openssl_ca_argv(self.openssl, self.dir, name))
        return self.dir / f"{name}.crt"

    def issue(self, name: str, *, issuer: str, dns_names: tuple[str, ...] = (),
              ips: tuple[str, ...] = (), server: bool = False, client: bool = False,
              days: int = 30) -> tuple[Path, Path]:
        """A leaf certificate signed by CA `issuer`: (certificate, key)."""
        spec = CertSpec(name=name, common_name=name, dns_names=dns_names, ips=ips,
                        server=server, client=client, issuer=issuer)
        _run(render_openssl_cert_argv(self.openssl, self.dir, spec, days=days))
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"

    def serial(self, cert: Path | bytes) -> str:
        """`openssl x509 -serial` of a PEM file, or of DER bytes (what a peer presented)."""
        if isinstance(cert, bytes):
            result = subprocess.run(
                [self.openssl, "x509", "-inform", "DER", "-noout", "-serial"],
                input=cert, capture_output=True, timeout=60, check=True,
            )
            out = result.stdout.decode()
        else:
            out = _run([self.openssl, "x509", "-noout", "-serial", "-in", str(cert)])
        return out.strip().removeprefix("serial=")


def project_secret(mount: Path, files: Mapping[str, bytes]) -> None:
    """Write `files` into `mount` the way the kubelet updates a Secret volume.

    Each key is a symlink `key -> ..data/key`; `..data` points at a timestamped directory,
    and an update swaps `..data` with one rename, so readers see all old or all new files.
    """
    mount.mkdir(parents=True, exist_ok=True)
    version = mount / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    version.mkdir()
    for key, content in files.items():
        (version / key).write_bytes(content)
    staging = mount / "..data_tmp"
    staging.unlink(missing_ok=True)
    staging.symlink_to(version.name)
    os.replace(staging, mount / "..data")
    for key in files:
        link = mount / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")


# What the operator puts in the inference server certificate (besides the Service's name,
# which depends on the pipeline), so local runs check the same kind of names.
LOCAL_SERVER_NAMES = ("localhost",)
LOCAL_SERVER_IPS = ("127.0.0.1", "::1")


def grpc_tls_env(
    directory: Path, *, server_names: tuple[str, ...] = ()
) -> dict[str, dict[str, str]]:
    """A CA, an inference server and an ingest client certificate, mounted as Secret volumes
    under `directory` (`server/`, `client/`: tls.crt, tls.key, ca.crt), and each worker's
    GRPC_TLS_* variables for them: {"inference": {...}, "ingest": {...}}."""
    pki = TestPki(directory / "pki")
    ca = pki.ca("grpc-ca").read_bytes()
    pki.issue("inference", issuer="grpc-ca", dns_names=(*LOCAL_SERVER_NAMES, *server_names),
              ips=LOCAL_SERVER_IPS, server=True)
    pki.issue("ingest", issuer="grpc-ca", client=True)
    out = {}
    for worker, mount in (("inference", directory / "server"), ("ingest", directory / "client")):
        project_secret(mount, {
            "tls.crt": (pki.dir / f"{worker}.crt").read_bytes(),
            "tls.key": (pki.dir / f"{worker}.key").read_bytes(),
            "ca.crt": ca,
        })
        out[worker] = {
            "GRPC_TLS": "true",
            "GRPC_TLS_CERT_FILE": str(mount / "tls.crt"),
            "GRPC_TLS_KEY_FILE": str(mount / "tls.key"),
            "GRPC_TLS_CA_FILE": str(mount / "ca.crt"),
        }
    return out
