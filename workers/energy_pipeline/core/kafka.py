"""How every Kafka client reaches the brokers: address, protocol and SASL credentials, and
where librdkafka's own log lines and errors go.

One builder for the workers (from their environment) and the operator (from the spec and
its Secrets), so both connect the same way. What a client does on top (group, acks,
timeouts) its caller adds to the returned dict.

librdkafka logs a broker it cannot reach on every reconnect attempt: about 20 lines a second
for a consumer, 577 lines in 30 s for `topics create`, on stderr unless a logger is set.
Every client built here logs through the `librdkafka` logger with `ConnectionLogThrottle`:
one line when a broker's state changes (a new error, or an error after a quiet spell), then
at most one reminder a minute with the count of repeats. This module imports confluent_kafka
only inside functions: core.settings imports it, and not every command uses Kafka.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from energy_pipeline.core.errors import CommandError

LOGGER_NAME = "librdkafka"
# A repeated line is let through again after this long, with how often it was repeated.
REMIND_S = 60.0
# A broker with no line for this long is taken to have recovered: its next error is news.
QUIET_S = 30.0

# "[thrd:<thread>]: <broker>: <text>", librdkafka's layout of a log line's message; <broker>
# is `host:port/id` (or `.../bootstrap`).
_LINE = re.compile(r"^(?:\[thrd:[^\]]*\]: )?(?:(?P<broker>[^\s:]+:\d+/\w+): )?(?P<text>.*)$", re.S)
# What changes between two repeats of one state: timings, states, counts.
_VOLATILE = re.compile(r"\(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)"
                       r"|\d+")


@dataclass
class _Seen:
    state: str
    logged: float  # when a line of this key was last let through
    last: float  # when the last line of this key arrived
    repeated: int = 0  # lines dropped since `logged`


class ConnectionLogThrottle(logging.Filter):
    """A filter for the `librdkafka` logger: one line per broker state change.

    A line's key is (client, facility, broker); its state is its text without timings and
    counts. A line passes when its key is new, its state differs from the last one passed,
    its key was quiet for `quiet_s`, or `remind_s` passed since the last one passed (then it
    carries `repeated`, the number of lines dropped since). Thread-safe: librdkafka's lines
    arrive on whichever thread polls.
    """

    def __init__(
        self,
        remind_s: float = REMIND_S,
        quiet_s: float = QUIET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.remind_s = remind_s
        self.quiet_s = quiet_s
        self.clock = clock
        self._seen: dict[tuple[str, ...], _Seen] = {}
        self._lock = threading.Lock()

    @staticmethod
    def classify(record: logging.LogRecord) -> tuple[tuple[str, ...], str]:
        """(key, state) of a record: confluent-kafka logs `"%s [%s] %s" % (fac, client, msg)`."""
        args = record.args
        if isinstance(args, tuple) and len(args) == 3:
            facility, client, message = (str(a) for a in args)
        else:
            facility, client, message = "", "", record.getMessage()
        match = _LINE.match(message)
        broker = (match.group("broker") or "") if match else ""
        text = match.group("text") if match else message
        return (client, facility, broker), _VOLATILE.sub("#", text).strip()

    def filter(self, record: logging.LogRecord) -> bool:
        key, state = self.classify(record)
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if (
                seen is None
                or seen.state != state
                or now - seen.last >= self.quiet_s
                or now - seen.logged >= self.remind_s
            ):
                if seen is not None and seen.repeated:
                    record.repeated = seen.repeated
                self._seen[key] = _Seen(state, logged=now, last=now)
                return True
            seen.repeated += 1
            seen.last = now
            return False


def librdkafka_logger() -> logging.Logger:
    """The `librdkafka` logger, with the throttle installed (once)."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, ConnectionLogThrottle) for f in logger.filters):
        logger.addFilter(ConnectionLogThrottle())
    return logger


def log_error(error: Any) -> None:
    """librdkafka's `error_cb`: client errors (a broker down, all brokers down) as log lines of
    the `librdkafka` logger, so the throttle sees them; without it librdkafka logs each."""
    level = logging.ERROR if error.fatal() else logging.WARNING
    librdkafka_logger().log(level, "%s [%s] %s", "ERROR", error.name(), error.str())


# librdkafka errors that mean a broker answered and refused this client: the same settings
# will be refused again, so a worker stops with one line instead of retrying for ever. Only
# these texts: a broker that dies mid-handshake is an _SSL error too, and only a reason to
# wait.
_REFUSED = {"_AUTHENTICATION": "Authentication failed", "_SSL": "certificate verify failed"}
# "sasl_ssl://host:port/bootstrap: " before, "(after 12ms in state X)" after librdkafka's text.
_BROKER_PREFIX = re.compile(r"^\w+://[^\s/]+/\w+: ")
_AFTER = re.compile(
    r"\s*\(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)$")


def refusal(error: Any, bootstrap_servers: str, username: str = "",
            ca_file: str = "") -> CommandError | None:
    """The one-line error of a client the brokers refused (wrong password, wrong CA), naming
    the variables to fix; None for any other error."""
    if not hasattr(error, "name") or _REFUSED.get(error.name(), "\0") not in error.str():
        return None
    detail = _AFTER.sub("", _BROKER_PREFIX.sub("", error.str()))
    where = f"Kafka at KAFKA_BOOTSTRAP_SERVERS={bootstrap_servers}"
    if error.name() == "_AUTHENTICATION":
        return CommandError(
            f"{where} refused the login of KAFKA_SASL_USERNAME={username or '(unset)'} "
            f"({detail})",
            fix="check KAFKA_SASL_USERNAME and its password (KAFKA_SASL_PASSWORD_FILE or "
            "KAFKA_SASL_PASSWORD) against the users Secret the brokers read",
        )
    return CommandError(
        f"TLS with {where} failed, KAFKA_CA_FILE={ca_file or '(unset: system CAs)'} ({detail})",
        fix="set KAFKA_CA_FILE to the CA certificate that signed the brokers' certificates",
    )


@dataclass(eq=True)
class ClientErrors:
    """librdkafka's `error_cb` of one client: logs every error (`log_error`), a refusal as its
    one clear line, and keeps the last refusal for `raise_if_refused`.

    librdkafka calls it from the client's poll()/consume()/flush(), on the caller's thread.
    """

    bootstrap_servers: str = ""
    username: str = ""
    ca_file: str = ""
    refused: CommandError | None = field(default=None, compare=False)

    def __call__(self, error: Any) -> None:
        refused = refusal(error, self.bootstrap_servers, self.username, self.ca_file)
        if refused is None:
            log_error(error)
            return
        self.refused = refused
        librdkafka_logger().log(logging.ERROR, "%s [%s] %s", "ERROR", error.name(), str(refused))


def raise_if_refused(client: Any, config: dict[str, Any]) -> None:
    """Raise the refusal the client's `ClientErrors` saw, if any, after handing it the queued
    errors (`client.poll(0)`; None: a loop that polls anyway): a wrong password or CA ends a
    worker with one line, and its restart reads a rotated password again."""
    errors = config.get("error_cb")
    if not isinstance(errors, ClientErrors):
        return
    if errors.refused is None and client is not None:
        client.poll(0)
    if errors.refused is not None:
        raise errors.refused


def client_logging(bootstrap_servers: str = "", username: str = "",
                   ca_file: str = "") -> dict[str, Any]:
    """The log settings of every client: throttled lines through Python logging (JSON on
    stdout in the workers), none of librdkafka's own on stderr; refusals in one clear line."""
    return {"logger": librdkafka_logger(),
            "error_cb": ClientErrors(bootstrap_servers, username, ca_file)}


def client_config(
    bootstrap_servers: str,
    security_protocol: str = "PLAINTEXT",
    *,
    sasl_mechanism: str = "",
    sasl_username: str = "",
    sasl_password: str = "",
    ca_file: str = "",
    ca_pem: str = "",
) -> dict[str, Any]:
    """librdkafka's connection and log settings. No user name means no SASL
    (KAFKA_SASL_USERNAME); no CA means the system's CAs. The CA comes as a file
    (KAFKA_CA_FILE, the workers) or as PEM text (the operator, from the Secret)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "security.protocol": security_protocol,
        **client_logging(bootstrap_servers, sasl_username, ca_file),
    }
    if ca_file:
        config["ssl.ca.location"] = ca_file
    if ca_pem:
        config["ssl.ca.pem"] = ca_pem
    if sasl_username:
        config.update(
            {
                "sasl.mechanism": sasl_mechanism,
                "sasl.username": sasl_username,
                "sasl.password": sasl_password,
            }
        )
    return config


# What every producer of the pipeline asks of Kafka before it calls a record delivered (and the
# bridge acknowledges its MQTT message): all in-sync replicas hold it (with the topics'
# min.insync.replicas 2, both), retries write it once, and one request in flight per broker.
#
# Why one: librdkafka (rdkafka_request.c, rd_kafka_handle_idempotent_Produce_success)
# takes the success of a later request as proof that an earlier one, refused and waiting to be
# retried, was written after all, and reports the earlier records delivered ("implicit ack").
# A broker holding no state for a producer id accepts any first sequence number from it
# (KAFKA-15591), so a new producer (a bridge pod just started) whose first request to a
# partition is refused while a replica is away (NOT_ENOUGH_REPLICAS) and whose second one is
# accepted a moment later, the replica back in sync, gets the first request's records reported
# delivered though they were never written. That is our reading (from both projects' sources,
# not a reproduction) of a loss seen once: 2 of 7200 readings of the node fault test, both on
# one partition, while a broker restarted during a rolling update of the bridges. With one
# request in flight a refused request is retried before anything after it is sent, so no
# later request can succeed past it.
PRODUCER_GUARANTEES: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "max.in.flight.requests.per.connection": 1,
}


def read_secret_file(variable: str, path: str) -> str:
    """The content of a mounted Secret's file (`variable` names it), without the trailing
    newline an editor or `echo` adds; unreadable is a CommandError naming the variable."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except OSError as exc:
        raise CommandError(
            f"cannot read {variable}={path}: {exc.strerror or exc}",
            fix=f"mount the Secret there or set {variable} to the file that holds it",
        ) from exc


# librdkafka error codes that mean "no broker answered".
_UNREACHABLE = ("_TRANSPORT", "_TIMED_OUT", "_ALL_BROKERS_DOWN", "_RESOLVE")


def unreachable(bootstrap_servers: str, detail: str, waited_s: float | None = None
                ) -> CommandError:
    """The one-line error of a command that got no answer from KAFKA_BOOTSTRAP_SERVERS."""
    within = "" if waited_s is None else f" within {waited_s:g} s"
    return CommandError(
        f"no answer from Kafka at KAFKA_BOOTSTRAP_SERVERS={bootstrap_servers}{within} ({detail})",
        fix="start the brokers or set KAFKA_BOOTSTRAP_SERVERS to their host:port list",
    )


def check_reachable(client: Any, config: dict[str, Any], timeout_s: float = 10.0) -> None:
    """Raise `unreachable`, or the refusal (wrong password or CA), unless the cluster's
    metadata arrives within `timeout_s`; `config` is the client's (client_config).

    Commands call this first: librdkafka's admin requests otherwise wait 30 s or more on a
    cluster that is not there, and then say only TimeoutError.
    """
    from confluent_kafka import KafkaException

    try:
        client.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise_if_refused(client, config)
        raise unreachable(config["bootstrap.servers"], exc.args[0].str(), timeout_s) from exc


def as_command_error(exc: BaseException) -> CommandError | None:
    """The one-line form of an unreachable-cluster KafkaException a command did not handle."""
    kafka = sys.modules.get("confluent_kafka")
    if kafka is None or not isinstance(exc, kafka.KafkaException) or not exc.args:
        return None
    error = exc.args[0]
    if not hasattr(error, "name") or error.name() not in _UNREACHABLE:
        return None
    return unreachable(os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "(unset)"), error.str())
