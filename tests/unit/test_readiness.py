"""The readiness tracker's rules (core/readiness.py), on a hand-driven clock: up only while the
latest answer is fresh, down at once on a failure, one log line per change plus reminders,
the metrics; the prober's threads and the Kafka metadata check with stand-in clients."""

from __future__ import annotations

import logging
import threading
import uuid
from types import SimpleNamespace

import pytest
from energy_harness.testing import wait_for
from energy_pipeline.core.readiness import (
    NO_ANSWER_YET,
    KafkaMetadataCheck,
    Prober,
    Readiness,
    Unready,
    describe,
    track_ready,
)
from prometheus_client import REGISTRY

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def tracker(clock: Clock, **deps: dict[str, object]) -> Readiness:
    # A worker name of its own per test: the metrics are process-wide.
    readiness = Readiness(f"w{uuid.uuid4().hex[:6]}", clock=clock)
    for name, options in deps.items():
        readiness.add(name, **options)  # type: ignore[arg-type]
    return readiness


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.getMessage(), getattr(r, "dependency", ""))
        for r in caplog.records
        if r.name == "energy_pipeline.readiness"
    ]


def test_unready_until_every_required_dependency_answered(clock: Clock) -> None:
    readiness = tracker(clock, kafka={}, database={})
    assert readiness.check() == (False, f"kafka: {NO_ANSWER_YET}; database: {NO_ANSWER_YET}")
    readiness.answered("kafka")
    assert readiness.check() == (False, f"database: {NO_ANSWER_YET}")
    readiness.answered("database")
    assert readiness.check() == (True, "ok")


def test_an_answer_goes_stale_after_the_window(clock: Clock) -> None:
    readiness = tracker(clock, database={"stale_after": 15.0})
    readiness.answered("database")
    clock.advance(15)
    assert readiness.check() == (True, "ok")
    clock.advance(2)
    assert readiness.check() == (False, "database: no answer for 17 s")
    readiness.answered("database")
    assert readiness.check() == (True, "ok")


def test_a_failure_is_unready_at_once_with_its_reason(clock: Clock) -> None:
    readiness = tracker(clock, database={})
    readiness.answered("database")
    clock.advance(4)
    readiness.failed("database", "connection refused\n\tIs the server running?")
    assert readiness.check() == (False, "database: connection refused (last answer 4 s ago)")
    clock.advance(1)
    readiness.answered("database")
    assert readiness.check() == (True, "ok")


def test_a_state_that_does_not_age(clock: Clock) -> None:
    readiness = tracker(clock, mqtt={"stale_after": None, "waiting_for": "not connected yet"})
    assert readiness.check() == (False, "mqtt: not connected yet")
    readiness.waiting("mqtt", "subscription not confirmed yet")
    assert readiness.check() == (False, "mqtt: subscription not confirmed yet")
    readiness.answered("mqtt")
    clock.advance(86_400)
    assert readiness.check() == (True, "ok")
    readiness.failed("mqtt", "connection lost")
    assert not readiness.check()[0]


def test_an_optional_dependency_is_reported_but_does_not_gate(clock: Clock) -> None:
    readiness = tracker(clock, registry={"required": False}, kafka={})
    readiness.answered("kafka")
    readiness.failed("registry", "refused")
    status = readiness.status()
    assert status.ready and status.detail == "ok; registry: refused"
    assert not status.of("registry").up and status.of("kafka").up
    clock.advance(20)  # kafka stale: required ones come first in the detail
    assert readiness.check() == (False, "kafka: no answer for 20 s; registry: refused")


def test_one_log_line_per_change_and_a_reminder_while_down(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="energy_pipeline.readiness")
    readiness = tracker(clock, database={})
    readiness.status()
    readiness.answered("database")
    for _ in range(10):  # a healthy dependency logs nothing
        clock.advance(3)
        readiness.answered("database")
        readiness.status()
    assert messages(caplog) == []
    for _ in range(20):  # down, checked every 3 s for a minute: one line
        clock.advance(3)
        readiness.failed("database", "connection refused")
        readiness.status()
    assert messages(caplog) == [("dependency down", "database")]
    down = next(r for r in caplog.records if r.getMessage() == "dependency down")
    assert down.reason == "connection refused (last answer 3 s ago)"  # type: ignore[attr-defined]
    clock.advance(3)  # 60 s after the change: a reminder
    readiness.status()
    assert messages(caplog)[-1] == ("dependency still down", "database")
    clock.advance(3)
    readiness.answered("database")
    readiness.status()
    readiness.status()
    assert messages(caplog) == [
        ("dependency down", "database"),
        ("dependency still down", "database"),
        ("dependency answers again", "database"),
    ]
    back = caplog.records[-1]
    assert back.down_s == 63.0  # type: ignore[attr-defined]


def test_silence_counts_as_down_in_the_log_too(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="energy_pipeline.readiness")
    readiness = tracker(clock, kafka={})
    readiness.answered("kafka")
    readiness.status()
    clock.advance(16)  # a check that hangs never fails: staleness is the news
    readiness.status()
    assert messages(caplog) == [("dependency down", "kafka")]


def test_starting_up_is_no_news_unless_it_fails_or_lasts(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="energy_pipeline.readiness")
    connecting = tracker(clock, mqtt={"stale_after": None}, kafka={})
    connecting.waiting("mqtt", "subscription not confirmed yet")
    connecting.status()
    assert messages(caplog) == []
    connecting.answered("mqtt")
    connecting.answered("kafka")
    connecting.status()
    assert messages(caplog) == []  # first answers are not "back" either
    refused = tracker(clock, database={})
    refused.failed("database", "connection refused")
    refused.status()
    assert messages(caplog) == [("dependency down", "database")]
    caplog.clear()
    hung = tracker(clock, kafka={})
    clock.advance(59)
    hung.status()
    assert messages(caplog) == []
    clock.advance(2)  # a first check that never returns is news after a while
    hung.status()
    assert messages(caplog) == [("dependency down", "kafka")]


def test_metrics_follow_the_state(clock: Clock) -> None:
    readiness = tracker(clock, kafka={}, database={})
    worker = readiness.worker
    track_ready(worker, readiness.check)

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"worker": worker, **labels})

    assert sample("energy_dependency_up", dependency="kafka") == 0.0
    assert sample("energy_ready") == 0.0
    readiness.answered("kafka")
    readiness.answered("database")
    assert sample("energy_dependency_up", dependency="kafka") == 1.0
    assert sample("energy_ready") == 1.0
    clock.advance(16)
    assert sample("energy_dependency_up", dependency="database") == 0.0
    assert sample("energy_ready") == 0.0


def test_describe_gives_one_line() -> None:
    class KafkaError:
        def str(self) -> str:
            return "Failed to get metadata: Local: Broker transport failure"

    assert describe(Exception(KafkaError())) == (
        "Failed to get metadata: Local: Broker transport failure"
    )
    assert describe(ValueError('connection to server at "db" failed\n\tIs it running?')) == (
        'connection to server at "db" failed'
    )
    assert describe(ConnectionRefusedError(111, "Connection refused")) == (
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
    assert describe(TimeoutError()) == "TimeoutError"


def metadata(topics: dict[str, object], brokers: int = 3) -> SimpleNamespace:
    return SimpleNamespace(brokers={i: object() for i in range(brokers)}, topics=topics)


class Client:
    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.calls: list[float] = []

    def list_topics(self, timeout: float) -> object:
        self.calls.append(timeout)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_kafka_metadata_check() -> None:
    ok = SimpleNamespace(error=None)
    seen: list[object] = []
    answer = metadata({"e.temperature": ok, "e.deadletter": ok})
    client = Client(answer)
    KafkaMetadataCheck(client, "k:9092", ["e.temperature"], on_metadata=seen.append)()
    assert seen == [answer] and client.calls == [3.0]  # all topics asked, with a timeout
    missing = metadata({"e.temperature": SimpleNamespace(error="UNKNOWN_TOPIC")})
    with pytest.raises(Unready, match=r"topic\(s\) missing: e\.temperature, e\.deadletter"):
        KafkaMetadataCheck(Client(missing), "k:9092", ["e.temperature", "e.deadletter"])()
    with pytest.raises(Unready, match="lists no broker"):
        KafkaMetadataCheck(Client(metadata({}, brokers=0)), "k:9092")()
    with pytest.raises(Unready, match=r"no broker of k:9092 answered within 3 s \(timed out\)"):
        KafkaMetadataCheck(Client(RuntimeError("timed out")), "k:9092")()


def test_prober_records_each_check_on_its_own_thread(clock: Clock) -> None:
    readiness = tracker(clock, kafka={}, database={}, mqtt={})
    release = threading.Event()
    closed: list[str] = []

    class Hangs:
        def __call__(self) -> None:
            release.wait(30)

        def close(self) -> None:
            closed.append("kafka")

    def refused() -> None:
        raise Unready("connection refused")

    prober = Prober(
        readiness,
        {"kafka": Hangs(), "database": refused, "mqtt": lambda: None},
        interval=0.05,
    )
    prober.start()
    try:
        # The hung check holds back neither the others nor /readyz.
        wait_for(
            lambda: readiness.status().of("mqtt").up
            and readiness.status().of("database").reason == "connection refused",
            timeout=10,
            what="the checks that do answer",
        )
        assert readiness.status().of("kafka").reason == NO_ANSWER_YET
        assert not prober.wait_first_round(0)
        release.set()
        assert prober.wait_first_round(10)
        assert readiness.status().of("kafka").up
    finally:
        release.set()
        prober.stop(timeout=10)
    assert closed == ["kafka"]
