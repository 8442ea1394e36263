"""The postgres stand-in image started as charts/postgres's StatefulSet starts it.

Everything about the container comes from `helm template charts/postgres` with the chart's
default values (started by energy_harness.chart_containers); only the image is ours
(energy_harness.images, "postgres"): the server arguments, the environment with the rendered
Secret's values, the ConfigMap's init script at /docker-entrypoint-initdb.d with the volume's
defaultMode, a labelled named volume for the data claim, tmpfs for the emptyDirs, the pod's
uid/gid/fsGroup and the container's hardening.
Readiness is the chart's own probe command run in the container; the checks then go over the
published port, from outside the container, as any client in the cluster connects.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.errors
import pytest
from energy_harness.chart_containers import Container, Manifests, PodRunner, Workload
from energy_harness.localstack.docker import DockerEngine

pytestmark = pytest.mark.container

INIT_DIR = "/docker-entrypoint-initdb.d"
# pg_settings units, in bytes and milliseconds (a bare number is in the setting's own unit).
UNITS = {
    "B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4,
    "us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000,
}  # fmt: skip


@dataclass(frozen=True)
class Chart:
    """What the rendered chart says about the one postgres container."""

    manifests: Manifests

    @property
    def statefulset(self) -> Workload:
        return self.manifests.workload(kind="StatefulSet")  # not the backup CronJob

    @property
    def pod(self) -> dict[str, Any]:
        return self.statefulset.spec

    @property
    def container(self) -> dict[str, Any]:
        return self.statefulset.container

    @property
    def configmap(self) -> dict[str, Any]:
        return self.manifests.find("ConfigMap")

    def secret_value(self, role: str, key: str) -> str:
        """`key` of the Secret of `role` (superuser, app, reader): one Secret per role."""
        (name,) = [s["metadata"]["name"] for s in self.manifests.of_kind("Secret")
                   if s["metadata"]["labels"].get("energy.pipeline.dev/database-role") == role]
        return self.manifests.secret(name)[key]

    @property
    def env(self) -> dict[str, str]:
        """As the kubelet resolves it: the Secret's values in place of its references."""
        return self.statefulset.pod(0).env

    @property
    def server_args(self) -> dict[str, str]:
        """The `-c name=value` pairs the chart passes to the server."""
        args = self.container["args"]
        assert args[::2] == ["-c"] * (len(args) // 2), args
        return dict(arg.split("=", 1) for arg in args[1::2])

    @property
    def port(self) -> int:
        (port,) = self.container["ports"]
        return int(port["containerPort"])

    def probe(self, kind: str) -> list[str]:
        return self.container[kind]["exec"]["command"]


@dataclass
class Pod:
    """Containers started one after another on the same data volume, as the StatefulSet's
    pod is recreated on its claim (energy_harness.chart_containers starts each)."""

    runner: PodRunner
    chart: Chart
    image: str
    port: int = 0

    @property
    def container(self) -> Container:
        return self.runner.containers[-1]

    @property
    def current(self) -> str:
        return self.container.name

    def start(self) -> None:
        assert "command" not in self.chart.container  # the image's own entrypoint, as in the chart
        self.runner.start(self.chart.statefulset.pod(0), self.image, publish=[self.chart.port])
        # The chart's startup probe until it passes, within its own failure budget.
        self.container.wait_for_probe("startupProbe", timeout=300)
        self.port = self.container.address(self.chart.port)[1]

    def exec(self, command: list[str]) -> Any:
        return self.container.exec(*command, check=False)

    def logs(self, container: str | None = None) -> str:
        (found,) = [c for c in self.runner.containers if c.name == (container or self.current)]
        return found.logs()

    def stop(self) -> int:
        """Stop as the kubelet would, within the pod's grace period; the exit code."""
        return self.container.stop()

    @contextlib.contextmanager
    def connect(self, user: str, password: str, dbname: str | None = None) -> Iterator[Any]:
        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=user, password=password,
            dbname=dbname or self.chart.env["POSTGRES_DB"], connect_timeout=10,
        )  # fmt: skip
        conn.autocommit = True
        try:
            yield conn.cursor()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def chart(helm_template: Callable[..., str]) -> Chart:
    return Chart(Manifests.parse(helm_template("postgres")))


@pytest.fixture(scope="module")
def pod(
    docker_engine: DockerEngine,
    image: Callable[[str], str],
    chart: Chart,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pod]:
    runner = PodRunner(docker_engine, tmp_path_factory.mktemp("pg"))
    started = Pod(runner, chart, image("postgres"))
    try:
        started.start()
        yield started
    finally:
        runner.cleanup()


@pytest.fixture(scope="module")
def roles(chart: Chart) -> dict[str, tuple[str, str]]:
    """admin / app / reader -> (role, password from the rendered Secret)."""
    env = chart.env
    return {
        "admin": (env["POSTGRES_USER"], chart.secret_value("superuser", "password")),
        "app": (env["APP_USER"], chart.secret_value("app", "password")),
        "reader": (env["READER_USER"], chart.secret_value("reader", "password")),
    }


def _rows(cur: Any, sql: str, *params: object) -> list[tuple[Any, ...]]:
    cur.execute(sql, params)
    return cur.fetchall()


def _granted(cur: Any, acl_query: str, params: tuple[object, ...], grantee: str) -> list[str]:
    """The privileges `grantee` holds in the one ACL that `acl_query` selects."""
    rows = _rows(
        cur,
        f"SELECT a.privilege_type FROM ({acl_query}) s(acl), aclexplode(s.acl) a "
        "WHERE a.grantee = %s::regrole ORDER BY 1",
        *params, grantee,
    )  # fmt: skip
    return [privilege for (privilege,) in rows]


def test_the_chart_probes_pass_on_the_server_listening_as_its_uid(pod: Pod, chart: Chart) -> None:
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        result = pod.exec(chart.probe(kind))
        assert result.returncode == 0, f"{kind}: {result.stdout}{result.stderr}"
        assert "accepting connections" in result.stdout
    # The server itself is PID 1 (it gets the stop signal) and runs as the chart's uid.
    status = pod.exec(["sh", "-c", "cat /proc/1/comm; stat -c %u:%g /proc/1"]).stdout.split()
    security = chart.pod["securityContext"]
    assert status == ["postgres", f"{security['runAsUser']}:{security['runAsGroup']}"]


def test_each_role_logs_in_with_its_secret_password_and_only_with_it(
    pod: Pod, chart: Chart, roles: dict[str, tuple[str, str]]
) -> None:
    for user, password in roles.values():
        with pod.connect(user, password) as cur:
            assert _rows(cur, "SELECT current_user, current_database()") == [
                (user, chart.env["POSTGRES_DB"])
            ]
        wrong = pytest.raises(psycopg2.OperationalError, match="password authentication failed")
        with wrong, pod.connect(user, password + "x"):
            pass
    # The Secret's URLs hold the same credentials (pointed at the published port here).
    for role in ("app", "reader"):
        url = urlsplit(chart.secret_value(role, "DATABASE_URL"))
        assert url.port == chart.port
        here = f"{url.username}:{url.password}@127.0.0.1:{pod.port}"
        local = urlunsplit(url._replace(netloc=here))
        conn = psycopg2.connect(local, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                assert _rows(cur, "SELECT current_user") == [(roles[role][0],)]
        finally:
            conn.close()
    # Passwords are stored as SCRAM verifiers (scram-sha-256, as the official image does).
    admin, app, reader = (roles[key] for key in ("admin", "app", "reader"))
    with pod.connect(*admin) as cur:
        stored = _rows(cur, "SELECT rolname, left(rolpassword, 14) FROM pg_authid "
                            "WHERE rolcanlogin ORDER BY rolname")  # fmt: skip
    assert stored == sorted((role[0], "SCRAM-SHA-256$") for role in (admin, app, reader))


def test_roles_hold_exactly_what_the_init_script_grants(
    pod: Pod, chart: Chart, roles: dict[str, tuple[str, str]]
) -> None:
    (admin_user, _), (app_user, _), (reader_user, _) = roles["admin"], roles["app"], roles["reader"]
    database = chart.env["POSTGRES_DB"]
    table = f"t_{uuid.uuid4().hex[:8]}"
    schema = f"p_{uuid.uuid4().hex[:8]}"
    with pod.connect(*roles["app"]) as cur:
        # Owning the database (and so the public schema, PostgreSQL >= 15) lets it migrate.
        cur.execute(f"CREATE TABLE public.{table} (id int PRIMARY KEY)")
        cur.execute(f"INSERT INTO public.{table} VALUES (1), (2)")
        # A pipeline's own schema, as its migration makes it.
        cur.execute(f"CREATE SCHEMA {schema}")
        cur.execute(f"CREATE TABLE {schema}.readings AS SELECT 7 AS id")
        cur.execute(f"CREATE VIEW {schema}.distributeddata AS SELECT id FROM {schema}.readings")
    with pod.connect(*roles["admin"]) as cur:
        ours = _rows(cur, "SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1")
        assert ours == sorted([(admin_user,), (app_user,), (reader_user,)])
        flags = ("rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, "
                 "rolreplication, rolbypassrls")  # fmt: skip
        for role in (app_user, reader_user):
            assert _rows(cur, f"SELECT {flags} FROM pg_roles WHERE rolname = %s", role) == [
                (False, True, False, False, True, False, False)
            ]
            assert _rows(cur, "SELECT roleid::regrole::text FROM pg_auth_members "
                              "WHERE member = %s::regrole", role) == []  # fmt: skip
        assert _rows(cur, "SELECT datdba::regrole::text FROM pg_database WHERE datname = %s",
                     database) == [(app_user,)]  # fmt: skip
        assert _granted(cur, "SELECT datacl FROM pg_database WHERE datname = %s", (database,),
                        reader_user) == ["CONNECT"]  # fmt: skip
        assert _granted(cur, "SELECT nspacl FROM pg_namespace WHERE nspname = 'public'", (),
                        reader_user) == ["USAGE"]  # fmt: skip
        assert _granted(cur, "SELECT relacl FROM pg_class WHERE oid = %s::regclass", (table,),
                        reader_user) == ["SELECT"]  # fmt: skip
        # Tables of public, and (namespace "-": any) every schema and table the owner makes:
        # each pipeline's schema (spec.database.schema), created by its migration.
        assert sorted(_rows(
            cur,
            "SELECT d.defaclrole::regrole::text, d.defaclnamespace::regnamespace::text, "
            "d.defaclobjtype, a.grantee::regrole::text, a.privilege_type "
            "FROM pg_default_acl d, aclexplode(d.defaclacl) a WHERE a.grantee <> d.defaclrole",
        )) == [(app_user, "-", "n", reader_user, "USAGE"),
               (app_user, "-", "r", reader_user, "SELECT"),
               (app_user, "public", "r", reader_user, "SELECT")]
        settings = _rows(cur, "SELECT rolname, rolconfig FROM pg_roles WHERE rolconfig IS NOT NULL")
        reader_settings = ["statement_timeout=30s", "default_transaction_read_only=on"]
        assert settings == [(reader_user, reader_settings)]
    with pod.connect(*roles["reader"]) as cur:
        assert _rows(cur, "SHOW default_transaction_read_only") == [("on",)]
        assert _rows(cur, "SHOW statement_timeout") == [("30s",)]
        assert _rows(cur, f"SELECT id FROM public.{table} ORDER BY id") == [(1,), (2,)]
        assert _rows(cur, f"SELECT id FROM {schema}.distributeddata") == [(7,)]
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute(f"INSERT INTO public.{table} VALUES (3)")
        # Read-only sessions are a setting the reader may change; the privileges still hold.
        cur.execute("SET default_transaction_read_only = off")
        for statement in (
            f"INSERT INTO public.{table} VALUES (3)",
            f"UPDATE public.{table} SET id = 3",
            f"DELETE FROM public.{table}",
            f"TRUNCATE public.{table}",
            "CREATE TABLE public.reader_table (id int)",
            "CREATE SCHEMA reader_schema",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)
        assert _rows(cur, f"SELECT count(*) FROM public.{table}") == [(2,)]


def _in_units(value: str, unit: str | None) -> float:
    """A setting's value (`128MB`, `2000`, `on`) in bytes or milliseconds, bare numbers
    being in the setting's own unit (`8kB`, `ms`)."""
    match = re.fullmatch(r"(\d+)\s*([a-zA-Z]+)?", value)
    assert match, f"not a number: {value!r}"
    number, suffix = int(match[1]), match[2] or unit
    if suffix is None:
        return number
    scale = re.fullmatch(r"(\d*)([a-zA-Z]+)", suffix)
    assert scale and scale[2] in UNITS, f"unknown unit {suffix!r}"
    return number * int(scale[1] or 1) * UNITS[scale[2]]


def test_the_chart_server_args_take_effect(
    pod: Pod, chart: Chart, roles: dict[str, tuple[str, str]]
) -> None:
    assert chart.server_args  # the chart passes some, or there is nothing to check
    with pod.connect(*roles["admin"]) as cur:
        for name, value in chart.server_args.items():
            ((setting, unit, source),) = _rows(
                cur, "SELECT setting, unit, source FROM pg_settings WHERE name = %s", name
            )
            assert source == "command line", name
            if re.fullmatch(r"\d+\s*[a-zA-Z]*", value) and re.fullmatch(r"\d+", setting):
                assert _in_units(setting, unit) == _in_units(value, unit), name
            else:
                assert setting == value, name
        assert _rows(cur, "SHOW data_directory") == [(chart.env["PGDATA"],)]
        assert _rows(cur, "SHOW port") == [(str(chart.port),)]


def test_a_restart_on_the_same_volume_keeps_the_data_and_skips_the_init_scripts(
    pod: Pod, chart: Chart, roles: dict[str, tuple[str, str]]
) -> None:
    table = f"kept_{uuid.uuid4().hex[:8]}"
    with pod.connect(*roles["app"]) as cur:
        cur.execute(f"CREATE TABLE public.{table} (id int PRIMARY KEY, note text)")
        cur.execute(f"INSERT INTO public.{table} VALUES (1, 'before the restart')")
    with pod.connect(*roles["admin"]) as cur:
        ((first_start,),) = _rows(cur, "SELECT pg_postmaster_start_time()")
    scripts = sorted(chart.configmap["data"])
    first = pod.current
    for script in scripts:
        assert pod.logs(first).count(f"running {INIT_DIR}/{script}\n") == 1
    assert pod.stop() == 0  # SIGINT, the image's stop signal: a clean, fast shutdown

    pod.start()  # the same volume, the same arguments
    assert pod.current != first
    logs = pod.logs()
    assert "appears to contain a database; Skipping initialization" in logs
    assert INIT_DIR not in logs
    assert "initdb" not in logs and "CREATE ROLE" not in logs

    with pod.connect(*roles["admin"]) as cur:
        ((second_start,),) = _rows(cur, "SELECT pg_postmaster_start_time()")
        assert second_start > first_start
        assert _rows(cur, "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)",
                     [role for role, _ in roles.values()]) == [(3,)]  # fmt: skip
    with pod.connect(*roles["reader"]) as cur:
        assert _rows(cur, f"SELECT id, note FROM public.{table}") == [(1, "before the restart")]
