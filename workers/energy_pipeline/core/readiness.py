"""Readiness that tells the truth: a worker is ready only while every dependency it needs has
answered recently, and /readyz says which one did not and why.

`Readiness` keeps, per dependency, when it last answered and what its latest outcome was;
its rules are pure functions of that state and an injected clock. `Prober` asks each
dependency on a thread of its own, so a check that hangs (a peer that vanished without
closing the connection) delays neither the other checks nor /readyz: the HTTP handler only
reads the tracker and never waits for a dependency.

Rules:
- a dependency is up while its latest outcome is an answer no older than its `stale_after`
  (None: a state that does not age, such as "MQTT subscription confirmed", kept current by
  the client's own callbacks and keepalive);
- a failure, or waiting for a (re)connection, makes it down at once, with that reason;
- a worker is ready while every required dependency is up; an optional one is reported in
  the detail and the metrics only (inference keeps serving the models it has loaded).

The staleness window: checks run every CHECK_INTERVAL_S, so a healthy dependency's answer is
at most a few seconds old. The pods' readinessProbe asks every 5 s with a 3 s timeout and
turns a pod unready after 2 failures (operator/energy_operator/render.py): with 15 s a
silent dependency makes the pod unready within about 25 s, while a few slow answers under
load do not make a whole Deployment flap.

Logs: one line when a dependency goes down (with the reason), one when it is back (with how
long it was away), and a reminder every REMIND_EVERY_S while it stays down, whatever the
retry rate. Metrics, read at scrape time: `energy_dependency_up{worker,dependency}` (1/0) and
`energy_ready{worker}` (1 while /readyz answers 200).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from energy_pipeline.core import metrics

log = logging.getLogger("energy_pipeline.readiness")

STALE_AFTER_S = 15.0
CHECK_INTERVAL_S = 3.0
# Each check gives up after this: below the probe's 3 s timeout plus the interval, so a
# refused or timed-out check is reported before the next probe.
CHECK_TIMEOUT_S = 3.0
REMIND_EVERY_S = 60.0
NO_ANSWER_YET = "no answer yet"

Clock = Callable[[], float]

_ANSWERED, _FAILED, _PENDING = "answered", "failed", "pending"


class Unready(Exception):
    """A dependency answered, but not in a way the worker can use (e.g. a topic is missing)."""


def describe(exc: BaseException) -> str:
    """One line saying why a check failed, without a stack trace."""
    err = exc.args[0] if exc.args else None
    # confluent_kafka's KafkaException carries a KafkaError, whose str() is the message.
    kafka_error = callable(getattr(err, "str", None))
    text = str(err.str() if kafka_error else exc).strip()  # type: ignore[union-attr]
    first = text.splitlines()[0].strip() if text else ""
    if not first or isinstance(exc, OSError):
        first = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return first[:300]


@dataclass
class _State:
    required: bool
    stale_after: float | None
    outcome: str = _PENDING
    reason: str = NO_ANSWER_YET
    answered_at: float | None = None
    # For the logs: the state last logged (None: nothing yet) and since when.
    logged_up: bool | None = None
    changed_at: float = 0.0
    reminded_at: float = 0.0


@dataclass(frozen=True)
class DependencyStatus:
    name: str
    up: bool
    required: bool
    reason: str  # why it is down; "" when up


def evaluate(name: str, state: _State, now: float) -> DependencyStatus:
    """Whether `state` is up at `now`, and if not, why (pure)."""
    if state.outcome == _ANSWERED and state.answered_at is not None:
        age = now - state.answered_at
        if state.stale_after is None or age <= state.stale_after:
            return DependencyStatus(name, True, state.required, "")
        return DependencyStatus(name, False, state.required, f"no answer for {age:.0f} s")
    reason = state.reason
    if state.answered_at is not None:
        reason = f"{reason} (last answer {now - state.answered_at:.0f} s ago)"
    return DependencyStatus(name, False, state.required, reason)


@dataclass(frozen=True)
class Status:
    dependencies: tuple[DependencyStatus, ...]

    @property
    def ready(self) -> bool:
        return all(d.up for d in self.dependencies if d.required)

    def of(self, name: str) -> DependencyStatus:
        return next(d for d in self.dependencies if d.name == name)

    @property
    def detail(self) -> str:
        """`ok`, or `<dependency>: <reason>` for each that is down, required ones first."""
        down = [d for d in self.dependencies if not d.up]
        down.sort(key=lambda d: not d.required)
        if not down:
            return "ok"
        text = "; ".join(f"{d.name}: {d.reason}" for d in down)
        return text if not self.ready else f"ok; {text}"


class Readiness:
    """The dependencies of one worker and when each last answered. Thread-safe."""

    def __init__(
        self,
        worker: str,
        *,
        clock: Clock = time.monotonic,
        logger: logging.Logger = log,
        remind_every: float = REMIND_EVERY_S,
    ) -> None:
        self.worker = worker
        self._clock = clock
        self._log = logger
        self._remind_every = remind_every
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}

    def add(
        self,
        name: str,
        *,
        required: bool = True,
        stale_after: float | None = STALE_AFTER_S,
        waiting_for: str = NO_ANSWER_YET,
    ) -> Readiness:
        """Track `name` (down until it first answers, saying `waiting_for`)."""
        with self._lock:
            self._states[name] = _State(
                required, stale_after, reason=waiting_for, changed_at=self._clock()
            )
        metrics.DEPENDENCY_UP.labels(self.worker, name).set_function(
            lambda: 1.0 if self.status().of(name).up else 0.0
        )
        return self

    # --- what the worker observed ------------------------------------------------------

    def answered(self, name: str) -> None:
        """`name` answered just now (a check passed, a write or a delivery succeeded)."""
        now = self._clock()
        with self._lock:
            state = self._states[name]
            state.outcome, state.answered_at = _ANSWERED, now

    def failed(self, name: str, reason: str) -> None:
        """`name` failed just now: down at once, with `reason` (one line)."""
        self._set(name, _FAILED, reason)

    def waiting(self, name: str, reason: str) -> None:
        """Down while a (re)connection is under way: not an error of its own, so a worker
        starting up logs nothing for it."""
        self._set(name, _PENDING, reason)

    def _set(self, name: str, outcome: str, reason: str) -> None:
        with self._lock:
            state = self._states[name]
            state.outcome = outcome
            state.reason = (reason.strip().splitlines() or [""])[0][:300] or outcome

    # --- what the worker reports ---------------------------------------------------------

    def status(self) -> Status:
        """Every dependency's state now; logs what changed since the last call."""
        now = self._clock()
        with self._lock:
            found = tuple(evaluate(n, s, now) for n, s in self._states.items())
            for dep in found:
                self._note(dep, self._states[dep.name], now)
        return Status(found)

    def check(self) -> tuple[bool, str]:
        """(ready, detail), in the form HealthServer's /readyz expects."""
        status = self.status()
        return status.ready, status.detail

    def _note(self, dep: DependencyStatus, state: _State, now: float) -> None:
        extra: dict[str, Any] = {"dependency": dep.name, "worker": self.worker}
        if dep.up == state.logged_up:
            if not dep.up and now - state.reminded_at >= self._remind_every:
                state.reminded_at = now
                self._log.warning(
                    "dependency still down",
                    extra={
                        **extra,
                        "reason": dep.reason,
                        "down_s": round(now - state.changed_at, 1),
                    },
                )
            return
        # Starting up, "no answer yet" or "connecting" is no news (unless it lasts); a
        # failure is.
        starting = state.logged_up is None and not dep.up and state.outcome != _FAILED
        if starting and now - state.changed_at < self._remind_every:
            return
        before, since = state.logged_up, state.changed_at
        state.logged_up, state.changed_at, state.reminded_at = dep.up, now, now
        if not dep.up:
            self._log.warning("dependency down", extra={**extra, "reason": dep.reason})
        elif before is False:
            self._log.info(
                "dependency answers again", extra={**extra, "down_s": round(now - since, 1)}
            )


def track_ready(worker: str, ready: Callable[[], tuple[bool, str]]) -> None:
    """`energy_ready{worker}`: 1 while `ready()` (the worker's /readyz answer) is true."""
    metrics.READY.labels(worker).set_function(lambda: 1.0 if ready()[0] else 0.0)


# --- checks ---------------------------------------------------------------------------------


class Prober:
    """Runs each dependency's check every `interval` seconds on a daemon thread of its own and
    records the outcome: a check returns (answered), raises `Unready` or any error (failed)."""

    def __init__(
        self,
        readiness: Readiness,
        checks: Mapping[str, Callable[[], object]],
        interval: float = CHECK_INTERVAL_S,
    ) -> None:
        self.readiness = readiness
        self.checks = dict(checks)
        self.interval = interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pending = len(self.checks)
        self._first_round = threading.Event()
        self._lock = threading.Lock()
        if not self.checks:
            self._first_round.set()

    def run_check(self, name: str) -> None:
        """One check of `name`, its outcome recorded."""
        try:
            self.checks[name]()
        except Exception as exc:  # every failure of a dependency is an answer of "no"
            self.readiness.failed(name, describe(exc))
        else:
            self.readiness.answered(name)
        self.readiness.status()  # logs a change at once, not at the next probe

    def _loop(self, name: str) -> None:
        first = True
        while not self._stop.is_set():
            self.run_check(name)
            if first:
                first = False
                with self._lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._first_round.set()
            self._stop.wait(self.interval)

    def start(self) -> Prober:
        for name in self.checks:
            thread = threading.Thread(
                target=self._loop, args=(name,), name=f"ready-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def wait_first_round(self, timeout: float) -> bool:
        """True once every check has run once (False if `timeout` passed first)."""
        return self._first_round.wait(timeout)

    def stop(self, timeout: float = CHECK_TIMEOUT_S + 1) -> None:
        """Stop checking and close what the checks hold; waits a little for checks under way
        (daemon threads: a hung one is left behind rather than delaying the worker's exit)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for name, thread in zip(self.checks, self._threads, strict=False):
            thread.join(max(0.0, deadline - time.monotonic()))
            close = getattr(self.checks[name], "close", None)
            if close is not None and not thread.is_alive():
                close()  # e.g. a DatabaseCheck's connection


class KafkaMetadataCheck:
    """Kafka answers: a broker returned the cluster metadata within the timeout, listing
    every topic in `topics`.

    Asks with a client the worker already has (librdkafka's metadata request is thread-safe
    next to produce/poll on another thread), for all topics: naming topics in the request
    could make a broker with auto.create.topics.enable create them.
    """

    def __init__(
        self,
        client: Any,
        bootstrap_servers: str,
        topics: Sequence[str] = (),
        timeout_s: float = CHECK_TIMEOUT_S,
        on_metadata: Callable[[Any], None] | None = None,
    ) -> None:
        self.client = client
        self.bootstrap_servers = bootstrap_servers
        self.topics = tuple(topics)
        self.timeout_s = timeout_s
        self.on_metadata = on_metadata

    def __call__(self) -> None:
        try:
            metadata = self.client.list_topics(timeout=self.timeout_s)
        except Exception as exc:  # KafkaException: no broker answered in time
            raise Unready(
                f"no broker of {self.bootstrap_servers} answered within {self.timeout_s:.0f} s"
                f" ({describe(exc)})"
            ) from exc
        if not metadata.brokers:
            raise Unready(f"the metadata from {self.bootstrap_servers} lists no broker")
        missing = [
            t
            for t in self.topics
            if t not in metadata.topics or metadata.topics[t].error is not None
        ]
        if missing:
            raise Unready(f"topic(s) missing: {', '.join(missing)}")
        if self.on_metadata is not None:
            self.on_metadata(metadata)
