"""A real PostgreSQL server from the Debian install, in its own data directory.

TLS by default, as the chart runs it: a test CA and a server certificate for 127.0.0.1 and
localhost (made with `openssl` in `<base_dir>/tls`, never committed), ssl=on, and a pg_hba.conf
of our own that admits TCP clients through `hostssl` lines only, so an unencrypted connection
is refused ("no pg_hba.conf entry ... no encryption"); the local socket stays `peer`.
Clients that say nothing get TLS anyway (libpq's sslmode=prefer); `verify_dsn` verifies the
server against `ca_file` as the workers do with DATABASE_CA_FILE. `tls=False`: the plain
server of before, for showing what a client does against a server without TLS.
"""

from __future__ import annotations

import pwd
import secrets
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from energy_harness.localstack.install import require
from energy_harness.localstack.kube import CertSpec, issue_certificates
from energy_harness.localstack.process import (
    ManagedProcess,
    ServiceError,
    chown_tree,
    free_port,
    grant_traverse,
    user_for_service,
    wait_until,
)

SUPERUSER = "postgres"

# Durability is PostgreSQL's default; `fast=True` trades it for speed in throwaway test data.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def render_server_args(
    data_dir: Path, port: int, socket_dir: Path, settings: Mapping[str, str]
) -> list[str]:
    args = ["-D", str(data_dir), "-p", str(port), "-k", str(socket_dir)]
    merged = {"listen_addresses": "127.0.0.1", "max_connections": "200", **settings}
    for key, value in merged.items():
        args += ["-c", f"{key}={value}"]
    return args


# Every TCP connection must be encrypted; password (SCRAM) on top. No `host` lines.
HBA_TLS_ONLY = """\
# TYPE   DATABASE  USER  ADDRESS       METHOD
local    all       all                 peer
hostssl  all       all   127.0.0.1/32  scram-sha-256
hostssl  all       all   ::1/128       scram-sha-256
"""
# The server certificate: the names clients connect by (verify-full checks them).
SERVER_CERT = CertSpec(
    name="server", common_name="127.0.0.1", dns_names=("localhost",), ips=("127.0.0.1",),
    server=True,
)


def dsn(port: int, password: str, database: str, user: str = SUPERUSER) -> str:
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
        f"@127.0.0.1:{port}/{quote(database, safe='')}"
    )


def other_ca(directory: Path) -> Path:
    """A CA of its own in `directory` (a stranger to the server's: for wrong-CA tests)."""
    issue_certificates(directory, ("ca",), ())
    return directory / "ca.crt"


def render_tls_settings(tls_dir: Path, hba_file: Path) -> dict[str, str]:
    return {
        "ssl": "on",
        "ssl_cert_file": str(tls_dir / "server.crt"),
        "ssl_key_file": str(tls_dir / "server.key"),
        "ssl_min_protocol_version": "TLSv1.2",
        "hba_file": str(hba_file),
    }


@dataclass
class PostgresServer:
    """initdb once, then `postgres` in the foreground so its lifetime is ours.

    Runs as the `postgres` system user when we are root: the server refuses root.
    """

    base_dir: Path
    database: str = "energy"
    fast: bool = False
    tls: bool = True
    settings: Mapping[str, str] = field(default_factory=dict)
    start_timeout: float = 60.0
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def dsn(self) -> str:
        return dsn(self.port, self.password, self.database)

    @property
    def admin_dsn(self) -> str:
        return dsn(self.port, self.password, "postgres")

    @property
    def tls_dir(self) -> Path:
        return self.base_dir / "tls"

    @property
    def ca_file(self) -> Path:
        """The test CA that signed the server's certificate (DATABASE_CA_FILE of the workers)."""
        return self.tls_dir / "ca.crt"

    def verify_dsn(self, database: str | None = None) -> str:
        """A URL that verifies the server as the workers do (sslmode=verify-full)."""
        url = dsn(self.port, self.password, database or self.database)
        return f"{url}?sslmode=verify-full&sslrootcert={quote(str(self.ca_file), safe='/')}"

    def start(self) -> None:
        postgres = require("postgres")
        run_as = user_for_service("postgres")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        grant_traverse(self.base_dir, run_as)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(run_as)
        socket_dir = self.base_dir / "socket"
        socket_dir.mkdir(exist_ok=True)
        tls: dict[str, str] = {}
        if self.tls:
            issue_certificates(self.tls_dir, ("ca",), (SERVER_CERT,))
            hba = self.base_dir / "pg_hba.conf"
            hba.write_text(HBA_TLS_ONLY)
            tls = render_tls_settings(self.tls_dir, hba)
        chown_tree(self.base_dir, run_as)
        if self.tls:
            # The server refuses a key file others may read; clients need the CA (and the
            # directory) readable, also when the server runs as another user.
            (self.tls_dir / "server.key").chmod(0o600)
            (self.tls_dir / "ca.key").chmod(0o600)
            self.tls_dir.chmod(0o755)
            self.ca_file.chmod(0o644)
        settings = {**(FAST_SETTINGS if self.fast else {}), **tls, **self.settings}
        self.process = ManagedProcess(
            name="postgres",
            argv=[postgres, *render_server_args(self.data_dir, self.port, socket_dir, settings)],
            log_path=self.base_dir / "postgres.log",
            run_as=run_as,
            # SIGINT is PostgreSQL's "fast" shutdown; SIGQUIT on our death is "immediate".
            stop_signal=signal.SIGINT,
            death_signal=signal.SIGQUIT,
        )
        if self.process.log_path.exists():
            self.process.log_path.unlink()
        self.process.start()
        wait_until(
            self._accepts_queries,
            timeout=self.start_timeout,
            what="waiting for SELECT 1",
            process=self.process,
        )
        self._create_database()

    def _initdb(self, run_as: pwd.struct_passwd | None) -> None:
        initdb = require("initdb")
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        chown_tree(self.base_dir, run_as)
        result = subprocess.run(
            [
                initdb, "-D", str(self.data_dir), "-U", SUPERUSER, "--pwfile", str(pwfile),
                "--auth-host=scram-sha-256", "--auth-local=peer",
                "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
            ],
            capture_output=True,
            text=True,
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,
            timeout=120,
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise ServiceError(f"initdb failed in {self.data_dir}:\n{result.stderr[-2000:]}")

    def _connect(self, database: str):  # noqa: ANN202 - psycopg2 has no public types
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, password=self.password,
            dbname=database, connect_timeout=3,
            # The harness checks its own server as strictly as the workers would.
            **({"sslmode": "verify-full", "sslrootcert": str(self.ca_file)} if self.tls else {}),
        )

    def _accepts_queries(self) -> bool:
        with self._connect("postgres") as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)

    def _create_database(self) -> None:
        conn = self._connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            conn.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
