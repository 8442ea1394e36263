"""Publishes readings over MQTT 5 with QoS 1, paced or as fast as the broker takes them."""

from __future__ import annotations

import csv
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as mqtt

from energy_pipeline.core.contracts import (
    COMBINED,
    MQTT_TOPIC_ROOT,
    SENSOR_TYPES,
    SENSORS,
    WEATHER_FORECAST,
    Reading,
    WeatherForecast,
    mqtt_topic,
)
from energy_pipeline.core.settings import MqttSettings
from energy_pipeline.dataplane.mqtt_client import new_client, persistent_session

log = logging.getLogger(__name__)

Message = tuple[str, bytes]

# MQTT 5 PUBACK reason "No matching subscribers": the broker accepted the message and sent it
# nowhere. A simulator started before the pipeline's bridge ever subscribed sees it.
NO_MATCHING_SUBSCRIBERS = 0x10
HOLD_RETRY_S = 1.0


def reading_message(r: Reading, root: str = MQTT_TOPIC_ROOT) -> Message:
    return mqtt_topic(r.site, r.sensor, r.device, root), r.to_mqtt_payload()


def weather_message(forecast: WeatherForecast, root: str = MQTT_TOPIC_ROOT) -> Message:
    """An issue of forecast weather on `<root>/<site>/weather_forecast/<source>`."""
    return (mqtt_topic(forecast.site, WEATHER_FORECAST, forecast.source, root),
            forecast.to_mqtt_payload())


def combined_messages(readings: Iterable[Reading], root: str = MQTT_TOPIC_ROOT
                      ) -> Iterator[Message]:
    """The original report's record: one message per device and time with all five sensors.

    Expects readings grouped by time (as `signals.generate` yields them).
    """
    for ts, same_time in groupby(readings, key=lambda r: r.ts):
        records: dict[tuple[str, str], dict[str, object]] = {}
        for r in same_time:
            record = records.setdefault(
                (r.site, r.device),
                {
                    "Timestamp": ts.astimezone(UTC).strftime("%m/%d/%Y %H:%M"),
                    "DeviceId": int(r.device),
                },
            )
            record[SENSORS[r.sensor].combined_field] = r.value
        for (site, device), record in records.items():
            yield (
                mqtt_topic(site, COMBINED, device, root),
                json.dumps(record, separators=(",", ":")).encode(),
            )


class Outgoing(NamedTuple):
    """A message with what the run's summary counts it as."""

    # The reading's time, or the forecast's issue time; None for a replayed record.
    time: datetime | None
    topic: str
    payload: bytes
    forecast: bool = False


def item_time(item: Reading | WeatherForecast) -> datetime:
    return item.issued_at if isinstance(item, WeatherForecast) else item.ts


def outgoing(items: Iterable[Reading | WeatherForecast], fmt: str,
             root: str = MQTT_TOPIC_ROOT) -> Iterator[Outgoing]:
    """The messages of readings (`fmt` single or combined) and forecasts, in the items' order
    (readings grouped by time, as `signals.generate` yields them)."""
    for is_forecast, run in groupby(items, key=lambda item: isinstance(item, WeatherForecast)):
        if is_forecast:
            for forecast in run:
                yield Outgoing(forecast.issued_at, *weather_message(forecast, root), True)
        elif fmt == "combined":
            for ts, same_time in groupby(run, key=attrgetter("ts")):
                for message in combined_messages(same_time, root):
                    yield Outgoing(ts, *message)
        else:
            for reading in run:
                yield Outgoing(reading.ts, *reading_message(reading, root))


def replay_messages(path: Path, site: str, root: str = MQTT_TOPIC_ROOT) -> Iterator[Message]:
    """A recorded CSV: the report's combined columns, or long rows site,sensor,device,ts,value."""
    with path.open(newline="") as handle:
        rows = csv.DictReader(handle)
        header = set(rows.fieldnames or [])
        if {"Timestamp", "DeviceId"} <= header:
            for row in rows:
                record: dict[str, object] = {
                    "Timestamp": row["Timestamp"],
                    "DeviceId": int(row["DeviceId"]),
                }
                for spec in SENSOR_TYPES:
                    if row.get(spec.combined_field) not in (None, ""):
                        record[spec.combined_field] = float(row[spec.combined_field])
                topic = mqtt_topic(row.get("SiteId") or site, COMBINED, row["DeviceId"], root)
                yield topic, json.dumps(record, separators=(",", ":")).encode()
        elif {"sensor", "device", "ts", "value"} <= header:
            for row in rows:
                payload = json.dumps({"ts": row["ts"], "value": float(row["value"])}).encode()
                yield (mqtt_topic(row.get("site") or site, row["sensor"], row["device"], root),
                       payload)
        else:
            raise ValueError(
                f"{path}: expected columns Timestamp,DeviceId,Temperature,... or "
                f"site,sensor,device,ts,value; got {sorted(header)}"
            )


@dataclass
class PublishStats:
    published: int = 0
    confirmed: int = 0
    seconds: float = 0.0
    # Publishes the broker routed to no one and `hold_unrouted` sent again.
    held: int = 0
    # Publishes the broker refused (PUBACK reason code 0x80 or above, e.g. 0x87 Not
    # authorized for a topic outside the user's permission): not delivered, not resent.
    refused: int = 0

    @property
    def rate(self) -> float:
        return self.confirmed / self.seconds if self.seconds else 0.0


class MqttRefused(ConnectionError):
    """The broker answered CONNECT with a refusal (bad user name or password, not authorized):
    trying again with the same login would not help."""

    def __init__(self, reason: object) -> None:
        super().__init__(str(reason))
        self.reason = reason


class MqttPublisher:
    """QoS 1 publisher with a bounded window of unconfirmed messages.

    Uses a persistent session so that messages in flight when the broker restarts are sent
    again after the reconnect instead of being dropped. With `hold_unrouted`, a message the
    broker acknowledges as routed to no one (no subscriber yet) is sent again every
    HOLD_RETRY_S until someone subscribes: a simulator started with the platform, before
    the bridge first subscribed, then loses none of its backfill.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        settings: MqttSettings | None = None,
        window: int = 1000,
        hold_unrouted: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self._hold_unrouted = hold_unrouted
        # mid -> message, while unacknowledged (only kept when holding unrouted messages).
        self._in_flight: dict[int, Message] = {}
        self._unrouted: list[Message] = []
        self._early_acks: dict[int, int] = {}
        self._closed = False
        self._window = window
        self._limit = window
        self._outstanding = 0
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self.stats = PublishStats()
        # Login and TLS from `settings` (its host and port are not used: `host`, `port` are).
        self.client = new_client(client_id, settings)
        self.refused: object | None = None
        self.client.max_inflight_messages_set(window)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason_code: object,
        properties: object,
    ) -> None:
        # After a reconnect paho resends every unacknowledged message at once; more than the
        # broker's Receive Maximum and the broker drops the connection again, forever. So
        # never have more unacknowledged messages than the broker accepts.
        if getattr(reason_code, "is_failure", False):
            # paho keeps trying; connect() gives up on this refusal.
            self.refused = reason_code
            log.error("mqtt connect refused", extra={"reason": str(reason_code)})
            return
        self.refused = None
        receive_maximum = getattr(properties, "ReceiveMaximum", 65535)
        with self._cond:
            self._limit = max(1, min(self._window, receive_maximum))
        self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason_code: object,
        properties: object,
    ) -> None:
        self._connected.clear()
        if not self._closed:  # close() disconnects on purpose
            log.warning("mqtt disconnected; will reconnect", extra={"reason": str(reason_code)})

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_code: object,
        properties: object,
    ) -> None:
        code = int(getattr(reason_code, "value", reason_code) or 0)
        with self._cond:
            if not self._hold_unrouted:
                self._settle(None, code)
                return
            message = self._in_flight.pop(mid, None)
            if message is None:  # acknowledged before _send recorded it: _send settles it
                self._early_acks[mid] = code
            else:
                self._settle(message, code)

    def _settle(self, message: Message | None, code: int) -> None:
        """One acknowledgement (with self._cond held)."""
        if message is not None and code == NO_MATCHING_SUBSCRIBERS:
            # Still outstanding: the retry thread sends it again.
            self._unrouted.append(message)
            self.stats.held += 1
        else:
            if code >= 0x80:
                self.stats.refused += 1
                if self.stats.refused == 1:
                    log.error("the broker refused a publish", extra={"reason_code": hex(code)})
            else:
                self.stats.confirmed += 1
            self._outstanding -= 1
        self._cond.notify_all()

    def _resend_unrouted(self) -> None:
        """Send held messages again, in order, once a second, until they reach someone."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._unrouted) or self._closed)
                if self._closed:
                    return
            time.sleep(HOLD_RETRY_S)
            with self._cond:
                batch, self._unrouted = self._unrouted, []
            log.warning("no subscriber yet; sending held readings again",
                        extra={"held": len(batch)})
            for topic, payload in batch:
                self._send(topic, payload)

    def connect(self, timeout: float | None = 30) -> None:
        """Connect; `timeout=None` keeps trying (paho's reconnect backoff) until the broker
        answers, so a simulator started with the platform does not crash-loop meanwhile."""
        self.client.connect_async(
            self.host,
            self.port,
            keepalive=30,
            clean_start=False,
            properties=persistent_session(3600),
        )
        self.client.loop_start()
        if self._hold_unrouted:
            threading.Thread(target=self._resend_unrouted, name="mqtt-hold", daemon=True).start()
        waited = 0.0
        while not self._connected.wait(0.2):
            waited += 0.2
            if self.refused is not None:
                raise MqttRefused(self.refused)
            if timeout is not None and waited >= timeout:
                raise ConnectionError(
                    f"no CONNACK from MQTT broker {self.host}:{self.port} within {timeout}s"
                )
            if timeout is None and waited % 30 < 0.2:
                log.warning("MQTT broker not answering yet; still trying",
                            extra={"host": self.host, "port": self.port})

    def publish(self, topic: str, payload: bytes) -> None:
        # Publishing from this thread while paho's thread reconnects and resends corrupts
        # paho's session state (seen with paho-mqtt 2.2): wait for the connection instead.
        self._connected.wait()
        with self._cond:
            self._cond.wait_for(lambda: self._outstanding < self._limit)
            self._outstanding += 1
            self.stats.published += 1
        self._send(topic, payload)

    def _send(self, topic: str, payload: bytes) -> None:
        self._connected.wait()
        # While disconnected paho queues QoS 1 messages and sends them after the reconnect.
        # Not under self._cond: paho calls _on_publish holding its own message lock, which
        # publish() takes too.
        info = self.client.publish(topic, payload, qos=1)
        if self._hold_unrouted:
            with self._cond:
                early = self._early_acks.pop(info.mid, None)
                if early is None:
                    self._in_flight[info.mid] = (topic, payload)
                else:
                    self._settle((topic, payload), early)

    def wait_confirmed(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._outstanding == 0, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.client.disconnect()
        self.client.loop_stop()
