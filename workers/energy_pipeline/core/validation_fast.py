"""Fast copies of `validation`'s parsers, for the bridge's and ingest's per-message loops.

The parsers run once per message, so the common case, a well-formed reading, takes a short
path: the same checks, folded together. It returns None on anything unusual, and the readable
parser in `validation` then finds the reason. Whatever the short path returns, the readable
parser returns too (tests/unit/test_validation_fast.py compares them on the same inputs), so a
change of a rule goes into `validation` first and then here.

Records exactly as this pipeline writes them (Reading.to_kafka_value, to_mqtt_payload: these
keys in this order, no whitespace, ids without escapes) are read by one regular expression
instead of the JSON decoder; anything else goes through the decoder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from energy_pipeline.core import validation
from energy_pipeline.core.contracts import (
    DEFAULT_LIMITS,
    MQTT_TOPIC_ROOT,
    SCHEMA_VERSION,
    SENSORS,
    Limits,
    Reading,
    new_reading,
    topic_parts,
)
from energy_pipeline.core.validation import ID_CHARS, JSON_DECODER, Invalid, Rejection, valid_id

_NUMBER = r"(-?(?:0|[1-9][0-9]{0,17}))((?:\.[0-9]{1,30})?(?:[eE][+\-]?[0-9]{1,3})?)"
_SEQ = r"(0|[1-9][0-9]{0,17}|null)"
_TS = r'"ts":"([0-9T:.+\-Z]{1,40})"'
_KAFKA_RECORD = re.compile(
    rf'\{{"schema":{SCHEMA_VERSION},"site":"({ID_CHARS})","sensor":"([a-z]{{1,32}})",'
    rf'"device":"({ID_CHARS})",{_TS},"value":{_NUMBER},"seq":{_SEQ}\}}'
).fullmatch
_MQTT_PAYLOAD = re.compile(rf'\{{{_TS},"value":{_NUMBER}(?:,"seq":{_SEQ})?\}}').fullmatch

_decode = JSON_DECODER.decode
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
    if sensor not in SENSORS or not valid_id(site) or not valid_id(device):
        return None
    return _from_doc(site, sensor, device, doc, now, limits)


def _mqtt_fast(
    topic: str, payload: bytes, now: datetime, limits: Limits, root: str
) -> Reading | None:
    if type(payload) is not bytes or len(payload) > limits.max_payload_bytes:
        return None
    parts = topic_parts(topic, root)
    if parts is None:
        return None
    site, sensor, device = parts
    if sensor not in SENSORS or not valid_id(site) or not valid_id(device):
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


def parse_mqtt(
    topic: str, payload: bytes, now: datetime, limits: Limits = DEFAULT_LIMITS,
    root: str = MQTT_TOPIC_ROOT,
) -> list[Reading] | Rejection:
    """validation.parse_mqtt: one MQTT message into its readings, or why not."""
    fast = _mqtt_fast(topic, payload, now, limits, root)
    if fast is not None:
        return [fast]
    return validation.parse_mqtt(topic, payload, now, limits, root)


def parse_kafka_value(
    value: bytes | None, now: datetime, limits: Limits = DEFAULT_LIMITS
) -> Reading | Rejection:
    """validation.parse_kafka_value: a record from an `energy.<sensor>` topic, or why not."""
    fast = _kafka_fast(value, now, limits)
    if fast is not None:
        return fast
    return validation.parse_kafka_value(value, now, limits)


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
    """The UTC timestamp of `raw` if it passes validation's ts checks, else None."""
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
