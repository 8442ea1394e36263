"""The data contracts every part agrees on: sensors, topics, keys, and the Kafka record.

See DESIGN section 2. Pure values and functions only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class SensorType:
    name: str
    unit: str
    # Physically plausible bounds; a value outside is a fault and is rejected, not stored.
    minimum: float
    maximum: float
    # Field name in the original report's combined JSON record.
    combined_field: str


SENSOR_TYPES: tuple[SensorType, ...] = (
    SensorType("temperature", "degC", -60.0, 70.0, "Temperature"),
    SensorType("humidity", "%", 0.0, 100.0, "Humidity"),
    SensorType("squarefootage", "ft2", 0.0, 10_000_000.0, "SquareFootage"),
    SensorType("renewableenergy", "kWh", 0.0, 1_000_000.0, "RenewableEnergy"),
    SensorType("energyconsumption", "kWh", 0.0, 1_000_000.0, "EnergyConsumption"),
)
SENSORS: dict[str, SensorType] = {s.name: s for s in SENSOR_TYPES}
SENSOR_NAMES: tuple[str, ...] = tuple(SENSORS)
COMBINED = "combined"


@dataclass(frozen=True)
class Limits:
    """What a reading may be beyond its sensor's bounds (settings set them per pipeline)."""

    max_payload_bytes: int = 4096
    # A weather forecast carries up to WEATHER_MAX_POINTS hours in one message.
    max_forecast_payload_bytes: int = 65536
    max_future: timedelta = timedelta(minutes=5)
    earliest: datetime = datetime(2000, 1, 1, tzinfo=UTC)


DEFAULT_LIMITS = Limits()

# Known hours of energy consumption a site needs before the default model fits its boosters
# (fewer: `train` stores its seasonal-naive fallback). Here, not beside the model, because the
# operator waits for this much history before a pipeline's first training and must not
# import LightGBM to know it (DefaultParams.min_train_hours defaults to it).
MIN_TRAIN_HOURS = 14 * 24

MQTT_TOPIC_ROOT = "energy"
# A topic root: levels without wildcards or white space (spec.mqtt.topicRoot's pattern).
TOPIC_ROOT = re.compile(r"[^/+#\s]+(/[^/+#\s]+)*")
# A pipeline's database schema (spec.database.schema, DATABASE_SCHEMA): lower-case, so that it
# needs no quoting in any SQL, and within PostgreSQL's NAMEDATALEN - 1 bytes.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_TOPIC_PREFIX = "energy"


def mqtt_topic(site: str, sensor: str, device: str, root: str = MQTT_TOPIC_ROOT) -> str:
    """Where a device publishes: `<root>/<site>/<sensor>/<device>`; `root` is the pipeline's
    (MQTT_TOPIC_ROOT, spec.mqtt.topicRoot), and may itself hold '/'."""
    return f"{root}/{site}/{sensor}/{device}"


def topic_parts(topic: str, root: str = MQTT_TOPIC_ROOT) -> list[str] | None:
    """[site, sensor, device] of a topic `mqtt_topic(..., root)` made; None for any other."""
    if not topic.startswith(root) or topic[len(root):len(root) + 1] != "/":
        return None
    parts = topic[len(root) + 1:].split("/")
    return parts if len(parts) == 3 else None


def kafka_topic(prefix: str, sensor: str) -> str:
    return f"{prefix}.{sensor}"


def deadletter_topic(prefix: str) -> str:
    return f"{prefix}.deadletter"


def all_kafka_topics(prefix: str) -> list[str]:
    """Every topic of a pipeline: one per sensor, forecast weather, and the dead letters."""
    return [kafka_topic(prefix, s) for s in SENSOR_NAMES] + [
        weather_topic(prefix), deadletter_topic(prefix)]


# Forecast weather per site, published by a weather service (or a site's gateway) to
# `<root>/<site>/weather_forecast/<source>`: one message per issue, each hour it covers with
# the variables below, which carry the bounds of the sensor of the same name.
WEATHER_FORECAST = "weather_forecast"
WEATHER_VARIABLES = ("temperature", "humidity")
WEATHER_MAX_POINTS = 16 * 24
# How far a valid time may lie from its issue time: a day back (the analysis hours some
# services include) to 16 days ahead (the longest public numerical forecasts).
WEATHER_MAX_BEHIND = timedelta(days=1)
WEATHER_MAX_AHEAD = timedelta(days=16)


def weather_topic(prefix: str) -> str:
    """The Kafka topic of forecast weather: `<prefix>.weather_forecast`, keyed `site/source`."""
    return f"{prefix}.{WEATHER_FORECAST}"


@dataclass(frozen=True)
class WeatherPoint:
    valid_time: datetime
    values: tuple[tuple[str, float], ...]  # (variable, value), in WEATHER_VARIABLES' order


@dataclass(frozen=True)
class WeatherForecast:
    """One issue of forecast weather for a site: the hours it covers, in valid-time order."""

    site: str
    source: str
    issued_at: datetime
    points: tuple[WeatherPoint, ...]

    @property
    def key(self) -> str:
        return kafka_key(self.site, self.source)

    def _body(self) -> list[dict[str, object]]:
        return [{"valid_time": format_ts(p.valid_time), **dict(p.values)} for p in self.points]

    def to_kafka_value(self) -> bytes:
        return _compact_json({
            "schema": SCHEMA_VERSION, "site": self.site, "source": self.source,
            "issued_at": format_ts(self.issued_at), "forecasts": self._body(),
        }).encode()

    def to_mqtt_payload(self) -> bytes:
        return _compact_json(
            {"issued_at": format_ts(self.issued_at), "forecasts": self._body()}).encode()


def kafka_key(site: str, device: str) -> str:
    return f"{site}/{device}"


def partition_for(device: str, partitions: int) -> int | None:
    """Device i goes to partition i (mod the partition count), as in the original setup.

    Every reading of a device then lands on one partition, which keeps its order. Non-numeric
    device ids return None: the producer's key hash decides, still one partition per key.
    """
    if device.isdigit() and partitions > 0:
        return int(device) % partitions
    return None


@dataclass(frozen=True, slots=True)
class Reading:
    site: str
    sensor: str
    device: str
    ts: datetime
    value: float
    seq: int | None = None

    @property
    def key(self) -> tuple[str, str, str, datetime]:
        return (self.site, self.sensor, self.device, self.ts)

    def to_kafka_value(self) -> bytes:
        site, device, value, seq = self.site, self.device, self.value, self.seq
        if (
            _plain_id(site)
            and _plain_id(device)
            and self.sensor in SENSORS
            and type(value) is float
            and math.isfinite(value)
            and (seq is None or type(seq) is int)
        ):
            # What the encoder below writes, byte for byte, when nothing needs escaping; the
            # bridge makes one per reading. float repr is also what json uses for floats.
            return (
                f'{{"schema":{SCHEMA_VERSION},"site":"{site}","sensor":"{self.sensor}",'
                f'"device":"{device}","ts":"{format_ts(self.ts)}","value":{value!r},'
                f'"seq":{"null" if seq is None else seq}}}'
            ).encode()
        return _compact_json(
            {
                "schema": SCHEMA_VERSION,
                "site": self.site,
                "sensor": self.sensor,
                "device": self.device,
                "ts": format_ts(self.ts),
                "value": self.value,
                "seq": self.seq,
            }
        ).encode()

    def to_mqtt_payload(self) -> bytes:
        body: dict[str, object] = {"ts": format_ts(self.ts), "value": self.value}
        if self.seq is not None:
            body["seq"] = self.seq
        return _compact_json(body).encode()


# Ids that JSON carries without escaping (validated ids always are).
_plain_id = re.compile(r"[A-Za-z0-9_.\-]+").fullmatch

# json.dumps(..., separators=(",", ":")) builds this encoder on every call.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode

_new_object = object.__new__
_SETTERS = tuple(Reading.__dict__[name].__set__ for name in Reading.__slots__)


def new_reading(
    site: str, sensor: str, device: str, ts: datetime, value: float, seq: int | None = None
) -> Reading:
    """The same as Reading(...), at about half the cost: the parsers make one per message and
    the frozen dataclass's __init__ sets every field through object.__setattr__."""
    reading = _new_object(Reading)
    set_site, set_sensor, set_device, set_ts, set_value, set_seq = _SETTERS
    set_site(reading, site)
    set_sensor(reading, sensor)
    set_device(reading, device)
    set_ts(reading, ts)
    set_value(reading, value)
    set_seq(reading, seq)
    return reading


def format_ts(ts: datetime) -> str:
    """ISO 8601 in UTC with a Z; sub-second digits only as many as the value needs."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    microsecond = ts.microsecond
    if not microsecond:
        spec = "seconds"
    elif microsecond % 1000:
        spec = "microseconds"
    else:
        spec = "milliseconds"
    # In UTC, isoformat ends with "+00:00".
    return ts.isoformat(timespec=spec)[:-6] + "Z"


def is_finite_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
