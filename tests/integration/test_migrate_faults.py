"""Schema migrations under faults, on real PostgreSQL: a migrator killed mid-migration leaves
nothing half done and the next one finishes; one that hangs holding the lock is named, with
the statement that ends it, instead of making every later migrator wait forever."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import psycopg2
import pytest
from energy_harness.testing import wait_for
from energy_pipeline.db.migrate import (
    _LOCK_ID,
    MigrationError,
    available_migrations,
    latest_version,
    migrate,
)

pytestmark = pytest.mark.integration


def _sql(url: str, statement: str) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(statement)
        return cur.fetchall() if cur.description else []


def _undo_a_migration(url: str) -> tuple[int, str]:
    """The database without the newest migration that only creates tables (no later one
    refers to them: checked): its version and the first table it creates."""
    migrations = available_migrations()
    for migration in reversed(migrations):
        tables = re.findall(r"^CREATE TABLE (\w+)", migration.sql, re.M)
        if (tables and migration.sql.count("CREATE ") == len(tables)
                and "ALTER " not in migration.sql):
            break
    else:
        raise AssertionError("no migration only creates tables: undo one by hand")
    later = [m for m in migrations if m.version > migration.version]
    assert not [m.name for m in later for t in tables if re.search(rf"\b{t}\b", m.sql)]
    _sql(url, f"DROP TABLE {', '.join(tables)}; "
              f"DELETE FROM schema_migrations WHERE version = {migration.version}")
    assert migration.version not in _applied(url)
    return migration.version, tables[0]


def _applied(url: str) -> set[int]:
    return {v for (v,) in _sql(url, "SELECT version FROM schema_migrations")}


def test_a_migrator_killed_mid_migration_leaves_nothing_half_done(database: str) -> None:
    version, table = _undo_a_migration(database)
    # A session that has written the latest version's row without committing: the migrator
    # creates the table, then waits on that row inside its transaction.
    blocker = psycopg2.connect(database)
    try:
        with blocker.cursor() as cur:
            cur.execute("INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES (%s, 'blocker', 'x')", (version,))
        migrator = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from energy_pipeline.db.migrate import migrate; migrate(sys.argv[1])",
             database])
        try:
            wait_for(lambda: _sql(database, "SELECT count(*) FROM pg_stat_activity "
                                  "WHERE application_name = 'energy-pipeline migrate' "
                                  "AND wait_event_type = 'Lock'")[0][0] == 1,
                     30, "the migrator waiting inside its migration")
        finally:
            migrator.kill()
            migrator.wait(10)
        blocker.rollback()
    finally:
        blocker.close()
    # Its transaction rolled back: no table, no version row; its session and lock go too.
    wait_for(lambda: not _sql(database, "SELECT pid FROM pg_stat_activity "
                              "WHERE application_name = 'energy-pipeline migrate'"),
             30, "the killed migrator's session ended")
    assert _sql(database, f"SELECT to_regclass('{table}')") == [(None,)]
    assert version not in _applied(database)
    assert migrate(database, lock_timeout_s=5) == latest_version()
    assert _applied(database) == set(range(1, latest_version() + 1))
    assert _sql(database, f"SELECT to_regclass('{table}') IS NOT NULL") == [(True,)]


def test_a_hung_migrator_is_named_with_the_statement_that_ends_it(database: str) -> None:
    version, _ = _undo_a_migration(database)
    holder = psycopg2.connect(database, application_name="stuck migrator")
    try:
        holder.autocommit = True
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s), pg_backend_pid()", (_LOCK_ID,))
            pid = cur.fetchone()[1]
        began = time.monotonic()
        with pytest.raises(MigrationError) as raised:
            migrate(database, lock_timeout_s=2)
        assert 2 <= time.monotonic() - began < 10
        assert f"backend pid {pid} (stuck migrator" in str(raised.value)
        assert f"SELECT pg_terminate_backend({pid})" in str(raised.value)
        _sql(database, f"SELECT pg_terminate_backend({pid})")  # the fix it names
    finally:
        holder.close()
    assert migrate(database, lock_timeout_s=5) == latest_version()
    assert version in _applied(database)
