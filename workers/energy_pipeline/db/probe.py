"""A database dependency for readiness (core/readiness.py): PostgreSQL answers a cheap query
on a connection of the check's own, never one a worker's queries or writes wait for."""

from __future__ import annotations

from collections.abc import Callable

import psycopg2

from energy_pipeline.core.readiness import CHECK_TIMEOUT_S
from energy_pipeline.db.connect import Connection, LazyConnection


class DatabaseCheck:
    """PostgreSQL answers `query(conn)` (default `SELECT 1`) on a connection of its own, kept
    open between checks (autocommit, bounded by CHECK_TIMEOUT_S to connect and per
    statement). A connection broken since its last use (a restarted server) is replaced
    once at once, so a server that is back is not reported down for one more interval."""

    def __init__(
        self,
        url: str,
        *,
        application_name: str,
        query: Callable[[Connection], object] | None = None,
        timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        self.query = query or _select_one
        self._db = LazyConnection(
            url,
            application_name=application_name,
            statement_timeout_ms=int(timeout_s * 1000),
            connect_timeout_s=max(1, round(timeout_s)),
        )
        self._open = False

    def _run(self) -> None:
        conn = self._db.get()
        self._open = True
        conn.autocommit = True  # no transaction left open between checks
        self.query(conn)

    def __call__(self) -> None:
        reused = self._open
        try:
            self._run()
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            self.close()
            if not reused:
                raise
            self._run()

    def close(self) -> None:
        self._db.close()
        self._open = False


def _select_one(conn: Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchone()
