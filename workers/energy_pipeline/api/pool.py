"""Read-only PostgreSQL connections for the API, shared by a fixed set of query threads.

Why not psycopg2's ThreadedConnectionPool: it closes every connection handed back beyond
`minconn`, so reuse needs minconn == maxconn, and then it must connect them all in its
constructor, which fails the process when the database is down at start. This pool
connects lazily, keeps what it opened, and drops dead connections.

Every connection is opened as db.connect opens every worker's, read-only
(default_transaction_read_only) and with a statement_timeout, plus a UTC session time zone;
each call runs in one REPEATABLE READ transaction, so the several statements of one page see
one snapshot, and is rolled back afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from energy_pipeline.db.connect import CONNECT_TIMEOUT_S, worker_name
from energy_pipeline.db.connect import dsn as database_dsn

log = logging.getLogger(__name__)
T = TypeVar("T")
Connection = Any  # psycopg2 ships no type hints for its connection class


class PoolTimeout(RuntimeError):
    """Every connection stayed busy for the whole wait."""


class QueryTimeout(RuntimeError):
    """The database cancelled a statement, or a request used up its time budget."""


class ConnectionPool:
    def __init__(
        self,
        dsn: str,
        size: int,
        statement_timeout_ms: int,
        application_name: str = worker_name("api"),
        connect: Callable[[str], Connection] = psycopg2.connect,
        connect_timeout_s: int = CONNECT_TIMEOUT_S,
    ) -> None:
        self.dsn = dsn
        self.size = size
        self.statement_timeout_ms = statement_timeout_ms
        self.application_name = application_name
        self._connect_fn = connect
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._in_use = 0
        self._closed = False
        # As many threads as connections: a query never waits for a thread while holding a
        # connection, nor for a connection while holding a thread.
        self.executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="api-db")

    # ---- connections ------------------------------------------------------------------

    def _open(self) -> Connection:
        conn = self._connect_fn(
            database_dsn(
                self.dsn,
                application_name=self.application_name,
                statement_timeout_ms=self.statement_timeout_ms,
                connect_timeout_s=self.connect_timeout_s,
                readonly=True,
            )
        )
        try:
            conn.set_session(
                isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ,
            )
            with conn.cursor() as cur:
                # Session-level, so one round trip at connect covers every use.
                cur.execute("SET TIME ZONE 'UTC'")
            conn.commit()
        except BaseException:
            conn.close()
            raise
        return conn

    def _take(self, fresh: bool) -> tuple[Connection, bool]:
        with self._lock:
            if self._closed:
                raise RuntimeError("connection pool is closed")
            if not fresh:
                while self._idle:
                    conn = self._idle.pop()  # most recently used: least likely to be stale
                    if not conn.closed:
                        self._in_use += 1
                        return conn, True
            self._in_use += 1
        try:
            return self._open(), False
        except BaseException:
            with self._lock:
                self._in_use -= 1
            raise

    def _give_back(self, conn: Connection) -> None:
        keep = not conn.closed
        if keep:
            try:
                conn.rollback()  # read-only: nothing to commit; ends the snapshot
            except psycopg2.Error:
                keep = False
        with self._lock:
            self._in_use -= 1
            if keep and not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def _drop_idle(self) -> None:
        """After one dead connection, the idle ones (same server, same age) likely are too."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # ---- running ----------------------------------------------------------------------

    def call(self, fn: Callable[[Connection], T], wait_s: float | None = None) -> T:
        """Run `fn(conn)` in one read-only transaction (blocking; use `run` from asyncio).

        A reused connection that turns out dead (server restarted since it was opened) is
        replaced once, transparently: the work is read-only, so repeating it is safe.
        """
        if not self._slots.acquire(timeout=wait_s):
            raise PoolTimeout(f"all {self.size} database connections busy")
        try:
            fresh = False
            while True:
                conn, reused = self._take(fresh)
                try:
                    return fn(conn)
                except psycopg2.errors.QueryCanceled as exc:
                    raise QueryTimeout(
                        f"query cancelled after statement_timeout={self.statement_timeout_ms}ms"
                    ) from exc
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    if reused and conn.closed and not fresh:
                        log.info("database connection was dead; retrying on a new one")
                        self._drop_idle()
                        fresh = True
                        continue
                    raise
                finally:
                    self._give_back(conn)
        finally:
            self._slots.release()

    async def run(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.call, fn)

    def stats(self) -> tuple[int, int]:
        """(in use, idle) connections."""
        with self._lock:
            return self._in_use, len(self._idle)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.executor.shutdown(wait=True, cancel_futures=True)
        self._drop_idle()


class Deadline:
    """A request's time budget across its several statements (each has its own timeout)."""

    def __init__(self, budget_ms: int) -> None:
        self.budget_ms = budget_ms
        self._end = time.monotonic() + budget_ms / 1000

    def check(self) -> None:
        if time.monotonic() > self._end:
            raise QueryTimeout(f"request used more than its {self.budget_ms}ms database budget")
