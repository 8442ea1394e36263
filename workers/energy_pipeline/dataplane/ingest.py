"""`energy-pipeline ingest`: Kafka to PostgreSQL, committing offsets only after the database.

Per batch: validate, send rejects to the dead-letter topic (confirmed), write the readings
and their hourly sums in one transaction, commit it, then commit the Kafka offsets. A crash
anywhere replays at most the uncommitted batches, and the idempotent write absorbs the replay.

A database error is retried forever (a stall, never a loss), but it is not hidden: from the
first failed write until one succeeds the worker is unready (`writes`, which the periodic
database check cannot clear: a revoked privilege or a full disk leaves `SELECT 1` working),
`energy_ingest_write_stalled_seconds` counts up, and the log says why once a minute.

Records Kafka deleted before they were stored (retention ran out during a long database
outage; `auto.offset.reset=earliest` then moves on) are found by their offsets, which our
topics keep contiguous (neither compacted nor written in transactions): per partition, the
next offset expected is the committed one at assignment, then one past the last consumed; a
batch that starts beyond it, or has holes, reveals exactly which offsets are gone. Each gap
is logged as an error, counted in `energy_ingest_lost_records_total` and recorded in the
table `ingest_lost_records` in the transaction of the batch that revealed it.

The database knows where it stands in Kafka: each batch's transaction also records, per
partition, one past its last offset (`ingest_offsets`). A partition newly assigned starts
from there when that is behind Kafka's committed offset (the database was restored from a
backup, or a failover lost its newest commits), so Kafka replays exactly what the database
lacks, and the idempotent write absorbs any overlap.

Pipelined: a writer thread writes batch N while the main thread consumes and validates batch
N+1 (psycopg2 releases the GIL while PostgreSQL works). Kafka calls stay on the main thread;
offsets are committed batch by batch in order, each only after its database transaction.
Before partitions are given up in a rebalance, and before stopping, every batch in flight is
finished and its offsets committed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg2
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from energy_pipeline.core import metrics
from energy_pipeline.core.contracts import (
    SENSOR_NAMES,
    Reading,
    WeatherForecast,
    deadletter_topic,
    kafka_topic,
    weather_topic,
)
from energy_pipeline.core.kafka import PRODUCER_GUARANTEES, raise_if_refused
from energy_pipeline.core.logs import configure_logging
from energy_pipeline.core.observability import HealthServer, Heartbeat
from energy_pipeline.core.readiness import KafkaMetadataCheck, Prober, Readiness, track_ready
from energy_pipeline.core.settings import (
    CommonSettings,
    KafkaSettings,
    ValidationSettings,
    default_client_id,
    env,
    environment_help,
    http_port_field,
    load,
)
from energy_pipeline.core.validation import Rejection, parse_weather_kafka_value
from energy_pipeline.core.validation_fast import parse_kafka_values
from energy_pipeline.dataplane.forecast_scheduler import ForecastScheduler, ForecastSettings
from energy_pipeline.db.connect import (
    DatabaseSettings,
    LazyConnection,
    connect,
    connection_trouble,
    worker_name,
)
from energy_pipeline.db.probe import DatabaseCheck
from energy_pipeline.db.writer import (
    Gap,
    PreparedBatch,
    WriteResult,
    prepare,
    record_gaps,
    record_offsets,
    stored_offsets,
    write_prepared,
    write_weather,
)

log = logging.getLogger("energy_pipeline.dataplane.ingest")


@dataclass(frozen=True, kw_only=True)
class IngestSettings(
    CommonSettings, KafkaSettings, ValidationSettings, ForecastSettings, DatabaseSettings
):
    http_port: int = http_port_field(9102)
    kafka_consumer_group: str = env("KAFKA_CONSUMER_GROUP", "ingest", doc="consumer group id")
    ingest_batch_size: int = env(
        "INGEST_BATCH_SIZE", 20_000, doc="most records written per transaction", minimum=1
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


def dead_letter_producer_config(settings: IngestSettings) -> dict[str, object]:
    """The dead-letter producer's: a reject's offset is committed once Kafka confirmed it."""
    return {**settings.kafka_client_config(), **PRODUCER_GUARANTEES, "linger.ms": 5}


def next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit after `messages`: one past the last of each partition."""
    highest: dict[tuple[str, int], int] = {}
    for msg in messages:
        key = (msg.topic(), msg.partition())
        highest[key] = max(highest.get(key, -1), msg.offset())
    return [TopicPartition(topic, part, offset + 1) for (topic, part), offset in highest.items()]


def find_gaps(messages: Sequence[Message], expected: dict[tuple[str, int], int]) -> list[Gap]:
    """Offsets missing before or between `messages` (in consume order), given the next offset
    expected per partition (unknown partitions are not checked); `expected` moves past them."""
    gaps: list[Gap] = []
    for msg in messages:
        key = (msg.topic(), msg.partition())
        offset = msg.offset()
        want = expected.get(key)
        if want is not None and offset > want:
            gaps.append(Gap(key[0], key[1], want, offset - 1))
        expected[key] = offset + 1
    return gaps


@dataclass
class Batch:
    messages: list[Message]
    readings: list[Reading]
    rejected: list[tuple[Message, Rejection]]
    gaps: list[Gap] = field(default_factory=list)
    weather: list[WeatherForecast] = field(default_factory=list)

    def next_offsets(self) -> list[tuple[str, int, int]]:
        return [(tp.topic, tp.partition, tp.offset) for tp in next_offsets(self.messages)]


@dataclass
class InFlight:
    """A batch handed to the writer thread; its offsets are committed when it is done."""

    batch: Batch
    started: float
    write: Future[WriteResult | None]


def split_batch(messages: Sequence[Message], now: datetime, settings: IngestSettings) -> Batch:
    limits = settings.limits()
    # Forecast weather is a few records an hour beside thousands of readings: picked out
    # first, so the readings' hot loop stays as it is.
    forecasts_topic = weather_topic(settings.kafka_topic_prefix)
    records = [msg for msg in messages if msg.topic() != forecasts_topic]
    weather: list[WeatherForecast] = []
    rejected: list[tuple[Message, Rejection]] = []
    if len(records) < len(messages):
        for msg in messages:
            if msg.topic() == forecasts_topic:
                forecast = parse_weather_kafka_value(msg.value(), now, limits)
                if isinstance(forecast, Rejection):
                    rejected.append((msg, forecast))
                else:
                    weather.append(forecast)
    results = parse_kafka_values([msg.value() for msg in records], now, limits)
    readings: list[Reading] = []
    keep = readings.append
    for msg, result in zip(records, results, strict=True):
        if type(result) is Rejection:
            rejected.append((msg, result))
        else:
            keep(result)
    return Batch(list(messages), readings, rejected, weather=weather)


class Ingest:
    # Batches handed to the writer thread at most: one being written, one waiting, so the
    # database never waits for the main thread to commit offsets or validate the next batch.
    MAX_IN_FLIGHT = 2

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
        self.topics.append(weather_topic(settings.kafka_topic_prefix))
        self.deadletter = deadletter_topic(settings.kafka_topic_prefix)
        self.kafka_config = {**consumer_config(settings), "on_commit": self._on_commit}
        self.consumer = Consumer(self.kafka_config, logger=logging.getLogger("librdkafka"))
        self.producer = Producer(dead_letter_producer_config(settings))
        self.on_written = on_written
        self.heartbeat = Heartbeat(stale_after=120)
        self.stopping = threading.Event()
        self.db = LazyConnection(
            settings.database_dsn(), application_name=worker_name("ingest", settings.pipeline_name)
        )
        # Ready while Kafka and PostgreSQL both answered recently: each is checked on a thread
        # of its own, and the consume loop and the writer report what they see.
        self.readiness = (
            Readiness("ingest").add("kafka").add("database").add("writes", stale_after=None)
        )
        self.readiness.answered("writes")  # nothing failed yet
        self.prober = Prober(
            self.readiness,
            {
                # The dead-letter producer asks: thread-safe, unlike parts of the consumer,
                # which the main thread closes while this may still run.
                "kafka": KafkaMetadataCheck(
                    self.producer,
                    settings.kafka_bootstrap_servers,
                    [*self.topics, self.deadletter],
                ),
                "database": DatabaseCheck(
                    settings.database_dsn(),
                    application_name=worker_name("ingest-ready", settings.pipeline_name),
                ),
            },
        )
        self._write_failures = 0
        self._write_warned_at = 0.0
        self._failing_since: float | None = None
        metrics.WRITE_STALLED_SECONDS.set_function(self._stalled_seconds)
        # Per owned partition, the next offset expected (find_gaps): main thread only.
        self._expected: dict[tuple[str, int], int] = {}
        self._last_lag = 0.0
        # The database connection is the writer thread's alone.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer")
        self._in_flight: deque[InFlight] = deque()
        # Per owned partition, the offset after the last batch in the database: committed
        # again if a commit failed (typically during a rebalance), so the committed offset
        # does not stay behind until the partition's next message.
        self._finished: dict[tuple[str, int], int] = {}
        self._commit_again_at: float | None = None

    # --- database (on the writer thread) ------------------------------------------------

    def write_with_retry(self, batch: PreparedBatch, gaps: Sequence[Gap] = (),
                         offsets: Sequence[tuple[str, int, int]] = (),
                         weather: Sequence[WeatherForecast] = ()) -> WriteResult | None:
        """Write until it succeeds; None only if asked to stop before it did. Readings,
        forecast weather, gaps and offsets go in one transaction: all of a batch or none."""
        delay = 0.2
        group = self.settings.kafka_consumer_group
        while True:
            try:
                conn = self.db.get()
                with conn:
                    result = write_prepared(conn, batch)  # an empty batch writes nothing
                    weather_hours = write_weather(conn, weather)
                    record_gaps(conn, group, gaps)
                    record_offsets(conn, group, offsets)
                metrics.WEATHER_WRITTEN.inc(weather_hours)
                self.readiness.answered("database")
                self.readiness.answered("writes")
                self._write_failures = 0
                self._failing_since = None
                return result
            except psycopg2.Error as exc:
                error = str(exc).strip()[:300]
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                self.readiness.failed("writes", error)
                metrics.ERRORS.labels("ingest", type(exc).__name__).inc()
                self._warn_write_failed(error, delay, exc.pgcode)
                self.db.close()
                self.heartbeat.beat()  # retrying is progress, not a hang
                if self.stopping.wait(delay):
                    return None
                delay = min(delay * 2, self.settings.db_retry_max_s)

    def _stalled_seconds(self) -> float:
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    def _warn_write_failed(self, error: str, retry_in_s: float, sqlstate: str | None) -> None:
        """The first failure of a streak, then one line a minute: retries are counted in
        energy_errors_total, and the readiness log says when the database is back."""
        self._write_failures += 1
        now = time.monotonic()
        if self._write_failures > 1 and now - self._write_warned_at < 60:
            log.debug("database write failed; retrying", extra={"error": error})
            return
        self._write_warned_at = now
        extra = {"error": error, "sqlstate": sqlstate, "attempts": self._write_failures,
                 "retry_in_s": retry_in_s, "stalled_s": round(self._stalled_seconds(), 1)}
        if sqlstate is not None and not connection_trouble(sqlstate):
            # The server answered and refused (privileges, schema, disk): waiting alone will
            # not fix it.
            log.error("the database refuses the write; retrying until it is fixed", extra=extra)
        else:
            log.warning("database write failed; retrying", extra=extra)

    # --- Kafka -------------------------------------------------------------------------

    def dead_letter(self, rejected: Sequence[tuple[Message, Rejection]]) -> bool:
        """Rejects into the dead-letter topic; True once Kafka confirmed every one of them,
        False if asked to stop before."""
        for _msg, rejection in rejected:
            metrics.REJECTED.labels("ingest", rejection.reason.value).inc()
        pending = list(rejected)
        while pending:
            failed: list[tuple[Message, Rejection]] = []
            for msg, rejection in pending:
                self._produce_dead_letter(msg, rejection, failed)
            # Rejects must be safely in the dead-letter topic before their offsets are
            # committed: wait for every delivery, and send again what failed.
            while self.producer.flush(5) > 0:
                if self.stopping.is_set():
                    return False
                log.warning("dead-letter topic not reachable yet; retrying")
            if failed and self.stopping.wait(1):
                return False
            pending = failed
        return True

    def _produce_dead_letter(
        self, msg: Message, rejection: Rejection, failed: list[tuple[Message, Rejection]]
    ) -> None:
        def delivered(err: KafkaError | None, _record: Message) -> None:
            if err is not None:
                metrics.ERRORS.labels("ingest", "deadletter").inc()
                log.warning("dead-letter delivery failed; sending again", extra={"error": str(err)})
                failed.append((msg, rejection))

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
        while True:
            try:
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
                    on_delivery=delivered,
                )
                return
            except BufferError:
                self.producer.poll(0.1)

    def commit(self, messages: Sequence[Message], asynchronous: bool = False) -> None:
        """Commit the offsets after `messages` (which are in the database)."""
        offsets = next_offsets(messages)
        for tp in offsets:
            self._finished[(tp.topic, tp.partition)] = tp.offset
        self._commit(offsets, asynchronous)

    def commit_finished(
        self, partitions: Sequence[TopicPartition] | None = None, asynchronous: bool = False
    ) -> None:
        """Commit again what is finished, of `partitions` (default: all we own)."""
        owned = self.consumer.assignment() if partitions is None else partitions
        offsets = [
            TopicPartition(tp.topic, tp.partition, self._finished[(tp.topic, tp.partition)])
            for tp in owned
            if (tp.topic, tp.partition) in self._finished
        ]
        if offsets:
            self._commit(offsets, asynchronous)

    def _commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        try:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:
            # Typically a rebalance took the partitions: their new owner replays from the last
            # committed offset and the idempotent write absorbs the replay.
            metrics.ERRORS.labels("ingest", "commit").inc()
            log.warning("offset commit failed", extra={"error": str(exc)})

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        # Asynchronous commits report here, from consume() on the main thread.
        failed = err or next((tp.error for tp in partitions if tp.error is not None), None)
        if failed is not None:
            metrics.ERRORS.labels("ingest", "commit").inc()
            log.warning("offset commit failed; committing again", extra={"error": str(failed)})
            if self._commit_again_at is None:
                self._commit_again_at = time.monotonic() + 1

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

    # --- the pipeline ------------------------------------------------------------------

    def submit(self, batch: Batch, started: float) -> None:
        """Hand a validated batch to the writer thread (it writes batches in order)."""
        # COPY text and hourly sums made here: the writer thread only waits on PostgreSQL.
        # (A batch of rejects only is written too: its offsets move on in the database.)
        write = self._writer.submit(
            self.write_with_retry, prepare(batch.readings), batch.gaps, batch.next_offsets(),
            batch.weather,
        )
        self._in_flight.append(InFlight(batch, started, write))

    def finish_oldest(self, asynchronous: bool = False) -> bool:
        """Wait for the oldest batch in flight to be in the database, then commit its offsets
        (without waiting for Kafka to confirm if `asynchronous`: commits go out in order).

        False if stopped before the database took it: nothing after it is committed then.
        """
        done = self._in_flight.popleft()
        result = done.write.result()  # a bug on the writer thread surfaces here
        if result is None:
            self._in_flight.clear()
            return False
        metrics.WRITTEN.inc(result.inserted)
        metrics.DUPLICATES.inc(result.duplicates)
        if self.on_written is not None:
            self.on_written(result)
        if self.forecasts is not None:
            self.forecasts.observe(done.batch.readings)
        self.commit(done.batch.messages, asynchronous)
        metrics.BATCH_SECONDS.labels("ingest").observe(time.monotonic() - done.started)
        return True

    def finish_all(self, asynchronous: bool = False) -> bool:
        """Every batch in flight into the database and its offsets committed, in order."""
        while self._in_flight:
            if not self.finish_oldest(asynchronous):
                return False
        return True

    def process(self, messages: Sequence[Message]) -> bool:
        """Validate a batch and hand it to the writer; False if stopped before the database
        took it (or an earlier batch)."""
        started = time.monotonic()
        batch = split_batch(messages, datetime.now(UTC), self.settings)
        batch.gaps = find_gaps(messages, self._expected)
        for gap in batch.gaps:
            self.report_gap(gap)
        if batch.rejected and not self.dead_letter(batch.rejected):
            self.finish_all()
            return False
        self.submit(batch, started)
        while len(self._in_flight) > self.MAX_IN_FLIGHT - 1:
            if not self.finish_oldest(asynchronous=True):
                return False
        return True

    def report_gap(self, gap: Gap) -> None:
        metrics.LOST_RECORDS.labels(gap.topic, str(gap.partition)).inc(gap.records)
        log.error(
            "records lost: Kafka deleted them before they were stored (retention shorter "
            "than the outage); recorded in ingest_lost_records",
            extra={"topic": gap.topic, "partition": gap.partition, "first_offset": gap.first,
                   "last_offset": gap.last, "records": gap.records},
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Where each new partition goes on: Kafka's committed offset, or the database's own
        # where that is behind (restored, or a failover lost commits): see the module's doc.
        try:
            committed = {(tp.topic, tp.partition): tp.offset
                         for tp in consumer.committed(partitions, timeout=10)}
        except KafkaException as exc:
            log.warning("committed offsets unknown; gaps at the start of these partitions "
                        "go unnoticed", extra={"error": str(exc)})
            committed = {}
        stored = self._stored_offsets()
        start = []
        for tp in partitions:
            key = (tp.topic, tp.partition)
            kafka, ours = committed.get(key, -1), stored.get(key)
            offset = tp.offset
            # (No committed offset: a new group, or topics made anew, whose offsets start
            # over; the database's would skip records then, so only Kafka's count.)
            if ours is not None and 0 <= ours < kafka:
                log.warning(
                    "the database is behind Kafka's committed offset (restored from a backup?); "
                    "replaying from the database's own",
                    extra={"topic": tp.topic, "partition": tp.partition, "committed": kafka,
                           "stored": ours, "replay": max(0, kafka - ours)},
                )
                offset = ours
            if offset >= 0 or kafka >= 0:
                self._expected[key] = offset if offset >= 0 else kafka
            start.append(TopicPartition(tp.topic, tp.partition, offset))
        consumer.incremental_assign(start)

    def _stored_offsets(self) -> dict[tuple[str, int], int]:
        """The database's ingest_offsets of our group; {} if it cannot be read just now (then
        partitions start from Kafka's committed offsets)."""
        try:
            conn = connect(self.settings.database_dsn(),
                           application_name=worker_name("ingest", self.settings.pipeline_name))
            try:
                with conn:
                    return stored_offsets(conn, self.settings.kafka_consumer_group)
            finally:
                conn.close()
        except psycopg2.Error as exc:
            log.warning("the database's offsets are unknown; starting from Kafka's committed ones",
                        extra={"error": str(exc).strip()[:300]})
            return {}

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Runs inside consume(): everything consumed so far is in flight. Finish it and commit
        # (and wait for Kafka to confirm) while the partitions are still ours, so their next
        # owner starts right after it.
        log.info("partitions revoked", extra={"partitions": len(partitions)})
        self.finish_all()
        if self._commit_again_at is not None:
            self.commit_finished(partitions)
        for tp in partitions:
            self._finished.pop((tp.topic, tp.partition), None)
            self._expected.pop((tp.topic, tp.partition), None)

    def run(self) -> int:
        self.prober.start()
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        wait_s = self.settings.ingest_batch_max_wait_ms / 1000
        received = metrics.RECEIVED.labels("ingest")
        try:
            while not self.stopping.is_set():
                self.heartbeat.beat()
                polled = self.consumer.consume(self.settings.ingest_batch_size, timeout=wait_s)
                raise_if_refused(None, self.kafka_config)  # wrong password or CA: one line
                messages = []
                for msg in polled:
                    err = msg.error()
                    if err is None:
                        messages.append(msg)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        metrics.ERRORS.labels("ingest", "consume").inc()
                        log.warning("consume error", extra={"error": str(err)})
                if messages:
                    self.readiness.answered("kafka")  # a fetch is an answer too
                    received.inc(len(messages))
                    if not self.process(messages):
                        break
                elif self._in_flight and not self.finish_all(asynchronous=True):
                    # (Quiet topics: what is in flight is finished rather than left waiting.)
                    break
                if self._commit_again_at is not None and time.monotonic() >= self._commit_again_at:
                    self._commit_again_at = None
                    self.commit_finished(asynchronous=True)
                self.update_lag()
            # Stopping: what is being written is finished and committed (confirmed).
            if self.finish_all() and self._commit_again_at is not None:
                self.commit_finished()
        finally:
            log.info("stopping: leaving the consumer group")
            self.stopping.set()  # a writer still retrying gives up
            self.prober.stop()
            self._writer.shutdown(wait=True, cancel_futures=True)
            self._in_flight.clear()
            self.consumer.close()
            self.producer.flush(10)
            self.db.close()
        return 0

    def ready(self) -> tuple[bool, str]:
        """Ready while Kafka and the database answered within the last STALE_AFTER_S."""
        return self.readiness.check()


def run(args: argparse.Namespace) -> int:
    settings = load(IngestSettings)
    configure_logging("ingest", settings.pipeline_name, settings.log_level)
    forecasts = None
    if settings.inference_target:
        forecasts = ForecastScheduler(
            settings,
            settings.database_dsn(),
            application_name=worker_name("ingest-forecasts", settings.pipeline_name),
        )
    ingest = Ingest(settings, forecasts=forecasts)
    # The writer thread needs the GIL back after every PostgreSQL round trip while the main
    # thread validates: hand it over sooner than the default 5 ms (measured: about 10 % more
    # rows/s at saturation).
    sys.setswitchinterval(0.0002)
    signal.signal(signal.SIGTERM, lambda *_: ingest.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: ingest.stopping.set())
    track_ready("ingest", ingest.ready)
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
    p = commands.add_parser(
        "ingest",
        help="store Kafka readings in PostgreSQL, exactly once",
        description=(
            "Consumes the sensor topics as consumer group KAFKA_CONSUMER_GROUP, validates each "
            "record and writes readings and hourly feature rollups to DATABASE_URL's "
            "database, idempotently; offsets are committed only after the database "
            "transaction, rejected records go to <prefix>.deadletter with their reason. With "
            "INFERENCE_TARGET set it also asks the inference service for the forecasts each "
            "closed hour owes. Metrics and probes on HTTP_PORT. Runs until SIGTERM or Ctrl-C."
        ),
        epilog=environment_help(IngestSettings),
    )
    p.set_defaults(func=run)
