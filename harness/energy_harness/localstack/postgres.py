"""A real PostgreSQL server from the Debian install, in its own data directory."""

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


def dsn(port: int, password: str, database: str, user: str = SUPERUSER) -> str:
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
        f"@127.0.0.1:{port}/{quote(database, safe='')}"
    )


@dataclass
class PostgresServer:
    """initdb once, then `postgres` in the foreground so its lifetime is ours.

    Runs as the `postgres` system user when we are root: the server refuses root.
    """

    base_dir: Path
    database: str = "energy"
    fast: bool = False
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

    def start(self) -> None:
        postgres = require("postgres")
        run_as = user_for_service("postgres")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        grant_traverse(self.base_dir, run_as)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(run_as)
        socket_dir = self.base_dir / "socket"
        socket_dir.mkdir(exist_ok=True)
        chown_tree(self.base_dir, run_as)
        settings = {**(FAST_SETTINGS if self.fast else {}), **self.settings}
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
