"""Typed worker settings read from environment variables.

Each worker has one frozen dataclass; every field names its environment variable in its
metadata, the same name the operator sets, the CRD documents and the README lists.
All problems are reported at once, before the worker starts doing anything.
"""

from __future__ import annotations

import os
import re
import socket
import textwrap
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import timedelta
from typing import Any, TypeVar

from energy_pipeline.core.contracts import MQTT_TOPIC_ROOT, TOPIC_ROOT, Limits
from energy_pipeline.core.kafka import client_config, read_secret_file

T = TypeVar("T")


class SettingsError(ValueError):
    """One or more environment variables are missing or malformed."""


def env(name: str, default: Any = MISSING, *, doc: str = "", minimum: float | None = None,
        pattern: re.Pattern[str] | None = None) -> Any:
    """A settings field bound to environment variable `name` (a string one may have to match
    `pattern` in full)."""
    metadata = {"env": name, "doc": doc, "minimum": minimum, "pattern": pattern}
    if default is MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


def _convert(raw: str, kind: Any) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"expected true/false, got {raw!r}")
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    if kind is str:
        return raw
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return _convert(raw, inner[0]) if raw != "" else None
    if origin is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    raise TypeError(f"unsupported settings type {kind!r}")


def load(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build `cls` from the environment, collecting every error into one SettingsError."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    errors: list[str] = []
    for f in fields(cls):  # type: ignore[arg-type]
        name = f.metadata.get("env")
        if name is None:
            continue
        if name not in environ:
            if f.default is MISSING and f.default_factory is MISSING:
                errors.append(f"{name} is required ({f.metadata.get('doc') or f.name})")
            continue
        try:
            value = _convert(environ[name], hints[f.name])
        except (TypeError, ValueError) as exc:
            errors.append(f"{name}: {exc}")
            continue
        minimum = f.metadata.get("minimum")
        if minimum is not None and value is not None and value < minimum:
            errors.append(f"{name} must be at least {minimum}, got {value}")
            continue
        pattern = f.metadata.get("pattern")
        if pattern is not None and not pattern.fullmatch(value):
            errors.append(f"{name}={value!r} must match {pattern.pattern}")
            continue
        values[f.name] = value
    if errors:
        raise SettingsError("invalid settings: " + "; ".join(errors))
    return cls(**values)


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(variable, default, description) rows, for the README's configuration reference."""
    rows = []
    for f in fields(cls):
        name = f.metadata.get("env")
        if name is None:
            continue
        default = "(required)" if f.default is MISSING else repr(f.default)
        rows.append((name, default, f.metadata.get("doc", "")))
    return rows


# The unit a variable's name ends in, spelled out in --help.
_UNITS = {"_S": "seconds", "_MS": "milliseconds", "_BYTES": "bytes", "_DAYS": "days",
          "_HOURS": "hours"}

# How every duration option is written (core.timeutil.parse_duration), for --help.
DURATION_FORMAT = "a number and a unit: ms, s, m, h, d or w (500ms, 90s, 5m, 24h, 7d, 2w)"


def unit_of(variable: str) -> str:
    return next((unit for suffix, unit in _UNITS.items() if variable.endswith(suffix)), "")


def environment_help(*classes: type, width: int = 100) -> str:
    """The `environment variables:` part of a command's --help, from its settings classes
    (`describe`): one entry per variable with its default, unit and meaning."""
    rows: dict[str, tuple[str, str]] = {}
    for cls in classes:
        for name, default, doc in describe(cls):
            if default in ("''", "()"):
                default = "(empty)"
            elif default in ("True", "False"):
                default = default.lower()  # as the environment spells it
            elif default != "(required)":
                default = re.sub(r"^(\d+)\.0$", r"\1", default.strip("'"))
                if unit_of(name):
                    default = f"{default} {unit_of(name)}"
            rows[name] = (default, " ".join(doc.split()))
    column = max((len(name) for name in rows), default=0) + 4
    lines = ["environment variables (default: meaning):"]
    for name, (default, text) in rows.items():
        lines += textwrap.wrap(
            f"{default}: {text}", width, initial_indent=f"  {name:<{column - 2}}",
            subsequent_indent=" " * column,
        )
    return "\n".join(lines)


def http_port_field(default: int) -> Any:
    """HTTP_PORT with a worker's own default: workers on one machine must not collide.

    Each worker's settings class redefines `http_port` with this (bridge 9101, ingest 9102,
    inference 9103, api 9104); pods get HTTP_PORT from the operator and the image anyway.
    """
    return env("HTTP_PORT", default, doc="port of /metrics, /healthz and /readyz", minimum=0)


@dataclass(frozen=True, kw_only=True)
class CommonSettings:
    pipeline_name: str = env(
        "PIPELINE_NAME", "local", doc="name of the EnergyPipeline, in every log line"
    )
    log_level: str = env("LOG_LEVEL", "INFO", doc="DEBUG, INFO, WARNING or ERROR")
    # No HTTP_PORT here: only the long-running workers serve one (http_port_field), and the
    # one-shot commands (migrate, topics, train, simulate) must not list a variable they ignore.


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    kafka_bootstrap_servers: str = env(
        "KAFKA_BOOTSTRAP_SERVERS", doc="comma-separated host:port list of Kafka brokers"
    )
    kafka_topic_prefix: str = env(
        "KAFKA_TOPIC_PREFIX", "energy",
        doc="topics are `<prefix>.<sensor>`, `<prefix>.weather_forecast` and "
        "`<prefix>.deadletter`",
    )
    kafka_security_protocol: str = env(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", doc="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: str = env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", doc="SASL mechanism")
    kafka_sasl_username: str = env("KAFKA_SASL_USERNAME", "", doc="SASL user (empty: no SASL)")
    kafka_sasl_password: str = env("KAFKA_SASL_PASSWORD", "", doc="SASL password")
    kafka_sasl_password_file: str = env(
        "KAFKA_SASL_PASSWORD_FILE", "",
        doc="file holding the SASL password (a mounted Secret); wins over KAFKA_SASL_PASSWORD",
    )
    kafka_ca_file: str = env(
        "KAFKA_CA_FILE", "",
        doc="PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL); "
        "empty: the system's CAs",
    )

    def kafka_sasl_secret(self) -> str:
        """The SASL password: KAFKA_SASL_PASSWORD_FILE's content if set, read now (a rotated
        Secret is read at the next start), else KAFKA_SASL_PASSWORD."""
        if self.kafka_sasl_password_file:
            return read_secret_file("KAFKA_SASL_PASSWORD_FILE", self.kafka_sasl_password_file)
        return self.kafka_sasl_password

    def kafka_client_config(self) -> dict[str, Any]:
        return client_config(
            self.kafka_bootstrap_servers,
            self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_secret() if self.kafka_sasl_username else "",
            ca_file=self.kafka_ca_file,
        )


def default_client_id(user: str = "") -> str:
    """Stable across restarts of the same pod or host, so a persistent MQTT session resumes.
    With an MQTT user, `<user>-<host>`: energy-pipeline's HiveMQ extension lets a user connect
    only with client ids `<user>` and `<user>-...`, so that no one can take its session over."""
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{user}-{host}" if user else host


@dataclass(frozen=True, kw_only=True)
class MqttSettings:
    mqtt_host: str = env("MQTT_HOST", "127.0.0.1", doc="MQTT broker host")
    mqtt_port: int = env("MQTT_PORT", 1883, doc="MQTT broker port", minimum=1)
    mqtt_topic_root: str = env(
        "MQTT_TOPIC_ROOT", MQTT_TOPIC_ROOT,
        doc="topic root of the pipeline's readings, <root>/<site>/<sensor>/<device>: where "
        "the simulator publishes; the bridge dead-letters a topic outside it (bad_topic)",
        pattern=TOPIC_ROOT,
    )
    mqtt_username: str = env("MQTT_USERNAME", "", doc="MQTT user (empty: anonymous)")
    mqtt_password: str = env("MQTT_PASSWORD", "", doc="MQTT password")
    mqtt_password_file: str = env(
        "MQTT_PASSWORD_FILE", "",
        doc="file holding the MQTT password (a mounted Secret), read at every connect so a "
        "rotated password is used at the next reconnect; instead of MQTT_PASSWORD",
    )
    mqtt_tls: bool = env(
        "MQTT_TLS", False,
        doc="connect with TLS, verifying the broker's certificate and host name (on by "
        "itself when MQTT_CA_FILE is set)",
    )
    mqtt_ca_file: str = env(
        "MQTT_CA_FILE", "",
        doc="PEM file of the CA that signed the MQTT broker's certificate (empty: the "
        "system's CAs); turns MQTT_TLS on",
    )


@dataclass(frozen=True, kw_only=True)
class ValidationSettings:
    max_payload_bytes: int = env(
        "MAX_PAYLOAD_BYTES", 4096, doc="larger messages are rejected", minimum=64
    )
    max_future_s: int = env(
        "MAX_FUTURE_S", 300, doc="readings further ahead of the clock are rejected", minimum=0
    )

    def limits(self) -> Limits:
        return Limits(
            max_payload_bytes=self.max_payload_bytes,
            max_future=timedelta(seconds=self.max_future_s),
        )
