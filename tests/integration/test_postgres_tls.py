"""PostgreSQL with TLS, as the harness runs it by default (and the chart with tls.enabled):
hostssl-only pg_hba, a server certificate from a test CA; the workers verify it with
DATABASE_CA_FILE (sslmode=verify-full). Refusals are shown with our code and with `psql`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest
import yaml
from energy_harness.localstack import PostgresServer
from energy_harness.localstack.kube_install import ensure_kube_tools
from energy_harness.localstack.postgres import SUPERUSER, dsn, other_ca
from energy_harness.localstack.workers import energy_pipeline_argv
from energy_harness.testing import admin_sql
from energy_pipeline.core.settings import load
from energy_pipeline.db.connect import DatabaseSettings, DatabaseUnreachable, connect, worker_name
from energy_pipeline.db.migrate import latest_version

pytestmark = pytest.mark.integration

CHARTS = Path(__file__).resolve().parents[2] / "charts"


def no_encryption(database: str) -> str:
    """libpq's words when pg_hba.conf has only hostssl lines and the client did not use TLS."""
    return (f'FATAL: no pg_hba.conf entry for host "127.0.0.1", user "{SUPERUSER}", '
            f'database "{database}", no encryption')


def run(command: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`energy-pipeline COMMAND` as a real process, with only `env` (and PATH, HOME, LANG)."""
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    return subprocess.run(energy_pipeline_argv(command), env={**base, **env},
                          capture_output=True, text=True, timeout=90)


def psql(conninfo: str, password: str, sql: str = "SELECT 1"
         ) -> subprocess.CompletedProcess[str]:
    """Debian's psql, a client nobody here wrote; libpq's PG* variables of ours cleared."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.run(
        [shutil.which("psql") or "psql", "--no-psqlrc", "-X", "-A", "-t", "-c", sql, conninfo],
        env={**env, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"},
        capture_output=True, text=True, timeout=30,
    )


@pytest.fixture
def empty_database(postgres: PostgresServer) -> Iterator[str]:
    """A new database without schema; its name."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    admin_sql(postgres, f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin_sql(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def plain_postgres(services_dir: Path, system_packages: None) -> Iterator[PostgresServer]:
    """A server without TLS (ssl=off, the initdb pg_hba.conf): what a worker with a CA meets
    when someone points it at an unencrypted server. In services_dir, not pytest's basetemp,
    which a concurrent pytest run may prune while the server runs."""
    server = PostgresServer(services_dir / "plain-postgres", fast=True, tls=False)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def test_the_server_refuses_an_unencrypted_connection(postgres: PostgresServer) -> None:
    assert postgres.tls
    plain = f"{postgres.dsn}?sslmode=disable"
    # Our code: db.connect, every worker's way in, in one line naming the cause and the fix.
    with pytest.raises(DatabaseUnreachable) as refused:
        connect(plain, application_name=worker_name("test"))
    assert str(refused.value) == (
        f"cannot connect to PostgreSQL at 127.0.0.1:{postgres.port} "
        f"(DATABASE_URL=postgresql://{SUPERUSER}:***@127.0.0.1:{postgres.port}/"
        f"{postgres.database}?sslmode=disable): {no_encryption(postgres.database)}; "
        "the server accepts TLS connections only: set DATABASE_CA_FILE (sslmode=verify-full)"
    )
    # Debian's psql, the same refusal in libpq's own words.
    conninfo = (f"sslmode=disable host=127.0.0.1 port={postgres.port} user={SUPERUSER} "
                f"dbname={postgres.database}")
    done = psql(conninfo, postgres.password)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f'psql: error: connection to server at "127.0.0.1", port {postgres.port} failed: '
        f'FATAL:  no pg_hba.conf entry for host "127.0.0.1", user "{SUPERUSER}", '
        f'database "{postgres.database}", no encryption'
    ]
    # The same psql with TLS and the right CA gets in, and the server says the session is
    # encrypted.
    verified = psql(f"sslmode=verify-full sslrootcert={postgres.ca_file} host=127.0.0.1 "
                    f"port={postgres.port} user={SUPERUSER} dbname={postgres.database}",
                    postgres.password,
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert (verified.returncode, verified.stdout.strip()) == (0, "t"), verified.stderr


def test_psql_with_a_wrong_ca_is_refused_by_certificate_verification(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    wrong = other_ca(tmp_path / "other-ca")
    done = psql(f"sslmode=verify-full sslrootcert={wrong} host=127.0.0.1 port={postgres.port} "
                f"user={SUPERUSER} dbname={postgres.database}", postgres.password)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f'psql: error: connection to server at "127.0.0.1", port {postgres.port} failed: '
        "SSL error: certificate verify failed"
    ]


def test_a_worker_with_a_wrong_ca_fails_in_one_line(
    postgres: PostgresServer, empty_database: str, tmp_path: Path
) -> None:
    wrong = other_ca(tmp_path / "other-ca")
    url = dsn(postgres.port, postgres.password, empty_database)
    done = run(["migrate"], {"DATABASE_URL": url, "DATABASE_CA_FILE": str(wrong)})
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"energy-pipeline migrate: error: cannot connect to PostgreSQL at "
        f"127.0.0.1:{postgres.port} (DATABASE_URL=postgresql://{SUPERUSER}:***@127.0.0.1:"
        f"{postgres.port}/{empty_database}?sslmode=verify-full&sslrootcert={wrong}): "
        "SSL error: certificate verify failed; set DATABASE_CA_FILE to the CA that signed the "
        "server's certificate"
    ]
    assert postgres.password not in done.stderr
    # Nothing was migrated.
    with psycopg2.connect(postgres.verify_dsn(empty_database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert cur.fetchone() == (0,)
    conn.close()


def test_a_worker_with_a_ca_refuses_a_server_without_tls_in_one_line(
    plain_postgres: PostgresServer, tmp_path: Path
) -> None:
    # The server is fine for a client that does not insist (it is the plain one of before)...
    with psycopg2.connect(plain_postgres.dsn, sslmode="prefer") as conn, conn.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone() == (False,)
    conn.close()
    # ...but a worker given a CA never talks to it unencrypted.
    ca = other_ca(tmp_path / "ca")
    done = run(["migrate"], {"DATABASE_URL": plain_postgres.dsn, "DATABASE_CA_FILE": ca})
    assert done.returncode == 1, done.stdout + done.stderr
    port = plain_postgres.port
    assert done.stderr.splitlines() == [
        f"energy-pipeline migrate: error: cannot connect to PostgreSQL at 127.0.0.1:{port} "
        f"(DATABASE_URL=postgresql://{SUPERUSER}:***@127.0.0.1:{port}/"
        f"{plain_postgres.database}?sslmode=verify-full&sslrootcert={ca}): "
        "server does not support SSL, but SSL was required; turn TLS on in the server "
        "(ssl=on), or name a server that has it"
    ]


def test_with_the_right_ca_a_worker_migrates_writes_and_reads_over_verified_tls(
    postgres: PostgresServer, empty_database: str
) -> None:
    env = {"DATABASE_URL": dsn(postgres.port, postgres.password, empty_database),
           "DATABASE_CA_FILE": str(postgres.ca_file)}
    done = run(["migrate"], env)
    assert done.returncode == 0, done.stderr
    # JSON log lines (one per migration applied), then the result.
    *logs, result = done.stdout.splitlines()
    assert json.loads(result) == {"schema_version": latest_version()}
    assert [json.loads(line)["msg"] for line in logs].count("applied migration") == (
        latest_version())

    settings = load(DatabaseSettings, env)
    assert settings.database_dsn() == (
        f"{env['DATABASE_URL']}?sslmode=verify-full&sslrootcert={postgres.ca_file}")
    row = ("site-tls", "temperature", "0", datetime(2025, 1, 1, 13, tzinfo=UTC), 20.05)
    conn = connect(settings.database_dsn(), application_name=worker_name("test"))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO readings (site_id, sensor, device_id, ts, value) "
                        "VALUES (%s, %s, %s, %s, %s)", row)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT site_id, sensor, device_id, ts, value FROM readings")
            assert cur.fetchall() == [row]
            # Encrypted as the server sees it, and verified as the client did it.
            cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            ssl, version = cur.fetchone()
            assert ssl is True and version in {"TLSv1.2", "TLSv1.3"}
        assert conn.info.ssl_in_use
        assert conn.info.dsn_parameters["sslmode"] == "verify-full"
    finally:
        conn.close()


@pytest.fixture(scope="module")
def chart_postgres(services_dir: Path, system_packages: None) -> Iterator[PostgresServer]:
    """The local server run with what charts/postgres renders with tls.enabled: its pg_hba.conf
    (from the ConfigMap, verbatim) and its TLS server arguments; only the certificate paths
    point at the harness's test certificate instead of the Secret's mount."""
    rendered = subprocess.run(
        [str(ensure_kube_tools().helm), "template", "energy", str(CHARTS / "postgres"),
         "--set", "tls.enabled=true"], capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    (hba,) = [d["data"]["pg_hba.conf"] for d in docs
              if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-hba")]
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    chart_settings = dict(a.split("=", 1) for a in args[1::2])
    base = services_dir / "chart-postgres"
    base.mkdir()
    (base / "chart_hba.conf").write_text(hba)
    server = PostgresServer(base, fast=True, settings={
        **{k: v for k, v in chart_settings.items()
           if k in {"ssl", "ssl_min_protocol_version"}},
        "hba_file": str(base / "chart_hba.conf"),
    })
    assert chart_settings["ssl"] == "on" and "hba_file" in chart_settings
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def test_the_charts_pg_hba_on_a_real_server_admits_tcp_clients_only_over_tls(
    chart_postgres: PostgresServer,
) -> None:
    server = chart_postgres
    conninfo = f"host=127.0.0.1 port={server.port} user={SUPERUSER} dbname={server.database}"
    refused = psql(f"sslmode=disable {conninfo}", server.password)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f'psql: error: connection to server at "127.0.0.1", port {server.port} failed: '
        f'FATAL:  no pg_hba.conf entry for host "127.0.0.1", user "{SUPERUSER}", '
        f'database "{server.database}", no encryption'
    ]
    wrong_password = psql(f"sslmode=verify-full sslrootcert={server.ca_file} {conninfo}",
                          server.password + "x")
    assert wrong_password.returncode == 2
    assert wrong_password.stderr.splitlines()[0].endswith(
        f'FATAL:  password authentication failed for user "{SUPERUSER}"')
    verified = psql(f"sslmode=verify-full sslrootcert={server.ca_file} {conninfo}",
                    server.password,
                    "SELECT ssl, current_setting('ssl_min_protocol_version') "
                    "FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert (verified.returncode, verified.stdout.strip()) == (0, "t|TLSv1.2"), verified.stderr


def test_the_operator_migrates_over_verified_tls_and_reports_a_wrong_ca(
    postgres: PostgresServer, empty_database: str, tmp_path: Path
) -> None:
    """reconcile_schema with the URL the operator builds from spec.database.urlSecret and
    caSecret (the CA's PEM, as read from the Secret, written to a file by `ca_file`)."""
    from energy_operator.reconcile import Outcome, ca_file, reconcile_schema
    from energy_pipeline.db.connect import with_ca

    url = dsn(postgres.port, postgres.password, empty_database)
    wrong_pem = other_ca(tmp_path / "other-ca").read_text()
    refused = Outcome()
    reconcile_schema(with_ca(url, str(ca_file(wrong_pem))), True, refused)
    [problem] = refused.problems
    assert problem.reason == "DatabaseUnreachable"
    assert problem.message == (
        "PostgreSQL (spec.database.urlSecret, spec.database.caSecret): cannot connect to "
        f"PostgreSQL at 127.0.0.1:{postgres.port} (DATABASE_URL=postgresql://{SUPERUSER}:***@"
        f"127.0.0.1:{postgres.port}/{empty_database}?sslmode=verify-full&sslrootcert="
        f"{ca_file(wrong_pem)}): SSL error: certificate verify failed; check the URL in the "
        "Secret and the CA certificate in spec.database.caSecret"
    )
    assert refused.database.schema_version is None

    pem = postgres.ca_file.read_text()
    assert ca_file(pem) == ca_file(pem) and ca_file(pem).read_text() == pem
    migrated = Outcome()
    reconcile_schema(with_ca(url, str(ca_file(pem))), True, migrated)
    assert migrated.problems == []
    assert migrated.database.schema_version == latest_version()
    assert migrated.changes == [f"migrated schema 0->{latest_version()}"]
