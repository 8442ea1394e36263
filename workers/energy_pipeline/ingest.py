"""`energy-pipeline ingest`: Kafka to PostgreSQL, committing offsets only after the database.

Per batch: validate, send rejects to the dead-letter topic (confirmed), write the readings
and their hourly sums in one transaction, commit it, then commit the Kafka offsets. A crash
anywhere replays at most the batch, and the idempotent write absorbs the replay.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg2
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from energy_pipeline import metrics
from energy_pipeline.contracts import SENSOR_NAMES, Reading, deadletter_topic, kafka_topic
from energy_pipeline.db.writer import WriteResult, write_readings
from energy_pipeline.forecasting.scheduler import ForecastScheduler, ForecastSettings
from energy_pipeline.logs import configure_logging
from energy_pipeline.observability import HealthServer, Heartbeat
from energy_pipeline.settings import (
    CommonSettings,
    KafkaSettings,
    ValidationSettings,
    default_client_id,
    env,
    load,
)
from energy_pipeline.validation import Rejection, parse_kafka_value

log = logging.getLogger("energy_pipeline.ingest")


@dataclass(frozen=True, kw_only=True)
class IngestSettings(CommonSettings, KafkaSettings, ValidationSettings, ForecastSettings):
    database_url: str = env("DATABASE_URL", doc="PostgreSQL DSN, postgresql://user:pass@host/db")
    kafka_consumer_group: str = env("KAFKA_CONSUMER_GROUP", "ingest", doc="consumer group id")
    ingest_batch_size: int = env(
        "INGEST_BATCH_SIZE", 5000, doc="most records written per transaction", minimum=1
    )
    ingest_batch_max_wait_ms: int = env(
        "INGEST_BATCH_MAX_WAIT_MS", 250, doc="longest wait to fill a batch", minimum=1
    )
    kafka_session_timeout_ms: int = env(
        "KAFKA_SESSION_TIMEOUT_MS",
        45_000,
        doc="a silent consumer's partitions move to the others after this",
        minimum=1000,
    )
    db_retry_max_s: float = env(
        "DB_RETRY_MAX_S", 10.0, doc="longest pause between database retries", minimum=0.1
    )


def consumer_config(settings: IngestSettings) -> dict[str, object]:
    return {
        **settings.kafka_client_config(),
        "group.id": settings.kafka_consumer_group,
        "client.id": default_client_id(),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        # A database outage holds one batch while we retry; stay in the group meanwhile.
        "max.poll.interval.ms": 900_000,
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 100,
    }


def next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit after `messages`: one past the last of each partition."""
    highest: dict[tuple[str, int], int] = {}
    for msg in messages:
        key = (msg.topic(), msg.partition())
        highest[key] = max(highest.get(key, -1), msg.offset())
    return [TopicPartition(topic, part, offset + 1) for (topic, part), offset in highest.items()]


@dataclass
class Batch:
    messages: list[Message]
    readings: list[Reading]
    rejected: list[tuple[Message, Rejection]]


def split_batch(messages: Sequence[Message], now: datetime, settings: IngestSettings) -> Batch:
    limits = settings.limits()
    readings: list[Reading] = []
    rejected: list[tuple[Message, Rejection]] = []
    for msg in messages:
        result = parse_kafka_value(msg.value(), now, limits)
        if isinstance(result, Rejection):
            rejected.append((msg, result))
        else:
            readings.append(result)
    return Batch(list(messages), readings, rejected)


class Ingest:
    def __init__(
        self,
        settings: IngestSettings,
        on_written: Callable[[WriteResult], None] | None = None,
        forecasts: ForecastScheduler | None = None,
    ) -> None:
        self.settings = settings
        # Told about every committed batch; forecasts closed hours on its own thread.
        self.forecasts = forecasts
        self.topics = [kafka_topic(settings.kafka_topic_prefix, s) for s in SENSOR_NAMES]
        self.deadletter = deadletter_topic(settings.kafka_topic_prefix)
        self.consumer = Consumer(consumer_config(settings), logger=logging.getLogger("librdkafka"))
        self.producer = Producer(
            {
                **settings.kafka_client_config(),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )
        self.on_written = on_written
        self.heartbeat = Heartbeat(stale_after=120)
        self.stopping = threading.Event()
        self.conn: psycopg2.extensions.connection | None = None
        self.db_error: str | None = None
        self._last_lag = 0.0

    # --- database ----------------------------------------------------------------------

    def _connection(self) -> psycopg2.extensions.connection:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg2.connect(
                self.settings.database_url,
                application_name=f"ingest-{self.settings.pipeline_name}",
                connect_timeout=5,
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
        return self.conn

    def write_with_retry(self, readings: Sequence[Reading]) -> WriteResult | None:
        """Write until it succeeds; None only if asked to stop before it did."""
        delay = 0.2
        while True:
            try:
                conn = self._connection()
                with conn:
                    result = write_readings(conn, readings)
                self.db_error = None
                return result
            except psycopg2.Error as exc:
                self.db_error = str(exc).strip()[:300]
                metrics.ERRORS.labels("ingest", type(exc).__name__).inc()
                log.warning(
                    "database write failed; retrying",
                    extra={"error": str(exc).strip()[:300], "retry_in_s": delay},
                )
                if self.conn is not None and not self.conn.closed:
                    with contextlib.suppress(psycopg2.Error):
                        self.conn.close()
                self.conn = None
                self.heartbeat.beat()  # retrying is progress, not a hang
                if self.stopping.wait(delay):
                    return None
                delay = min(delay * 2, self.settings.db_retry_max_s)

    # --- Kafka -------------------------------------------------------------------------

    def dead_letter(self, rejected: Sequence[tuple[Message, Rejection]]) -> None:
        for msg, rejection in rejected:
            metrics.REJECTED.labels("ingest", rejection.reason.value).inc()
            log.info(
                "rejected",
                extra={
                    "reason": rejection.reason.value,
                    "detail": rejection.detail,
                    "topic": msg.topic(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                },
            )
            self.producer.produce(
                self.deadletter,
                key=msg.key(),
                value=msg.value(),
                headers=[
                    ("reason", rejection.reason.value.encode()),
                    ("detail", rejection.detail.encode()[:1000]),
                    ("source", b"kafka"),
                    ("source_topic", msg.topic().encode()),
                    ("source_partition", str(msg.partition()).encode()),
                    ("source_offset", str(msg.offset()).encode()),
                ],
            )
        # Rejects must be safely in the dead-letter topic before their offsets are committed.
        while self.producer.flush(5) > 0 and not self.stopping.is_set():
            log.warning("dead-letter topic not reachable yet; retrying")

    def commit(self, messages: Sequence[Message]) -> None:
        try:
            self.consumer.commit(offsets=next_offsets(messages), asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partitions: their new owner replays from the last
            # committed offset and the idempotent write absorbs the replay.
            metrics.ERRORS.labels("ingest", "commit").inc()
            log.warning("offset commit failed", extra={"error": str(exc)})

    def update_lag(self) -> None:
        if time.monotonic() - self._last_lag < 5:
            return
        self._last_lag = time.monotonic()
        try:
            assignment = self.consumer.assignment()
            positions = self.consumer.position(assignment) if assignment else []
            for tp in positions:
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and high >= 0:
                    metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                        max(0, high - tp.offset)
                    )
        except KafkaException as exc:
            log.debug("lag not available", extra={"error": str(exc)})

    # --- main loop ---------------------------------------------------------------------

    def process(self, messages: Sequence[Message]) -> bool:
        """One batch end to end; False if stopped before the database took it."""
        started = time.monotonic()
        batch = split_batch(messages, datetime.now(UTC), self.settings)
        if batch.rejected:
            self.dead_letter(batch.rejected)
        if batch.readings:
            result = self.write_with_retry(batch.readings)
            if result is None:
                return False
            metrics.WRITTEN.inc(result.inserted)
            metrics.DUPLICATES.inc(result.duplicates)
            if self.on_written is not None:
                self.on_written(result)
            if self.forecasts is not None:
                self.forecasts.observe(batch.readings)
        self.commit(batch.messages)
        metrics.BATCH_SECONDS.labels("ingest").observe(time.monotonic() - started)
        return True

    def run(self) -> int:
        self.consumer.subscribe(self.topics)
        wait_s = self.settings.ingest_batch_max_wait_ms / 1000
        try:
            while not self.stopping.is_set():
                self.heartbeat.beat()
                polled = self.consumer.consume(self.settings.ingest_batch_size, timeout=wait_s)
                messages = []
                for msg in polled:
                    err = msg.error()
                    if err is None:
                        messages.append(msg)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        metrics.ERRORS.labels("ingest", "consume").inc()
                        log.warning("consume error", extra={"error": str(err)})
                if messages:
                    metrics.RECEIVED.labels("ingest").inc(len(messages))
                    if not self.process(messages):
                        break
                self.update_lag()
        finally:
            log.info("stopping: leaving the consumer group")
            self.consumer.close()
            self.producer.flush(10)
            if self.conn is not None:
                self.conn.close()
        return 0

    def ready(self) -> tuple[bool, str]:
        if self.db_error is not None:
            return False, f"database: {self.db_error}"
        return True, "ok"


def run(args: argparse.Namespace) -> int:
    settings = load(IngestSettings)
    configure_logging("ingest", settings.pipeline_name, settings.log_level)
    forecasts = None
    if settings.inference_target:
        forecasts = ForecastScheduler(
            settings,
            settings.database_url,
            application_name=f"ingest-forecasts-{settings.pipeline_name}",
        )
    ingest = Ingest(settings, forecasts=forecasts)
    signal.signal(signal.SIGTERM, lambda *_: ingest.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: ingest.stopping.set())
    health = HealthServer(settings.http_port, ingest.heartbeat, ingest.ready).start()
    log.info(
        "ingest starting",
        extra={
            "pid": os.getpid(),
            "group": settings.kafka_consumer_group,
            "http_port": health.port,
            "inference_target": settings.inference_target or None,
        },
    )
    if forecasts is not None:
        forecasts.start()
    try:
        return ingest.run()
    finally:
        if forecasts is not None:
            forecasts.stop()
        health.stop()


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser("ingest", help="store Kafka readings in PostgreSQL, exactly once")
    p.set_defaults(func=run)
