"""Validation of incoming readings: every input becomes readings or one clear rejection.

Rejection reasons are a small fixed set so they can label a metric and a dead-letter header.

The parsers here are the definition: every check spelled out, in order. The bridge and ingest
use the faster copies in `validation_fast`, which return exactly what these return
(tests/unit/test_validation_fast.py compares them); this module knows nothing of them.
"""

from __future__ import annotations

import json
import re
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
    WEATHER_FORECAST,
    WEATHER_MAX_AHEAD,
    WEATHER_MAX_BEHIND,
    WEATHER_MAX_POINTS,
    WEATHER_VARIABLES,
    Limits,
    Reading,
    WeatherForecast,
    WeatherPoint,
    is_finite_number,
    topic_parts,
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


# The id rule, also matched by validation_fast's regular expressions.
ID_CHARS = r"[A-Za-z0-9_.\-]{1,64}"
_ID = re.compile(rf"^{ID_CHARS}$")
# fullmatch: `$` alone would also accept a trailing newline, which breaks COPY downstream.
valid_id = _ID.fullmatch
# The original report's combined record: "01/01/2025 13:00", month first, UTC.
_COMBINED_TS_FORMAT = "%m/%d/%Y %H:%M"


def _reject_constant(name: str) -> float:
    raise Invalid(Reason.NON_FINITE, f"{name} is not a finite number")


# Built once: json.loads(payload, parse_constant=...) builds a decoder per call. Raises
# Invalid for NaN and Infinity.
JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _load_json(payload: bytes) -> object:
    try:
        if isinstance(payload, bytes | bytearray):
            # What json.loads does with bytes, then the same decoder.
            text = payload.decode(json.detect_encoding(payload), "surrogatepass")
            return JSON_DECODER.decode(text)
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


def _parse_iso(raw: object, name: str) -> datetime:
    """An ISO 8601 time with its UTC offset, in UTC (no range checks)."""
    if not isinstance(raw, str):
        raise Invalid(
            Reason.WRONG_TYPE, f"{name} must be an ISO 8601 string, got {type(raw).__name__}")
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise Invalid(Reason.BAD_TIMESTAMP, f"{name} {raw[:40]!r} is not ISO 8601") from exc
    if ts.tzinfo is None:
        raise Invalid(Reason.BAD_TIMESTAMP, f"{name} {raw[:40]!r} has no UTC offset (add Z)")
    return ts.astimezone(UTC)


def _iso_ts(raw: object, now: datetime, limits: Limits) -> datetime:
    return _check_time(_parse_iso(raw, "ts"), now, limits)


def _seq(doc: dict[str, object]) -> int | None:
    seq = doc.get("seq")
    if seq is None:
        return None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise Invalid(Reason.WRONG_TYPE, "seq must be a non-negative integer")
    return seq


def _topic_parts(topic: str, root: str) -> tuple[str, str, str]:
    parts = topic_parts(topic, root)
    if parts is None:
        raise Invalid(
            Reason.BAD_TOPIC,
            f"topic {topic[:120]!r} is not {root[:120]}/<site>/<sensor>/<device>",
        )
    site, sensor, device = parts
    for label, ident in (("site", site), ("device", device)):
        if not valid_id(ident):
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
    topic: str, payload: bytes, now: datetime, limits: Limits = DEFAULT_LIMITS,
    root: str = MQTT_TOPIC_ROOT,
) -> list[Reading] | Rejection:
    """One MQTT message into its readings (five for a combined record), or the first check it
    fails; a topic outside `root` (the pipeline's MQTT_TOPIC_ROOT) is a BAD_TOPIC."""
    try:
        if len(payload) > limits.max_payload_bytes:
            raise Invalid(
                Reason.OVERSIZED,
                f"payload of {len(payload)} bytes exceeds {limits.max_payload_bytes}",
            )
        site, sensor, device = _topic_parts(topic, root)
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
    """A record from an `energy.<sensor>` topic, as the bridge wrote it (or someone else did),
    or the first check it fails."""
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
            if not valid_id(strings[name]):
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


# -- forecast weather ------------------------------------------------------------------------


def _weather(site: str, source: str, doc: dict[str, object], now: datetime,
             limits: Limits) -> WeatherForecast:
    issued_at = _check_time(_parse_iso(_field(doc, "issued_at"), "issued_at"), now, limits)
    entries = _field(doc, "forecasts")
    if not isinstance(entries, list) or not entries:
        raise Invalid(Reason.WRONG_TYPE, "forecasts must be a non-empty list of objects")
    if len(entries) > WEATHER_MAX_POINTS:
        raise Invalid(Reason.OVERSIZED,
                      f"{len(entries)} forecast hours exceed {WEATHER_MAX_POINTS}")
    points: dict[datetime, WeatherPoint] = {}
    for i, entry in enumerate(entries):
        where = f"forecasts[{i}]"
        entry = _require_object(entry)
        valid_time = _parse_iso(_field(entry, "valid_time"), f"{where}.valid_time")
        if not (issued_at - WEATHER_MAX_BEHIND <= valid_time <= issued_at + WEATHER_MAX_AHEAD):
            raise Invalid(Reason.BAD_TIMESTAMP,
                          f"{where}.valid_time {valid_time.isoformat()} is not within "
                          f"{WEATHER_MAX_BEHIND} before to {WEATHER_MAX_AHEAD} after issued_at")
        if valid_time in points:
            raise Invalid(Reason.BAD_TIMESTAMP,
                          f"{where}.valid_time {valid_time.isoformat()} appears twice")
        unknown = sorted(k for k in entry if k != "valid_time" and k not in WEATHER_VARIABLES)
        if unknown:
            raise Invalid(Reason.UNKNOWN_SENSOR,
                          f"{where}: unknown weather variable {unknown[0][:40]!r} "
                          f"(known: {', '.join(WEATHER_VARIABLES)})")
        values = tuple((name, _value(name, entry[name], f"{where}.{name}"))
                       for name in WEATHER_VARIABLES
                       if name in entry and entry[name] is not None)
        if not values:
            raise Invalid(Reason.MISSING_FIELD,
                          f"{where} has none of {', '.join(WEATHER_VARIABLES)}")
        points[valid_time] = WeatherPoint(valid_time, values)
    return WeatherForecast(site, source, issued_at,
                           tuple(points[t] for t in sorted(points)))


def _check_id(label: str, ident: object) -> str:
    if not isinstance(ident, str) or not valid_id(ident):
        raise Invalid(Reason.BAD_TOPIC if isinstance(ident, str) else Reason.WRONG_TYPE,
                      f"{label} id {str(ident)[:80]!r} must match {_ID.pattern}")
    return ident


def parse_weather_mqtt(
    topic: str, payload: bytes, now: datetime, limits: Limits = DEFAULT_LIMITS,
    root: str = MQTT_TOPIC_ROOT,
) -> WeatherForecast | Rejection:
    """A message on `<root>/<site>/weather_forecast/<source>`: `{"issued_at": ISO, "forecasts":
    [{"valid_time": ISO, "temperature": degC, "humidity": %}, ...]}` (each hour with at least
    one variable), or the first check it fails."""
    try:
        if len(payload) > limits.max_forecast_payload_bytes:
            raise Invalid(Reason.OVERSIZED, f"payload of {len(payload)} bytes exceeds "
                          f"{limits.max_forecast_payload_bytes}")
        parts = topic_parts(topic, root)
        if parts is None or parts[1] != WEATHER_FORECAST:
            raise Invalid(Reason.BAD_TOPIC, f"topic {topic[:120]!r} is not "
                          f"{root[:120]}/<site>/{WEATHER_FORECAST}/<source>")
        site, source = _check_id("site", parts[0]), _check_id("source", parts[2])
        return _weather(site, source, _require_object(_load_json(payload)), now, limits)
    except Invalid as exc:
        return exc.rejection


def parse_weather_kafka_value(
    value: bytes | None, now: datetime, limits: Limits = DEFAULT_LIMITS
) -> WeatherForecast | Rejection:
    """A record from the `<prefix>.weather_forecast` topic, as the bridge wrote it (or someone
    else did), or the first check it fails."""
    try:
        if value is None:
            raise Invalid(Reason.MISSING_FIELD, "record has no value")
        if len(value) > limits.max_forecast_payload_bytes:
            raise Invalid(Reason.OVERSIZED, f"record of {len(value)} bytes exceeds "
                          f"{limits.max_forecast_payload_bytes}")
        doc = _require_object(_load_json(value))
        schema = doc.get("schema")
        if schema != SCHEMA_VERSION:
            raise Invalid(Reason.UNSUPPORTED_SCHEMA, f"schema {schema!r} is not {SCHEMA_VERSION}")
        site = _check_id("site", _field(doc, "site"))
        source = _check_id("source", _field(doc, "source"))
        return _weather(site, source, doc, now, limits)
    except Invalid as exc:
        return exc.rejection
