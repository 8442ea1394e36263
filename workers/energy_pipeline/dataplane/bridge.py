"""`energy-pipeline bridge`: MQTT (shared subscription) to Kafka, acknowledging each MQTT
message only after Kafka confirmed every record made from it.

A crash at any point loses nothing: an unacknowledged message is redelivered by the broker
when the bridge's persistent session reconnects, and Kafka duplicates this may create are
absorbed by ingest's idempotent writes.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from energy_pipeline.core import metrics
from energy_pipeline.core.contracts import (
    SENSOR_NAMES,
    WEATHER_FORECAST,
    deadletter_topic,
    kafka_key,
    kafka_topic,
    partition_for,
    topic_parts,
    weather_topic,
)
from energy_pipeline.core.kafka import PRODUCER_GUARANTEES, raise_if_refused
from energy_pipeline.core.logs import configure_logging
from energy_pipeline.core.observability import HealthServer, Heartbeat
from energy_pipeline.core.readiness import (
    KafkaMetadataCheck,
    Prober,
    Readiness,
    describe,
    track_ready,
)
from energy_pipeline.core.settings import (
    CommonSettings,
    KafkaSettings,
    MqttSettings,
    SettingsError,
    ValidationSettings,
    default_client_id,
    env,
    environment_help,
    http_port_field,
    load,
)
from energy_pipeline.core.validation import Rejection, parse_weather_mqtt
from energy_pipeline.core.validation_fast import parse_mqtt
from energy_pipeline.dataplane.mqtt_client import (
    BufferedSocket,
    connect_refused,
    describe_connect_error,
    new_client,
    persistent_session,
    refresh_login,
)

log = logging.getLogger("energy_pipeline.dataplane.bridge")


@dataclass(frozen=True, kw_only=True)
class BridgeSettings(CommonSettings, KafkaSettings, MqttSettings, ValidationSettings):
    http_port: int = http_port_field(9101)
    mqtt_topic_filter: str = env(
        "MQTT_TOPIC_FILTER", "", doc="MQTT topics to bridge (empty: MQTT_TOPIC_ROOT/#)"
    )
    mqtt_shared_group: str = env(
        "MQTT_SHARED_GROUP", "bridge", doc="shared-subscription group (empty: plain subscription)"
    )
    mqtt_client_id: str = env(
        "MQTT_CLIENT_ID", "",
        doc="stable client id of the persistent session (empty: the hostname, after "
        "MQTT_USERNAME and '-' when set)"
    )
    mqtt_session_expiry_s: int = env(
        "MQTT_SESSION_EXPIRY_S", 86_400, doc="how long the broker keeps the session", minimum=0
    )
    bridge_receive_maximum: int = env(
        "BRIDGE_RECEIVE_MAXIMUM", 2000, doc="unacknowledged MQTT messages in flight", minimum=1
    )
    # Short: HiveMQ sends a connection its next messages only once all (at most 50) in
    # flight are acknowledged, so every millisecond waiting to batch is a millisecond idle.
    bridge_linger_ms: int = env(
        "BRIDGE_LINGER_MS", 1, doc="Kafka producer batching delay", minimum=0
    )
    bridge_connections: int = env(
        "BRIDGE_CONNECTIONS", 1,
        doc=f"MQTT connections per bridge, at most {len(SENSOR_NAMES)}; more than 1 splits "
        "MQTT_TOPIC_FILTER (<root>/#) by sensor type, a subscription and queue each",
        minimum=1,
    )

    def __post_init__(self) -> None:
        problems = []
        if self.bridge_connections > len(SENSOR_NAMES):
            problems.append(
                f"BRIDGE_CONNECTIONS must be at most {len(SENSOR_NAMES)} (one per sensor "
                f"type), got {self.bridge_connections}"
            )
        if self.bridge_connections > 1 and shard_root(self.topic_filter) is None:
            problems.append(
                "BRIDGE_CONNECTIONS above 1 splits MQTT_TOPIC_FILTER by sensor type, so it "
                f"must be <root>/# with no wildcard in <root>, got {self.topic_filter!r}"
            )
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))

    @property
    def topic_filter(self) -> str:
        """MQTT_TOPIC_FILTER, or every topic under MQTT_TOPIC_ROOT."""
        return self.mqtt_topic_filter or f"{self.mqtt_topic_root}/#"

    def subscription(self, topic_filter: str) -> str:
        if self.mqtt_shared_group:
            return f"$share/{self.mqtt_shared_group}/{topic_filter}"
        return topic_filter

    def link_filters(self) -> list[tuple[str, ...]]:
        return shard_filters(self.topic_filter, self.bridge_connections)


def shard_root(topic_filter: str) -> str | None:
    """`<root>` of a `<root>/#` filter without wildcards in `<root>`; else None."""
    root = topic_filter.removesuffix("/#")
    if root == topic_filter or not root or "+" in root or "#" in root:
        return None
    return root


def shard_filters(topic_filter: str, connections: int) -> list[tuple[str, ...]]:
    """The topic filters each of `connections` MQTT connections subscribes to.

    HiveMQ CE sends a connection at most 50 unacknowledged messages and its next ones only
    once all of them are acknowledged, however many subscriptions the connection has, and
    more connections in one shared group did not drain that group's single queue faster
    (808 msg/s with 1, 8 or 16). Connections whose subscriptions have queues of their own do
    drain in parallel. So more than one connection splits `<root>/#` into one filter per
    sensor type, `<root>/+/<sensor>/#`, dealt round robin; the first connection also takes
    the topics too short to name a sensor, which are dead-lettered as with one connection.
    A topic naming no known sensor then matches no subscription: the broker answers its
    PUBLISH with PUBACK 0x10 (no matching subscribers) instead of the bridge dead-lettering
    it.
    """
    if connections == 1:
        return [(topic_filter,)]
    root = shard_root(topic_filter)
    if root is None or connections > len(SENSOR_NAMES):
        raise ValueError(f"cannot split {topic_filter!r} over {connections} connections")
    shards: list[list[str]] = [[] for _ in range(connections)]
    for i, sensor in enumerate(SENSOR_NAMES):
        shards[i % connections].append(f"{root}/+/{sensor}/#")
    # Forecast weather (a few messages an hour) and the topics too short to name a sensor.
    shards[0] += [f"{root}/+/{WEATHER_FORECAST}/#", root, f"{root}/+", f"{root}/+/+"]
    return [tuple(shard) for shard in shards]


def every_layout_filter(topic_filter: str) -> set[str]:
    """Every filter any BRIDGE_CONNECTIONS could subscribe to: a connection unsubscribes the
    ones not its own, which its persistent session may keep from an earlier setting (and
    would otherwise keep delivering, a second copy of each reading)."""
    filters = {topic_filter}
    if shard_root(topic_filter) is not None:
        for shard in shard_filters(topic_filter, len(SENSOR_NAMES)):
            filters.update(shard)
    return filters


def producer_config(settings: BridgeSettings) -> dict[str, object]:
    return {
        **settings.kafka_client_config(),
        "client.id": settings.mqtt_client_id or default_client_id(),
        **PRODUCER_GUARANTEES,
        # Retry forever: giving up would mean acknowledging nothing and stalling the session.
        "message.timeout.ms": 0,
        "linger.ms": settings.bridge_linger_ms,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 200_000,
        "compression.type": "lz4",
    }


class PendingAck:
    """An MQTT message waiting for Kafka to confirm the `left` records made from it."""

    __slots__ = ("left", "link", "mid", "qos", "sock")

    def __init__(
        self, left: int, mid: int, qos: int, link: MqttLink, sock: BufferedSocket
    ) -> None:
        self.left = left
        self.mid = mid
        self.qos = qos
        self.link = link
        # The connection it arrived on: packet ids are per connection, so an acknowledgement
        # sent on a later one could acknowledge a different message.
        self.sock = sock


class IdleResubscribe:
    """When to send the SUBSCRIBE again: after `after_s` seconds with no MQTT message received
    and none awaiting Kafka.

    HiveMQ CE (2025.5) can stop handing a connection its shared subscription's messages: its
    post-CONNECT poll reads the session's shared subscriptions on the connection's event loop
    while the single-writer thread persists our SUBSCRIBE; if the poll read the session
    before the SUBSCRIBE was stored but marks the connection "no shared subscription" only
    after the writer cleared that mark (PublishPollServiceImpl.pollMessages against
    ClientSessionSubscriptionPersistenceImpl.invalidateSharedSubscriptionCacheAndPoll), the
    broker polls the shared queue for this connection only when the queue goes from empty
    to one message. The first readings (what was queued when that poll ran) arrive, every
    later one stays queued, another publish does not help, and a SUBSCRIBE does: it clears
    the mark and polls the queue.
    Silence is all the bridge can see of that, so it subscribes again whenever it is idle;
    a connection that gets messages never does.
    """

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._idle_since: float | None = None

    def due(self, now: float, busy: bool) -> bool:
        """`busy`: a message arrived since the last call, or some await their PUBACK."""
        if busy or self._idle_since is None:
            self._idle_since = now
            return False
        if now - self._idle_since < self.after_s:
            return False
        self._idle_since = now
        return True

    def reset(self, now: float) -> None:
        """A new connection subscribes anyway: count its silence from now."""
        self._idle_since = now


class MqttLink:
    """One of the bridge's MQTT connections: its client, persistent session (client id),
    subscriptions, reconnect schedule and readiness entry. The bridge's loop drives it."""

    def __init__(self, bridge: Bridge, index: int, client_id: str,
                 filters: tuple[str, ...]) -> None:
        settings = bridge.settings
        self.bridge = bridge
        self.client_id = client_id
        # One connection keeps the readiness name it always had.
        self.name = "mqtt" if settings.bridge_connections == 1 else f"mqtt-{index}"
        self.subscriptions = [settings.subscription(f) for f in filters]
        self.stale = sorted(
            settings.subscription(f)
            for f in every_layout_filter(settings.topic_filter) - set(filters)
        )
        self.received = 0  # since the last idle check
        self.inflight = 0
        self.idle = IdleResubscribe(Bridge.IDLE_RESUBSCRIBE_S)
        self.next_connect = 0.0
        self.connect_delay = 1.0
        # The last CONNACK refused us (bad login): the readiness detail says that, not the
        # disconnect that follows.
        self.refused = False
        self.connected_before = False  # a lost session is news on a reconnect
        self.subscribed = False
        # A BufferedClient: what paho sends waits for write(), one send() per round.
        self.client = new_client(client_id, settings, manual_ack=True, buffered=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def start(self) -> None:
        settings = self.bridge.settings
        self.client.connect_async(
            settings.mqtt_host,
            settings.mqtt_port,
            keepalive=30,
            clean_start=False,
            properties=persistent_session(
                settings.mqtt_session_expiry_s, settings.bridge_receive_maximum
            ),
        )

    def socket(self) -> BufferedSocket | None:
        return self.client.socket()

    def write(self) -> bool:
        """Write queued packets; False if the socket is full and must be selected for writing."""
        if self.client.want_write():
            self.client.loop_write()
        sock = self.client.socket()
        return sock is None or sock.flush()

    def read(self, budget: int) -> None:
        sock = self.client.socket()
        for _ in range(budget):
            if self.client.loop_read() != mqtt.MQTT_ERR_SUCCESS or sock is None \
                    or not sock.pending():
                break

    def acknowledge(self, pending: PendingAck) -> bool:
        """PUBACK on the connection the message came on; False if that one is gone."""
        self.inflight -= 1
        if pending.sock is not self.client.socket():
            # The broker redelivers it on the new connection; it is sent to Kafka again
            # there and the duplicate is absorbed by ingest.
            return False
        self.client.acknowledge(pending.mid, pending.qos)
        return True

    def reconnect_when_due(self) -> None:
        now = time.monotonic()
        if now < self.next_connect:
            return
        self.next_connect = now + self.connect_delay
        self.connect_delay = min(self.connect_delay * 2, 10.0)
        settings = self.bridge.settings
        try:
            # A rotated MQTT_PASSWORD_FILE is read again for each attempt.
            refresh_login(self.client, settings)
            self.client.reconnect()
        except OSError as exc:
            detail, fix = describe_connect_error(exc)
            self.bridge.readiness.failed(
                self.name, f"cannot connect to {self.bridge.broker}: {detail}; {fix}"
            )
            # Every attempt at debug: the readiness log has one line per change and a
            # reminder while the broker stays away.
            log.debug(
                "mqtt connect failed; retrying",
                extra={"error": str(exc), "retry_in_s": self.next_connect - now,
                       "client_id": self.client_id},
            )

    def resubscribe_when_idle(self, now: float) -> None:
        """Send the shared subscriptions again after IDLE_RESUBSCRIBE_S of silence (see
        IdleResubscribe)."""
        busy = bool(self.received or self.inflight) or not self.subscribed
        self.received = 0
        if not self.idle.due(now, busy) or not self.bridge.settings.mqtt_shared_group:
            return
        # Same subscriptions, same options: the broker replaces them (no retained messages
        # are sent to shared subscriptions) and polls their queues for this connection.
        log.debug(
            "no MQTT message for a while; subscribing again",
            extra={"subscriptions": self.subscriptions, "client_id": self.client_id},
        )
        self.client.subscribe([(sub, 1) for sub in self.subscriptions])

    # --- paho's callbacks --------------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: mqtt.ReasonCode,
        properties: object,
    ) -> None:
        readiness = self.bridge.readiness
        if reason_code.is_failure:
            refused = connect_refused(self.bridge.settings, reason_code)
            log.error("mqtt connect refused", extra={"reason": str(reason_code),
                                                     "error": str(refused),
                                                     "client_id": self.client_id})
            readiness.failed(self.name, str(refused))
            # The broker closes the connection next: _on_disconnect keeps this reason.
            self.refused = True
            return
        self.refused = False
        self.connect_delay = 1.0
        # Subscribing again is harmless and repairs a session the broker lost.
        client.subscribe([(sub, 1) for sub in self.subscriptions])
        if flags.session_present and self.stale:
            # Left from another BRIDGE_CONNECTIONS; unsubscribing one the session does not
            # have is answered "no subscription existed" and changes nothing.
            client.unsubscribe(self.stale)
        readiness.waiting(
            self.name, f"subscription {', '.join(self.subscriptions)} not confirmed yet"
        )
        extra = {"session_present": flags.session_present,
                 "subscriptions": self.subscriptions, "client_id": self.client_id}
        if flags.session_present:
            log.info("mqtt connected", extra=extra)
        else:
            metrics.NEW_SESSIONS.inc()
            # A first start, or the session expired while this client id was away longer than
            # MQTT_SESSION_EXPIRY_S: the broker kept nothing for it then, and if every member
            # of the shared group was away that long, readings published meanwhile are gone.
            log.log(
                logging.WARNING if self.connected_before else logging.INFO,
                "mqtt connected with a new session: the broker kept nothing for this client id "
                "(first start, or away longer than MQTT_SESSION_EXPIRY_S)",
                extra={**extra, "session_expiry_s": self.bridge.settings.mqtt_session_expiry_s},
            )
        self.connected_before = True

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[mqtt.ReasonCode],
        properties: object,
    ) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            self.bridge.fail(f"subscription to {', '.join(self.subscriptions)} refused: {failed}")
            return
        self.subscribed = True
        self.idle.reset(time.monotonic())
        self.bridge.readiness.answered(self.name)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason_code: mqtt.ReasonCode,
        properties: object,
    ) -> None:
        self.subscribed = False
        if not self.bridge.stopping.is_set() and not self.refused:
            # The readiness log says so once (and when it is back); not once per attempt.
            self.bridge.readiness.failed(
                self.name, f"connection to {self.bridge.broker} lost: {reason_code}"
            )
            log.info("mqtt disconnected; reconnecting",
                     extra={"reason": str(reason_code), "client_id": self.client_id})

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self.bridge.stopping.is_set():
            return  # not acknowledged: the broker redelivers it after we are back
        self.received += 1
        self.inflight += 1
        self.bridge.bridge_message(self, msg)


# A cheap first look on the hot path: only topics holding this can be forecast weather.
_WEATHER_LEVEL = f"/{WEATHER_FORECAST}/"


class Bridge:
    """One thread runs everything: MQTT reads, Kafka produce and delivery reports, PUBACKs.

    paho's network thread would contend with the producer for the GIL on every message and
    wake itself through a socket pair for every acknowledgement; driving paho's public
    loop_read/loop_write/loop_misc from the bridge's own loop avoids both. With
    BRIDGE_CONNECTIONS above 1 the loop serves that many MQTT connections (`MqttLink`), all
    feeding the one Kafka producer.
    """

    READ_BUDGET = 1000  # MQTT packets read per round before serving Kafka deliveries
    # Silence after which a shared subscription is sent again (IdleResubscribe): short enough
    # that a broker which stopped delivering costs seconds, long enough to cost nothing.
    IDLE_RESUBSCRIBE_S = 5.0

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.prefix = settings.kafka_topic_prefix
        self.deadletter = deadletter_topic(self.prefix)
        self.limits = settings.limits()
        self.client_id = settings.mqtt_client_id or default_client_id(settings.mqtt_username)
        self.kafka_config = producer_config(settings)
        self.producer = Producer(self.kafka_config, logger=logging.getLogger("librdkafka"))
        self.partitions: dict[str, int] = {}
        self.weather = weather_topic(self.prefix)
        self.topics = [kafka_topic(self.prefix, s) for s in SENSOR_NAMES] + [
            self.weather, self.deadletter]
        self.broker = f"{settings.mqtt_host}:{settings.mqtt_port}"
        self.stopping = threading.Event()
        self.fatal: str | None = None
        # Each further connection has a session of its own: `<client id>-<n>` (a user's
        # client ids start with `<user>-`, which the broker's ACL requires).
        self.links = [
            MqttLink(self, i, self.client_id if i == 0 else f"{self.client_id}-{i}", filters)
            for i, filters in enumerate(settings.link_filters())
        ]
        # Ready while every MQTT subscription is confirmed (paho's callbacks keep that
        # current; its keepalive notices a silent broker) and Kafka answered recently: asked
        # on a thread of its own, since with no traffic there are no deliveries to go by.
        self.readiness = Readiness("bridge")
        for link in self.links:
            self.readiness.add(link.name, stale_after=None,
                               waiting_for=f"not connected to {self.broker} yet")
        self.readiness.add("kafka")
        self.prober = Prober(
            self.readiness,
            {
                "kafka": KafkaMetadataCheck(
                    self.producer, settings.kafka_bootstrap_servers, self.topics
                )
            },
        )
        self.heartbeat = Heartbeat()
        self._inflight = 0
        # Counted in plain ints and handed to Prometheus once per round: a labelled
        # counter's inc() takes a lock, several times per message otherwise.
        self._received = 0
        self._acked = 0
        self._stale_acks = 0
        self._now = datetime.now(UTC)
        self._produced: dict[str, int] = {}

    # --- Kafka -------------------------------------------------------------------------

    def load_partitions(self, timeout: float = 10) -> list[str]:
        """Partition counts of our topics; returns the names of topics that do not exist."""
        metadata = self.producer.list_topics(timeout=timeout)
        missing = []
        for topic in self.topics:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                missing.append(topic)
            else:
                self.partitions[topic] = len(info.partitions)
        return missing

    def _produce(
        self,
        topic: str,
        key: str | None,
        value: bytes,
        partition: int | None,
        pending: PendingAck,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        on_delivery = partial(self._on_delivery, pending)
        while True:
            try:
                if headers:
                    self.producer.produce(
                        topic, value, key, on_delivery=on_delivery, headers=headers
                    )
                elif partition is None:
                    self.producer.produce(topic, value, key, on_delivery=on_delivery)
                else:
                    self.producer.produce(
                        topic, value, key, partition=partition, on_delivery=on_delivery
                    )
                return
            except BufferError:
                # The local queue is full: Kafka is slow or away. Waiting here is the
                # backpressure: the broker holds further messages for us meanwhile.
                self.producer.poll(0.05)
                self._write_mqtt()

    def _on_delivery(self, pending: PendingAck, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            # With infinite retries only fatal errors get here; never acknowledge, and stop
            # so that a restart makes the broker redeliver.
            self.fail(f"Kafka delivery to {msg.topic()} failed: {err}")
            return
        topic = msg.topic()
        self._produced[topic] = self._produced.get(topic, 0) + 1
        pending.left -= 1
        if pending.left:
            return
        self._inflight -= 1
        if pending.link.acknowledge(pending):
            self._acked += 1
        else:
            self._stale_acks += 1

    # --- MQTT --------------------------------------------------------------------------

    def bridge_message(self, link: MqttLink, msg: mqtt.MQTTMessage) -> None:
        """Produce the readings of a message `link` received (or its dead letter)."""
        self._received += 1
        self._inflight += 1
        sock = link.socket()
        assert sock is not None  # a message arrived on it
        if _WEATHER_LEVEL in msg.topic and self._is_weather(msg.topic):
            self._bridge_weather(msg, PendingAck(1, msg.mid, msg.qos, link, sock))
            return
        result = parse_mqtt(msg.topic, msg.payload, self._now, self.limits,
                            self.settings.mqtt_topic_root)
        if isinstance(result, Rejection):
            self._dead_letter(msg, result, PendingAck(1, msg.mid, msg.qos, link, sock))
            return
        pending = PendingAck(len(result), msg.mid, msg.qos, link, sock)
        partitions = self.partitions
        for reading in result:
            topic = kafka_topic(self.prefix, reading.sensor)
            self._produce(
                topic,
                kafka_key(reading.site, reading.device),
                reading.to_kafka_value(),
                partition_for(reading.device, partitions.get(topic, 0)),
                pending,
            )

    def _is_weather(self, topic: str) -> bool:
        parts = topic_parts(topic, self.settings.mqtt_topic_root)
        return parts is not None and parts[1] == WEATHER_FORECAST

    def _bridge_weather(self, msg: mqtt.MQTTMessage, pending: PendingAck) -> None:
        """One issue of forecast weather, as one record keyed `site/source` (so a source's
        issues stay in order on one partition), or its dead letter."""
        forecast = parse_weather_mqtt(msg.topic, msg.payload, self._now, self.limits,
                                      self.settings.mqtt_topic_root)
        if isinstance(forecast, Rejection):
            self._dead_letter(msg, forecast, pending)
            return
        self._produce(self.weather, forecast.key, forecast.to_kafka_value(), None, pending)

    def _dead_letter(
        self, msg: mqtt.MQTTMessage, rejection: Rejection, pending: PendingAck
    ) -> None:
        metrics.REJECTED.labels("bridge", rejection.reason.value).inc()
        log.info(
            "rejected",
            extra={
                "reason": rejection.reason.value,
                "detail": rejection.detail,
                "mqtt_topic": msg.topic[:200],
            },
        )
        headers = [
            ("reason", rejection.reason.value.encode()),
            ("detail", rejection.detail.encode()[:1000]),
            ("source", b"mqtt"),
            ("source_topic", msg.topic.encode()[:1000]),
            ("received_at", datetime.now(UTC).isoformat().encode()),
        ]
        payload = bytes(msg.payload)
        if len(payload) > self.limits.max_payload_bytes:
            headers.append(("truncated_from_bytes", str(len(payload)).encode()))
            payload = payload[: self.limits.max_payload_bytes]
        self._produce(self.deadletter, None, payload, None, pending, headers)

    # --- the loop ----------------------------------------------------------------------

    def _write_mqtt(self) -> list[BufferedSocket]:
        """Write every connection's queued packets; returns the sockets that are full and
        must be selected for writing."""
        full = []
        for link in self.links:
            if not link.write():
                sock = link.socket()
                if sock is not None:
                    full.append(sock)
        return full

    def round(self, idle_wait: float = 0.1) -> None:
        """Read what MQTT has, produce it, serve Kafka's confirmations, write the PUBACKs."""
        socks: dict[BufferedSocket, MqttLink] = {}
        for link in self.links:
            sock = link.socket()
            if sock is not None:
                socks[sock] = link
            elif not self.stopping.is_set():
                link.reconnect_when_due()
        if not socks:
            self.producer.poll(0.05)
            return
        full = self._write_mqtt()
        if any(sock.pending() for sock in socks):
            wait = 0.0
        elif self._inflight:
            wait = 0.002  # confirmations are due; librdkafka has no descriptor to select on
        else:
            wait = idle_wait
        readable, _, _ = select.select(list(socks), full, [], wait)
        # One clock reading per round for the timestamp checks (seconds of tolerance).
        self._now = datetime.now(UTC)
        for sock, link in socks.items():
            if sock in readable or sock.pending():
                link.read(self.READ_BUDGET)
        self.producer.poll(0)
        self._write_mqtt()

    def publish_metrics(self) -> None:
        if self._received:
            metrics.RECEIVED.labels("bridge").inc(self._received)
            self._received = 0
        if self._acked:
            metrics.ACKED.inc(self._acked)
            self._acked = 0
        if self._stale_acks:
            metrics.ERRORS.labels("bridge", "stale_ack").inc(self._stale_acks)
            self._stale_acks = 0
        delivered = False
        for topic, count in self._produced.items():
            if count:
                metrics.PRODUCED.labels(topic).inc(count)
                self._produced[topic] = 0
                delivered = True
        if delivered:
            self.readiness.answered("kafka")  # a confirmed delivery is an answer too
        metrics.INFLIGHT.set(self._inflight)

    # --- lifecycle ---------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        if self.fatal is None:
            self.fatal = reason
            log.error("fatal", extra={"detail": reason})
        self.stopping.set()

    def ready(self) -> tuple[bool, str]:
        """Ready while every MQTT subscription is confirmed and Kafka answered within the
        last STALE_AFTER_S; never after a fatal error."""
        if self.fatal:
            return False, self.fatal
        return self.readiness.check()

    def run(self) -> int:
        self.prober.start()
        try:
            return self._run()
        finally:
            self.prober.stop()

    def _run(self) -> int:
        # Unready meanwhile, saying why: the readiness log has one line per change of that
        # (and a reminder), so each attempt here logs at debug after the first.
        level = logging.WARNING
        while True:
            # Waiting for Kafka is progress, not a hang: readiness names the dependency, and
            # liveness failing here restarted bridges in a loop on a node busy with a fresh
            # install (Kafka still starting after the 60 s the heartbeat allows).
            self.heartbeat.beat()
            try:
                missing = self.load_partitions()
            except KafkaException as exc:
                raise_if_refused(self.producer, self.kafka_config)  # wrong password or CA
                log.log(level, "waiting for Kafka", extra={"error": describe(exc)})
                missing = self.topics
            else:
                if missing:
                    log.log(level, "waiting for Kafka topics", extra={"missing": missing})
            if not missing:
                break
            level = logging.DEBUG
            if self.stopping.wait(5):
                return 0
        for link in self.links:
            link.start()
        last_metadata = last_housekeeping = time.monotonic()
        while not self.stopping.is_set():
            self.round()
            now = time.monotonic()
            if now - last_housekeeping > 0.5:
                last_housekeeping = now
                raise_if_refused(None, self.kafka_config)  # e.g. a password rotated since
                self.heartbeat.beat()
                for link in self.links:
                    link.resubscribe_when_idle(now)
                    link.client.loop_misc()  # keepalive pings, broker silence
                self.publish_metrics()
            if now - last_metadata > 60:
                last_metadata = now
                try:
                    self.load_partitions()  # notice partitions the operator added
                except KafkaException as exc:
                    # Kafka away: keep the counts we have; the readiness check reports it.
                    log.debug("partition counts not refreshed", extra={"error": describe(exc)})
        return self.shutdown()

    def shutdown(self) -> int:
        log.info("stopping: flushing Kafka and acknowledging what it confirmed")
        deadline = time.monotonic() + 30
        while self._inflight and len(self.producer) and time.monotonic() < deadline:
            self.producer.poll(0.05)
            self._write_mqtt()
        left = self.producer.flush(max(0.0, deadline - time.monotonic()))
        self._write_mqtt()
        # DISCONNECT goes out after the PUBACKs (one socket, in order); paho then closes it.
        for link in self.links:
            link.client.disconnect()
        self._write_mqtt()
        self.publish_metrics()
        log.info("stopped", extra={"undelivered": left})
        return 1 if self.fatal else 0


def run(args: argparse.Namespace) -> int:
    settings = load(BridgeSettings)
    configure_logging("bridge", settings.pipeline_name, settings.log_level)
    bridge = Bridge(settings)
    track_ready("bridge", bridge.ready)
    signal.signal(signal.SIGTERM, lambda *_: bridge.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: bridge.stopping.set())
    health = HealthServer(settings.http_port, bridge.heartbeat, bridge.ready).start()
    log.info(
        "bridge starting",
        extra={"client_id": bridge.client_id, "pid": os.getpid(), "http_port": health.port},
    )
    try:
        return bridge.run()
    finally:
        health.stop()


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "bridge",
        help="move MQTT readings into Kafka without loss",
        description=(
            "Subscribes to MQTT_TOPIC_FILTER on the broker at MQTT_HOST:MQTT_PORT (a shared "
            "subscription of group MQTT_SHARED_GROUP, in a persistent session) and produces "
            "each reading to Kafka, <prefix>.<sensor> (rejected input with its reason to "
            "<prefix>.deadletter), acknowledging an MQTT message only after Kafka confirmed "
            "every record made from it. Waits for the topics (`topics create`). Metrics and "
            "probes on HTTP_PORT. Runs until SIGTERM or Ctrl-C."
        ),
        epilog=environment_help(BridgeSettings),
    )
    p.set_defaults(func=run)
