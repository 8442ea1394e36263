"""charts/postgres's scheduled backup: the CronJob as `helm template` renders it, and its
script run for real (the rendered text, with the real pg_dump and pg_restore) against the
test PostgreSQL: dumps restorable, the newest `keep` kept.

Marked `cluster` like test_charts_render (the helm binary comes from the cached Kubernetes
tools build; no API server is started here).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from energy_harness.localstack import PostgresServer
from energy_harness.localstack.install import require
from energy_harness.localstack.postgres import dsn
from energy_harness.testing import admin_sql

from unit.test_charts_render import (  # noqa: F401 - its fixtures and helpers
    by_kind,
    default_docs,
    helm,
    platform_chart,
    render,
)

pytestmark = pytest.mark.cluster


def cronjob(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(docs, "CronJob")["energy-postgres-backup"]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return cronjob(docs)["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_a_daily_backup_is_on_by_default_as_the_owner_over_verified_tls(
    default_docs: list[dict[str, Any]],  # noqa: F811
) -> None:
    job = cronjob(default_docs)["spec"]
    assert job["schedule"] == "30 2 * * *"
    assert job["concurrencyPolicy"] == "Forbid"
    spec = pod_spec(default_docs)
    (container,) = spec["containers"]
    assert container["image"] == by_kind(default_docs, "StatefulSet")["energy-postgres"][
        "spec"]["template"]["spec"]["containers"][0]["image"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    app = "energy-postgres-app"
    assert env == {
        "BACKUP_DIR": "/backup", "BACKUP_KEEP": "7",
        "PGHOST": "energy-postgres", "PGPORT": "5432", "PGDATABASE": "energy",
        "PGUSER": {"secretKeyRef": {"name": app, "key": "username"}},
        "PGPASSWORD": {"secretKeyRef": {"name": app, "key": "password"}},
        "PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/etc/postgresql/ca/ca.crt",
    }
    volumes = {v["name"]: v for v in spec["volumes"]}
    # Only the CA of the TLS Secret: never the server's key.
    assert volumes["ca"]["secret"] == {"secretName": "energy-postgres-tls",
                                       "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert volumes["backup"]["persistentVolumeClaim"] == {"claimName": "energy-postgres-backup"}
    claim = by_kind(default_docs, "PersistentVolumeClaim")["energy-postgres-backup"]
    assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False


def test_backup_off_or_without_tls(helm: Path, platform_chart: Path,  # noqa: F811
                                   tmp_path: Path) -> None:
    (tmp_path / "off").mkdir()
    (tmp_path / "plain").mkdir()
    off = render(helm, platform_chart, {"postgres": {"backup": {"enabled": False}}},
                 tmp_path / "off")
    assert "energy-postgres-backup" not in by_kind(off, "CronJob")
    assert "energy-postgres-backup" not in by_kind(off, "PersistentVolumeClaim")
    plain = render(helm, platform_chart, {"postgres": {"tls": {"enabled": False}},
                                          "grafana": {"database": {"sslmode": "disable"}}},
                   tmp_path / "plain")
    (container,) = pod_spec(plain)["containers"]
    assert not {"PGSSLMODE", "PGSSLROOTCERT"} & {e["name"] for e in container["env"]}
    assert "ca" not in {v["name"] for v in pod_spec(plain)["volumes"]}


def test_the_backup_script_dumps_restorably_and_keeps_the_newest(
    default_docs: list[dict[str, Any]], postgres: PostgresServer, tmp_path: Path,  # noqa: F811
) -> None:
    """The rendered script itself, with the test server's pg_dump and pg_restore on PATH."""
    (container,) = pod_spec(default_docs)["containers"]
    assert container["command"] == ["sh", "-ceu"]
    (script,) = container["args"]
    name = f"t_{uuid.uuid4().hex[:10]}"
    admin_sql(postgres, f'CREATE DATABASE "{name}"')
    url = dsn(postgres.port, postgres.password, name)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE readings (id int PRIMARY KEY); "
                    "INSERT INTO readings SELECT generate_series(1, 1000)")
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "energy-19990101T000000Z.dump.partial").write_text("a failed run's leftover")
    bin_dir = str(Path(require("postgres")).parent)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "BACKUP_DIR": str(backups),
           "BACKUP_KEEP": "2", "PGHOST": "127.0.0.1", "PGPORT": str(postgres.port),
           "PGDATABASE": name, "PGUSER": "postgres", "PGPASSWORD": postgres.password,
           "PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(postgres.ca_file)}
    outputs = []
    try:
        for run in range(3):
            if run:
                time.sleep(1.1)  # dumps are named by the second
            done = subprocess.run(["sh", "-ceu", script], env=env, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout)
        dumps = sorted(p.name for p in backups.iterdir())
        assert len(dumps) == 2 and all(d.endswith(".dump") for d in dumps), dumps
        assert "removed" in outputs[2] and "backup written" in outputs[2]
        restored = f"{name}_restored"
        admin_sql(postgres, f'CREATE DATABASE "{restored}"')
        subprocess.run([str(Path(bin_dir) / "pg_restore"), "--exit-on-error", "--no-owner",
                        f"--dbname={dsn(postgres.port, postgres.password, restored)}",
                        str(backups / dumps[-1])], check=True, timeout=120)
        with psycopg2.connect(dsn(postgres.port, postgres.password, restored)) as conn, \
                conn.cursor() as cur:
            cur.execute("SELECT count(*), sum(id) FROM readings")
            assert cur.fetchone() == (1000, 500500)
    finally:
        admin_sql(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_sql(postgres, f'DROP DATABASE IF EXISTS "{name}_restored" WITH (FORCE)')
