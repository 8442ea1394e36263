"""Validation of incoming readings: every input becomes readings or one clear rejection.

Rejection reasons are a small fixed set so they can label a metric and a dead-letter header.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from energy_pipeline.core.contracts import (
    COMBINED,
    DEFAULT_LIMITS,
    MQTT_TOPIC_ROOT,
    SCHEMA_VERSION,
    SENSOR_TYPES,
    SENSORS,
    Limits,
    Reading,
    is_finite_number,
    new_reading,
)


class Reason(StrEnum):
    OVERSIZED = "oversized"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_SENSOR = "unknown_sensor"
    MALFORMED_JSON = "malformed_json"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    UNSUPPORTED_SCHEMA = "unsupported_schema"


@dataclass(frozen=True)
class Rejection:
    reason: Reason
    detail: str


class Invalid(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.rejection = Rejection(reason, detail)


_ID_CHARS = r"[A-Za-z0-9_.\-]{1,64}"
_ID = re.compile(rf"^{_ID_CHARS}$")
# fullmatch: `$` alone would also accept a trailing newline, which breaks COPY downstream.
_valid_id = _ID.fullmatch
# The original report's combined record: "01/01/2025 13:00", month first, UTC.
_COMBINED_TS_FORMAT = "%m/%d/%Y %H:%M"


def _reject_constant(name: str) -> float:
    raise Invalid(Reason.NON_FINITE, f"{name} is not a finite number")


# Built once: json.loads(payload, parse_constant=...) builds a decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _load_json(payload: bytes) -> object:
    try:
        if isinstance(payload, bytes | bytearray):
            # What json.loads does with bytes, then the same decoder.
            return _DECODER.decode(payload.decode(json.detect_encoding(payload), "surrogatepass"))
        return json.loads(payload, parse_constant=_reject_constant)
    except Invalid:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(Reason.MALFORMED_JSON, f"not valid JSON: {exc}") from exc
    except RecursionError:
        # "[[[[...": a few kilobytes of nesting exceed the interpreter's recursion limit.
        raise Invalid(Reason.MALFORMED_JSON, "not valid JSON: nested too deeply") from None


def _require_object(doc: object) -> dict[str, object]:
    if not isinstance(doc, dict):
        raise Invalid(Reason.WRONG_TYPE, f"payload must be a JSON object, got {type(doc).__name__}")
    return doc


def _field(doc: dict[str, object], name: str) -> object:
    if name not in doc or doc[name] is None:
        raise Invalid(Reason.MISSING_FIELD, f"field {name!r} is required")
    return doc[name]


def _value(sensor: str, raw: object, field: str = "value") -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise Invalid(Reason.WRONG_TYPE, f"{field} must be a number, got {type(raw).__name__}")
    try:
        value = float(raw)
    except OverflowError:
        # An integer literal too large for a float (JSON allows any number of digits).
        raise Invalid(Reason.OUT_OF_RANGE, f"{field} is an integer too large for a float") from None
    if not is_finite_number(value):
        raise Invalid(Reason.NON_FINITE, f"{field} is not a finite number")
    spec = SENSORS[sensor]
    if not spec.minimum <= value <= spec.maximum:
        raise Invalid(
            Reason.OUT_OF_RANGE,
            f"{sensor} {value} {spec.unit} outside [{spec.minimum}, {spec.maximum}]",
        )
    return value


def _check_time(ts: datetime, now: datetime, limits: Limits) -> datetime:
    if ts < limits.earliest:
        raise Invalid(
            Reason.BAD_TIMESTAMP, f"timestamp {ts.isoformat()} is before {limits.earliest.date()}"
        )
    if ts > now + limits.max_future:
        raise Invalid(
            Reason.FUTURE_TIMESTAMP,
            f"timestamp {ts.isoformat()} is more than {limits.max_future} ahead of now",
        )
    return ts


def _iso_ts(raw: object, now: datetime, limits: Limits) -> datetime:
    if not isinstance(raw, str):
        raise Invalid(Reason.WRONG_TYPE, f"ts must be an ISO 8601 string, got {type(raw).__name__}")
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise Invalid(Reason.BAD_TIMESTAMP, f"ts {raw[:40]!r} is not ISO 8601") from exc
    if ts.tzinfo is None:
        raise Invalid(Reason.BAD_TIMESTAMP, f"ts {raw[:40]!r} has no UTC offset (add Z)")
    return _check_time(ts.astimezone(UTC), now, limits)


def _seq(doc: dict[str, object]) -> int | None:
    seq = doc.get("seq")
    if seq is None:
        return None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise Invalid(Reason.WRONG_TYPE, "seq must be a non-negative integer")
    return seq


def _topic_parts(topic: str) -> tuple[str, str, str]:
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != MQTT_TOPIC_ROOT:
        raise Invalid(
            Reason.BAD_TOPIC,
            f"topic {topic[:120]!r} is not {MQTT_TOPIC_ROOT}/<site>/<sensor>/<device>",
        )
    _, site, sensor, device = parts
    for label, ident in (("site", site), ("device", device)):
        if not _valid_id(ident):
            raise Invalid(Reason.BAD_TOPIC, f"{label} id {ident[:80]!r} must match {_ID.pattern}")
    if sensor != COMBINED and sensor not in SENSORS:
        raise Invalid(Reason.UNKNOWN_SENSOR, f"unknown sensor {sensor[:40]!r}")
    return site, sensor, device


def _combined(
    site: str, device: str, doc: dict[str, object], now: datetime, limits: Limits
) -> list[Reading]:
    raw_ts = _field(doc, "Timestamp")
    if not isinstance(raw_ts, str):
        raise Invalid(Reason.WRONG_TYPE, "Timestamp must be a string like '01/01/2025 13:00'")
    try:
        ts = datetime.strptime(raw_ts, _COMBINED_TS_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        try:
            ts = _iso_ts(raw_ts, now, limits)
        except Invalid as exc:
            raise Invalid(
                Reason.BAD_TIMESTAMP,
                f"Timestamp {raw_ts[:40]!r} is neither MM/DD/YYYY HH:MM nor ISO 8601",
            ) from exc
    ts = _check_time(ts, now, limits)
    if "DeviceId" in doc and str(doc["DeviceId"]) != device:
        raise Invalid(
            Reason.BAD_TOPIC, f"DeviceId {doc['DeviceId']!r} does not match topic device {device!r}"
        )
    return [
        Reading(
            site,
            spec.name,
            device,
            ts,
            _value(spec.name, _field(doc, spec.combined_field), spec.combined_field),
        )
        for spec in SENSOR_TYPES
    ]


def parse_mqtt(
    topic: str, payload: bytes, now: datetime, limits: Limits = DEFAULT_LIMITS
) -> list[Reading] | Rejection:
    """One MQTT message into its readings (five for a combined record), or why not."""
    fast = _mqtt_fast(topic, payload, now, limits)
    if fast is not None:
        return [fast]
    return parse_mqtt_checked(topic, payload, now, limits)


def parse_mqtt_checked(
    topic: str, payload: bytes, now: datetime, limits: Limits = DEFAULT_LIMITS
) -> list[Reading] | Rejection:
    """parse_mqtt, every check spelled out in order: the result, or the first failure."""
    try:
        if len(payload) > limits.max_payload_bytes:
            raise Invalid(
                Reason.OVERSIZED,
                f"payload of {len(payload)} bytes exceeds {limits.max_payload_bytes}",
            )
        site, sensor, device = _topic_parts(topic)
        doc = _require_object(_load_json(payload))
        if sensor == COMBINED:
            return _combined(site, device, doc, now, limits)
        ts = _iso_ts(_field(doc, "ts"), now, limits)
        value = _value(sensor, _field(doc, "value"))
        return [Reading(site, sensor, device, ts, value, _seq(doc))]
    except Invalid as exc:
        return exc.rejection


def parse_kafka_value(
    value: bytes | None, now: datetime, limits: Limits = DEFAULT_LIMITS
) -> Reading | Rejection:
    """A record from an `energy.<sensor>` topic, as the bridge wrote it (or someone else did)."""
    fast = _kafka_fast(value, now, limits)
    if fast is not None:
        return fast
    return parse_kafka_value_checked(value, now, limits)


def parse_kafka_value_checked(
    value: bytes | None, now: datetime, limits: Limits = DEFAULT_LIMITS
) -> Reading | Rejection:
    """parse_kafka_value, every check spelled out in order: the result, or the first failure."""
    try:
        if value is None:
            raise Invalid(Reason.MISSING_FIELD, "record has no value")
        if len(value) > limits.max_payload_bytes:
            raise Invalid(
                Reason.OVERSIZED, f"record of {len(value)} bytes exceeds {limits.max_payload_bytes}"
            )
        doc = _require_object(_load_json(value))
        schema = doc.get("schema")
        if schema != SCHEMA_VERSION:
            raise Invalid(Reason.UNSUPPORTED_SCHEMA, f"schema {schema!r} is not {SCHEMA_VERSION}")
        strings = {}
        for name in ("site", "sensor", "device"):
            raw = _field(doc, name)
            if not isinstance(raw, str):
                raise Invalid(Reason.WRONG_TYPE, f"{name} must be a string")
            strings[name] = raw
        if strings["sensor"] not in SENSORS:
            raise Invalid(Reason.UNKNOWN_SENSOR, f"unknown sensor {strings['sensor'][:40]!r}")
        for name in ("site", "device"):
            if not _valid_id(strings[name]):
                raise Invalid(
                    Reason.WRONG_TYPE, f"{name} id {strings[name][:80]!r} must match {_ID.pattern}"
                )
        ts = _iso_ts(_field(doc, "ts"), now, limits)
        return Reading(
            strings["site"],
            strings["sensor"],
            strings["device"],
            ts,
            _value(strings["sensor"], _field(doc, "value")),
            _seq(doc),
        )
    except Invalid as exc:
        return exc.rejection


# --- fast paths ---------------------------------------------------------------------------
#
# Both parsers run once per message, so the common case, a well-formed reading, takes a
# short path: the same checks, folded together. It returns None on anything unusual, and
# the checked parser then finds the reason. Whatever it returns, the checked parser returns
# too (tests/unit/test_validation_fast.py compares them).
#
# Records exactly as this pipeline writes them (Reading.to_kafka_value, to_mqtt_payload:
# these keys in this order, no whitespace, ids without escapes) are read by one regular
# expression instead of the JSON decoder; anything else goes through the decoder.

_NUMBER = r"(-?(?:0|[1-9][0-9]{0,17}))((?:\.[0-9]{1,30})?(?:[eE][+\-]?[0-9]{1,3})?)"
_SEQ = r"(0|[1-9][0-9]{0,17}|null)"
_TS = r'"ts":"([0-9T:.+\-Z]{1,40})"'
_KAFKA_RECORD = re.compile(
    rf'\{{"schema":{SCHEMA_VERSION},"site":"({_ID_CHARS})","sensor":"([a-z]{{1,32}})",'
    rf'"device":"({_ID_CHARS})",{_TS},"value":{_NUMBER},"seq":{_SEQ}\}}'
).fullmatch
_MQTT_PAYLOAD = re.compile(rf'\{{{_TS},"value":{_NUMBER}(?:,"seq":{_SEQ})?\}}').fullmatch

_decode = _DECODER.decode
_isfinite = math.isfinite
_fromisoformat = datetime.fromisoformat


def _number(integer: str, rest: str) -> float:
    # As the JSON decoder reads it: an int without fraction or exponent (so "-0" is 0).
    return float(integer + rest) if rest else float(int(integer))


def _valid_reading(
    site: str,
    sensor: str,
    device: str,
    raw_ts: str,
    value: float,
    seq: int | None,
    now: datetime,
    limits: Limits,
) -> Reading | None:
    """The reading if value and timestamp pass every check, else None."""
    spec = SENSORS[sensor]
    if not (_isfinite(value) and spec.minimum <= value <= spec.maximum):
        return None
    ts = _timestamp(raw_ts, _fromisoformat, limits.earliest, now + limits.max_future)
    if ts is None:
        return None
    return new_reading(site, sensor, device, ts, value, seq)


def _from_doc(
    site: str, sensor: str, device: str, doc: dict, now: datetime, limits: Limits
) -> Reading | None:
    raw_ts = doc.get("ts")
    raw = doc.get("value")
    seq = doc.get("seq")
    if type(raw_ts) is not str:
        return None
    kind = type(raw)
    if kind is float:
        value = raw
    elif kind is int and -(2**53) <= raw <= 2**53:
        value = float(raw)
    else:
        return None
    if seq is not None and (type(seq) is not int or seq < 0):
        return None
    return _valid_reading(site, sensor, device, raw_ts, value, seq, now, limits)


def _json_object(payload: bytes) -> dict | None:
    # Starting with '{"' also settles the encoding: json.loads would detect UTF-8.
    if not payload.startswith(b'{"'):
        return None
    try:
        doc = _decode(payload.decode())
    except (ValueError, RecursionError, Invalid):
        return None
    return doc if type(doc) is dict else None


def _kafka_fast(value: bytes | None, now: datetime, limits: Limits) -> Reading | None:
    if type(value) is not bytes or len(value) > limits.max_payload_bytes:
        return None
    # latin-1 never fails and maps bytes to the same code points; the pattern is ASCII only.
    m = _KAFKA_RECORD(value.decode("latin-1"))
    if m is not None:
        site, sensor, device, raw_ts, integer, rest, seq = m.groups()
        if sensor not in SENSORS:  # the pattern has checked the ids
            return None
        return _valid_reading(
            site,
            sensor,
            device,
            raw_ts,
            _number(integer, rest),
            None if seq == "null" else int(seq),
            now,
            limits,
        )
    doc = _json_object(value)
    if doc is None or doc.get("schema") != SCHEMA_VERSION:
        return None
    site = doc.get("site")
    sensor = doc.get("sensor")
    device = doc.get("device")
    if type(site) is not str or type(sensor) is not str or type(device) is not str:
        return None
    if sensor not in SENSORS or not _valid_id(site) or not _valid_id(device):
        return None
    return _from_doc(site, sensor, device, doc, now, limits)


def _mqtt_fast(topic: str, payload: bytes, now: datetime, limits: Limits) -> Reading | None:
    if type(payload) is not bytes or len(payload) > limits.max_payload_bytes:
        return None
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != MQTT_TOPIC_ROOT:
        return None
    _, site, sensor, device = parts
    if sensor not in SENSORS or not _valid_id(site) or not _valid_id(device):
        return None
    m = _MQTT_PAYLOAD(payload.decode("latin-1"))
    if m is not None:
        raw_ts, integer, rest, seq = m.groups()
        return _valid_reading(
            site,
            sensor,
            device,
            raw_ts,
            _number(integer, rest),
            None if seq is None or seq == "null" else int(seq),
            now,
            limits,
        )
    doc = _json_object(payload)
    if doc is None:
        return None
    return _from_doc(site, sensor, device, doc, now, limits)


def parse_kafka_values(
    values: Iterable[bytes | None], now: datetime, limits: Limits = DEFAULT_LIMITS
) -> list[Reading | Rejection]:
    """parse_kafka_value for each of `values`, with the same results, at less cost per record.

    Ingest's hot loop: the pipeline's own records are matched here without a call per record,
    and readings with the same timestamp text share one datetime (a device's sensors report
    together), which also makes the writer's formatting of it a dictionary hit.
    """
    out: list[Reading | Rejection] = []
    keep = out.append
    match = _KAFKA_RECORD
    sensors = SENSORS
    isfinite = _isfinite
    fromisoformat = _fromisoformat
    make = new_reading
    max_bytes = limits.max_payload_bytes
    earliest = limits.earliest
    latest = now + limits.max_future
    times: dict[str, datetime] = {}
    for value in values:
        if type(value) is bytes and len(value) <= max_bytes:
            m = match(value.decode("latin-1"))
            if m is not None:
                site, sensor, device, raw_ts, integer, rest, seq = m.groups()
                spec = sensors.get(sensor)
                if spec is not None:
                    number = float(integer + rest) if rest else float(int(integer))
                    ts = times.get(raw_ts)
                    if ts is None:
                        ts = _timestamp(raw_ts, fromisoformat, earliest, latest)
                        if ts is not None:
                            times[raw_ts] = ts
                    if (
                        ts is not None
                        and isfinite(number)
                        and spec.minimum <= number <= spec.maximum
                    ):
                        keep(
                            make(
                                site,
                                sensor,
                                device,
                                ts,
                                number,
                                None if seq == "null" else int(seq),
                            )
                        )
                        continue
        keep(parse_kafka_value(value, now, limits))
    return out


def _timestamp(
    raw: str, fromisoformat: Callable[[str], datetime], earliest: datetime, latest: datetime
) -> datetime | None:
    """The UTC timestamp of `raw` if it passes _iso_ts's checks, else None."""
    try:
        ts = fromisoformat(raw)
    except ValueError:
        return None
    tz = ts.tzinfo
    if tz is not UTC:
        if tz is None:
            return None
        ts = ts.astimezone(UTC)
    if ts < earliest or ts > latest:
        return None
    return ts
