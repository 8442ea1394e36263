"""How every worker connects to PostgreSQL: one place for the connection settings.

Every connection:
- names its worker (`application_name`), so pg_stat_activity and the server log show who
  holds a lock or runs a slow query;
- gives up connecting after a bounded time, so a worker's retry loop or an operator pass
  sees an unreachable server in seconds, not after the kernel's TCP timeout (minutes);
- has TCP keepalives on at both ends, so a vanished peer (failover, node or network lost) is
  noticed in about 25 s instead of the kernel's default of two hours: the worker sees a dead
  server, and the server ends a dead worker's idle session, releasing the locks it held
  (hourly rows, claimed backlog rows) for the other workers;
- optionally carries a statement_timeout and default read-only transactions;
- with a CA (DATABASE_CA_FILE, `with_ca`) is encrypted and verified: sslmode=verify-full, so
  the server must present a certificate chaining to that CA and naming the host connected to.

A connection that cannot be opened is one line naming its cause and what to do
(`unreachable`): a refused port, a wrong password, a certificate the CA did not sign, a server
without TLS, a server that refuses unencrypted connections.

Server settings go in the startup packet (libpq `options`), so they hold from the first
statement, cost no extra round trip, and show in `SHOW` like any session setting.
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass
from urllib.parse import quote

import psycopg2
import psycopg2.extensions

from energy_pipeline.core.contracts import SCHEMA_NAME
from energy_pipeline.core.errors import CommandError, one_line, redact
from energy_pipeline.core.settings import env

Connection = psycopg2.extensions.connection

CONNECT_TIMEOUT_S = 5
# The first probe after 10 s of silence, then every 5 s; 3 unanswered probes drop it.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 10, 5, 3
# The server keeps the first NAMEDATALEN - 1 bytes of an application_name.
_NAME_BYTES = 63


def worker_name(component: str, pipeline_name: str | None = None) -> str:
    """`energy-pipeline <component> [<pipeline>]`: the application_name of one worker."""
    name = f"energy-pipeline {component}"
    if pipeline_name:
        name = f"{name} {pipeline_name}"
    return name.encode()[:_NAME_BYTES].decode(errors="ignore")


def dsn(
    url: str,
    *,
    application_name: str,
    statement_timeout_ms: int | None = None,
    connect_timeout_s: int = CONNECT_TIMEOUT_S,
    readonly: bool = False,
) -> str:
    """`url` (URI or key=value) with every connection setting of this module added.

    Options already in `url` are kept; the settings given here come after them, so they win.
    """
    server: dict[str, object] = {
        "tcp_keepalives_idle": KEEPALIVE_IDLE_S,
        "tcp_keepalives_interval": KEEPALIVE_INTERVAL_S,
        "tcp_keepalives_count": KEEPALIVE_COUNT,
    }
    if statement_timeout_ms is not None:
        server["statement_timeout"] = int(statement_timeout_ms)
    if readonly:
        server["default_transaction_read_only"] = "on"
    options = [f"-c {name}={value}" for name, value in server.items()]
    given = psycopg2.extensions.parse_dsn(url).get("options")
    if given:
        options.insert(0, given)
    return psycopg2.extensions.make_dsn(
        url,
        application_name=application_name,
        connect_timeout=connect_timeout_s,
        options=" ".join(options),
        keepalives=1,
        keepalives_idle=KEEPALIVE_IDLE_S,
        keepalives_interval=KEEPALIVE_INTERVAL_S,
        keepalives_count=KEEPALIVE_COUNT,
    )


def with_ca(url: str, ca_file: str) -> str:
    """`url` verifying the server against `ca_file`: sslmode=verify-full (encrypted; the
    server's certificate chains to that CA and names the host connected to) and
    sslrootcert=`ca_file`. What the URL says itself wins (an sslmode or sslrootcert of its
    own is kept); no CA file: `url` as it is, with libpq's defaults (sslmode=prefer)."""
    if not ca_file:
        return url
    given = psycopg2.extensions.parse_dsn(url)
    extra = {k: v for k, v in (("sslmode", "verify-full"), ("sslrootcert", ca_file))
             if k not in given}
    if not extra:
        return url
    if "://" in url:  # a URI stays one, so that messages show it as the user wrote it
        separator = "&" if "?" in url else "?"
        return url + separator + "&".join(f"{k}={quote(v, safe='/')}" for k, v in extra.items())
    return psycopg2.extensions.make_dsn(url, **extra)


DEFAULT_SCHEMA = "public"


def with_schema(url: str, schema: str) -> str:
    """`url` whose sessions keep their tables in `schema`: search_path=<schema> in the
    startup packet (libpq `options`), so every unqualified table name of the workers' SQL and
    of the migrations resolves there from the first statement, with no extra round trip.
    Each pipeline of a shared database has a schema of its own this way.

    `schema` must match SCHEMA_NAME (ValueError otherwise); "public" returns `url` unchanged.
    """
    if not SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"database schema {schema!r} is not lower-case letters, digits and "
                         "'_' (at most 63, not starting with a digit)")
    if schema == DEFAULT_SCHEMA:
        return url
    given = psycopg2.extensions.parse_dsn(url).get("options")
    setting = f"-c search_path={schema}"
    if "://" in url and not given:  # a URI stays one, as in with_ca
        separator = "&" if "?" in url else "?"
        return f"{url}{separator}options={quote(setting, safe='')}"
    return psycopg2.extensions.make_dsn(url, options=f"{given} {setting}" if given else setting)


def schema_of(url: str) -> str:
    """The schema a DSN made by `with_schema` keeps its tables in ("public" without one)."""
    options = psycopg2.extensions.parse_dsn(url).get("options") or ""
    found = re.findall(r"-c\s*search_path=(\S+)", options)
    return found[-1] if found else DEFAULT_SCHEMA


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """The settings of every worker that connects to PostgreSQL (a base of its settings
    class, as core.settings.KafkaSettings is for Kafka)."""

    database_url: str = env(
        "DATABASE_URL", doc="PostgreSQL DSN, `postgresql://user:pass@host/db`"
    )
    database_ca_file: str = env(
        "DATABASE_CA_FILE", "",
        doc="PEM file of the CA that signed the PostgreSQL server's certificate: connections "
        "are then encrypted and verified (sslmode=verify-full) unless DATABASE_URL sets its "
        "own sslmode; empty: libpq's default (sslmode=prefer, no verification)",
    )
    database_schema: str = env(
        "DATABASE_SCHEMA", DEFAULT_SCHEMA,
        doc="schema holding the pipeline's tables (set as search_path on every connection; "
        "`migrate` creates it); the operator sets the pipeline's spec.database.schema",
        pattern=SCHEMA_NAME,
    )

    def database_dsn(self) -> str:
        """DATABASE_URL with DATABASE_CA_FILE and DATABASE_SCHEMA applied: what every
        connection of the worker uses."""
        return with_schema(with_ca(self.database_url, self.database_ca_file),
                           self.database_schema)


class DatabaseUnreachable(CommandError, psycopg2.OperationalError):
    """A connection that could not be opened: a CommandError (one line naming DATABASE_URL,
    password redacted, for `energy-pipeline`) that is still the OperationalError the workers'
    retry loops catch."""


def address(url: str) -> str:
    """`host:port` a DSN connects to (libpq's defaults for what it leaves out)."""
    try:
        parts = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError:
        return "?"
    host = parts.get("host") or parts.get("hostaddr") or "local socket"
    return f"{host}:{parts.get('port') or 5432}"


# libpq's words for a failure (in its first line) -> what to do about it. The TLS ones first:
# they say why a server that is up still cannot be used.
_FIXES = (
    ("certificate verify failed",
     "set DATABASE_CA_FILE to the CA that signed the server's certificate"),
    ("does not match host name",
     "connect by a name the server's certificate holds (its subjectAltName), or have it "
     "reissued for this one"),
    ("root certificate file",
     "set DATABASE_CA_FILE to a readable PEM file with the CA certificate"),
    ("server does not support SSL",
     "turn TLS on in the server (ssl=on), or name a server that has it"),
    ("no encryption",
     "the server accepts TLS connections only: set DATABASE_CA_FILE (sslmode=verify-full)"),
    ("password authentication failed",
     "set DATABASE_URL with the role's current password"),
)
_DEFAULT_FIX = "start the server or set DATABASE_URL to a reachable one"


def unreachable(url: str, exc: psycopg2.OperationalError) -> DatabaseUnreachable:
    # libpq says 'connection to server at "h" (addr), port p failed: <reason>' and then a hint
    # on a line of its own: the address is named once, by us.
    first = (str(exc).strip().splitlines() or [""])[0]
    reason = one_line(first.split(" failed: ", 1)[-1])
    fix = next((fix for words, fix in _FIXES if words in reason), _DEFAULT_FIX)
    return DatabaseUnreachable(
        f"cannot connect to PostgreSQL at {address(url)} (DATABASE_URL={redact(url)}): {reason}",
        fix=fix,
    )


def connect(
    url: str,
    *,
    application_name: str,
    statement_timeout_ms: int | None = None,
    connect_timeout_s: int = CONNECT_TIMEOUT_S,
    autocommit: bool = False,
    readonly: bool = False,
) -> Connection:
    """A new connection with the settings of `dsn`; the caller closes it.

    Raises DatabaseUnreachable (a psycopg2.OperationalError) when it cannot be opened."""
    try:
        conn = psycopg2.connect(
            dsn(
                url,
                application_name=application_name,
                statement_timeout_ms=statement_timeout_ms,
                connect_timeout_s=connect_timeout_s,
                readonly=readonly,
            )
        )
    except psycopg2.OperationalError as exc:
        raise unreachable(url, exc) from exc
    conn.autocommit = autocommit
    return conn


class LazyConnection:
    """One long-lived connection of a worker thread: opened on first use, and opened again on
    the next use after it broke or was closed. Not for sharing between threads."""

    def __init__(
        self,
        url: str,
        *,
        application_name: str,
        statement_timeout_ms: int | None = None,
        connect_timeout_s: int = CONNECT_TIMEOUT_S,
    ) -> None:
        self._open = functools.partial(
            connect,
            url,
            application_name=application_name,
            statement_timeout_ms=statement_timeout_ms,
            connect_timeout_s=connect_timeout_s,
        )
        self._conn: Connection | None = None

    def get(self) -> Connection:
        """The open connection; a new one if there is none or psycopg2 saw it break."""
        if self._conn is None or self._conn.closed:
            self._conn = self._open()
        return self._conn

    def close(self) -> None:
        """Close it (quietly: it may be broken already); the next `get` connects anew."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg2.Error):
                conn.close()


def connection_trouble(sqlstate: str) -> bool:
    """Whether an error's SQLSTATE says the connection or the server's state failed, which
    retrying cures by itself (08: connection, 57: shutdown or cancel, 40: serialization or
    deadlock, 53300: too many connections), rather than the server refusing the statement
    (privileges, schema, a full disk: 53100), which needs a person."""
    return sqlstate[:2] in {"08", "57", "40"} or sqlstate == "53300"
