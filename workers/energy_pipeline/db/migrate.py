"""Versioned, idempotent schema migrations.

Migrations are SQL files `NNNN_name.sql` shipped in this package. Each runs in its own
transaction under an advisory lock (so two operators or workers never apply one twice) and
is recorded with its checksum; an applied file whose text later changed is an error, not a
silent drift.

A migrator killed mid-way leaves nothing half done: its transaction rolls back and its
session-level lock goes with its connection (the server checks the client every few seconds
while a statement runs, so a backend blocked on a lock does not outlive its killed client
for long). A migrator that hangs while holding the lock makes the next one give up after
LOCK_TIMEOUT_S with the holder's pid and the statement that ends it, instead of waiting
forever.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from importlib import resources

import psycopg2

from energy_pipeline.db.connect import DEFAULT_SCHEMA, connect, schema_of, worker_name

log = logging.getLogger(__name__)
APPLICATION_NAME = worker_name("migrate")

# Any constant works; it only has to be the same for every process migrating this database.
_LOCK_ID = 0x656E6572  # "ener"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# How long a migrator waits for another one's lock (the operator's reconcile pass retries).
LOCK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    pass


def available_migrations() -> list[Migration]:
    folder = resources.files("energy_pipeline.db").joinpath("migrations")
    migrations = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            migrations.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps, got {versions}")
    return migrations


def latest_version() -> int:
    return available_migrations()[-1].version


def migrate(dsn: str, lock_timeout_s: float = LOCK_TIMEOUT_S) -> int:
    """Apply every pending migration; returns the schema version now in place.

    The tables go to the schema the DSN names (connect.with_schema), created here if missing:
    each pipeline sharing a database migrates its own schema, with its own schema_migrations.
    """
    conn = connect(dsn, application_name=APPLICATION_NAME)
    try:
        with conn, conn.cursor() as cur:
            # A backend blocked on a lock notices its client is gone only by checking.
            cur.execute("SET client_connection_check_interval = '2s'")
        _lock(conn, lock_timeout_s)
        try:
            schema = schema_of(dsn)
            if schema != DEFAULT_SCHEMA:
                with conn, conn.cursor() as cur:
                    # with_schema admits only [a-z_][a-z0-9_]*: no quoting needed.
                    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            return _apply_pending(conn)
        finally:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    finally:
        conn.close()


def _lock(conn: psycopg2.extensions.connection, timeout_s: float) -> None:
    """Take the migration lock, or raise naming who holds it after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_ID,))
            if cur.fetchone()[0]:
                return
        if time.monotonic() >= deadline:
            raise MigrationError(_held_by(conn, timeout_s))
        time.sleep(0.5)


def _held_by(conn: psycopg2.extensions.connection, waited_s: float) -> str:
    with conn, conn.cursor() as cur:
        cur.execute(
            """SELECT a.pid, a.application_name, a.state, a.xact_start
               FROM pg_locks l JOIN pg_stat_activity a USING (pid)
               WHERE l.locktype = 'advisory' AND l.granted
                 AND l.classid = %s AND l.objid = %s AND l.database = (
                     SELECT oid FROM pg_database WHERE datname = current_database())""",
            ((_LOCK_ID >> 32) & 0xFFFFFFFF, _LOCK_ID & 0xFFFFFFFF),
        )
        row = cur.fetchone()
    if row is None:
        return f"the migration lock stayed taken for {waited_s:.0f} s"
    pid, app, state, since = row
    return (
        f"another migration has held the lock for over {waited_s:.0f} s: backend pid {pid} "
        f"({app or 'no application_name'}, {state}, transaction since {since}); it is released "
        f"when that session ends; if it hangs, end it with SELECT pg_terminate_backend({pid})"
    )


def _apply_pending(conn: psycopg2.extensions.connection) -> int:
    with conn, conn.cursor() as cur:
        cur.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        cur.execute("SELECT version, checksum FROM schema_migrations")
        applied = dict(cur.fetchall())
    current = max(applied, default=0)
    for migration in available_migrations():
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} was changed after it "
                    f"was applied; add a new migration instead"
                )
            continue
        with conn, conn.cursor() as cur:
            cur.execute(migration.sql)
            cur.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        log.info(
            "applied migration", extra={"version": migration.version, "migration": migration.name}
        )
        # max: a version missing below applied ones (restored by hand) is filled in too.
        current = max(current, migration.version)
    unknown = sorted(v for v in applied if v > latest_version())
    if unknown:
        raise MigrationError(f"database has schema versions {unknown} newer than this release")
    return current


def schema_version(dsn: str) -> int:
    conn = connect(dsn, application_name=APPLICATION_NAME, readonly=True)
    try:  # psycopg2's `with conn` ends the transaction but does not close the connection
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            if not cur.fetchone()[0]:
                return 0
            cur.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            return int(cur.fetchone()[0])
    finally:
        conn.close()
