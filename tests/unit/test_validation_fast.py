"""validation_fast's parsers agree with validation's readable ones, input for input.

parse_kafka_value and parse_mqtt run once per message, so the common case, a well-formed
reading, takes a short path (a regular expression for records exactly as this pipeline
writes them, else the JSON decoder with the checks folded together). Whatever the short path
accepts, the readable parser must accept identically; whatever it does not, the readable
parser decides. Here both run over well-formed records and thousands of mutations of them.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from energy_pipeline.core import validation, validation_fast
from energy_pipeline.core.contracts import (
    MQTT_TOPIC_ROOT,
    SENSOR_NAMES,
    SENSORS,
    Reading,
    format_ts,
    mqtt_topic,
    new_reading,
)
from energy_pipeline.core.validation import Limits, Reason, Rejection
from energy_pipeline.core.validation_fast import _kafka_fast, _mqtt_fast, parse_kafka_values

pytestmark = pytest.mark.unit

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits()


def exact(result: object) -> object:
    """A comparable form that also tells 0.0 from -0.0, 1 from 1.0 and the time zone."""
    if isinstance(result, list):
        return [exact(r) for r in result]
    if isinstance(result, Reading):
        return (
            result.site,
            result.sensor,
            result.device,
            result.ts,
            result.ts.tzinfo,
            type(result.value),
            repr(result.value),
            type(result.seq),
            result.seq,
        )
    return result


def random_reading(rng: random.Random) -> Reading:
    sensor = rng.choice(SENSOR_NAMES)
    spec = SENSORS[sensor]
    kind = rng.random()
    if kind < 0.1:
        value: float = float(rng.randint(int(spec.minimum), int(min(spec.maximum, 10**6))))
    elif kind < 0.15:
        value = rng.choice([spec.minimum, spec.maximum, 0.0, 1e-7, 123456.789e-3])
    else:
        value = round(rng.uniform(spec.minimum, spec.maximum), rng.randint(0, 17))
    ts = NOW - timedelta(seconds=rng.randint(0, 10**8))
    ts = ts.replace(microsecond=rng.choice([0, 0, 120000, 123456, rng.randint(0, 999999)]))
    return Reading(
        rng.choice(["site-0", "s", "A.b_c-9", "x" * 64]),
        sensor,
        rng.choice(["0", "17", "dev.a-1"]),
        ts,
        value,
        rng.choice([None, 0, 7, 2**40]),
    )


def variants(reading: Reading, rng: random.Random) -> list[dict[str, object]]:
    """JSON documents for a reading beyond the canonical form."""
    ts = format_ts(reading.ts)
    doc: dict[str, object] = {
        "schema": 1,
        "site": reading.site,
        "sensor": reading.sensor,
        "device": reading.device,
        "ts": ts,
        "value": reading.value,
        "seq": reading.seq,
    }
    shuffled = list(doc.items())
    rng.shuffle(shuffled)
    offset = reading.ts.astimezone(timezone(timedelta(hours=rng.choice([-5, 2, 5.5]))))
    out = [
        dict(shuffled),
        {**doc, "ts": offset.isoformat()},
        {**doc, "ts": ts.replace("Z", "+00:00")},
        {**doc, "ts": ts.replace("T", " ")},
        {k: v for k, v in doc.items() if k != "seq"},
    ]
    if reading.value == int(reading.value) and abs(reading.value) < 1e15:
        out.append({**doc, "value": int(reading.value)})
    return out


TOKENS = [
    '"', "\\", "\\n", "\n", " ", ",", ":", "{", "}", "[]", "null", "true", "NaN", "-Infinity",
    "1e400", "-0", "-0.0", "0.0", "00", "1" * 40, "\\u00e9", "é", "\\ud800", "Z", "+01:00",
    "T", "2025", ".5", "e5", "-", "\x00",
]  # fmt: skip


def mutations(payload: bytes, rng: random.Random, count: int) -> list[bytes]:
    text = payload.decode()
    out = []
    for _ in range(count):
        s = text
        for _ in range(rng.randint(1, 2)):
            i = rng.randrange(len(s) + 1)
            j = min(len(s), i + rng.choice([0, 0, 1, 1, 2, 5]))
            s = s[:i] + rng.choice(["", *TOKENS]) + s[j:]
        out.append(s.encode("utf-8", "surrogatepass"))
    return out


def kafka_corpus(seed: int, readings: int = 300, per_reading: int = 30) -> list[bytes]:
    rng = random.Random(seed)
    corpus: list[bytes] = []
    for _ in range(readings):
        reading = random_reading(rng)
        canonical = reading.to_kafka_value()
        corpus.append(canonical)
        corpus += [json.dumps(d).encode() for d in variants(reading, rng)]
        corpus += [json.dumps(d, separators=(",", ":")).encode() for d in variants(reading, rng)]
        corpus += mutations(canonical, rng, per_reading)
    corpus += [
        b"",
        b"{}",
        b"[" * 2000 + b"]" * 2000,
        b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}",
        "\ufeff".encode() + corpus[0],
        corpus[0].decode().encode("utf-16"),
        corpus[0] + b"\n",
        b" " + corpus[0],
        corpus[0].replace(b'"value":', b'"value":' + b"9" * 400 + b","),
    ]
    return corpus


@pytest.mark.parametrize("seed", range(4))
def test_kafka_fast_path_agrees_with_the_readable_parser(seed: int) -> None:
    accepted = 0
    for value in kafka_corpus(seed):
        readable = validation.parse_kafka_value(value, NOW, LIMITS)
        assert exact(validation_fast.parse_kafka_value(value, NOW, LIMITS)) == exact(readable), (
            value
        )
        fast = _kafka_fast(value, NOW, LIMITS)
        if fast is not None:
            accepted += 1
            assert exact(fast) == exact(readable), value
    assert accepted > 1000  # the short path does carry the common case


@pytest.mark.parametrize("seed", range(4))
def test_the_batch_parser_agrees_with_the_readable_parser(seed: int) -> None:
    corpus = kafka_corpus(seed + 10, readings=200, per_reading=10)
    # Repeated timestamps share a datetime in a batch: repeat records, in another order too.
    corpus += random.Random(seed).sample(corpus, len(corpus) // 2)
    corpus += [None, bytearray(corpus[0])]  # type: ignore[list-item]
    expected = [exact(validation.parse_kafka_value(v, NOW, LIMITS)) for v in corpus]
    assert [exact(r) for r in parse_kafka_values(corpus, NOW, LIMITS)] == expected
    assert parse_kafka_values([], NOW, LIMITS) == []
    tight = Limits(max_payload_bytes=100, max_future=timedelta(0))
    expected = [exact(validation.parse_kafka_value(v, NOW, tight)) for v in corpus]
    assert [exact(r) for r in parse_kafka_values(corpus, NOW, tight)] == expected


@pytest.mark.parametrize("seed", range(4))
def test_mqtt_fast_path_agrees_with_the_readable_parser(seed: int) -> None:
    rng = random.Random(seed)
    accepted = 0
    for _ in range(300):
        reading = random_reading(rng)
        topics = [
            mqtt_topic(reading.site, reading.sensor, reading.device),
            mqtt_topic(reading.site + "\n", reading.sensor, reading.device),
            mqtt_topic(reading.site, reading.sensor, reading.device + "\n"),
            mqtt_topic(reading.site, "pressure", reading.device),
            mqtt_topic(reading.site, reading.sensor, reading.device) + "/x",
        ]
        canonical = reading.to_mqtt_payload()
        payloads = [canonical, *mutations(canonical, rng, 30)]
        for doc in variants(reading, rng):
            doc = {k: v for k, v in doc.items() if k in ("ts", "value", "seq")}
            payloads.append(json.dumps(doc).encode())
        for topic in topics:
            for payload in payloads:
                readable = validation.parse_mqtt(topic, payload, NOW, LIMITS)
                assert exact(validation_fast.parse_mqtt(topic, payload, NOW, LIMITS)) == exact(
                    readable
                ), (
                    topic,
                    payload,
                )
                fast = _mqtt_fast(topic, payload, NOW, LIMITS, MQTT_TOPIC_ROOT)
                if fast is not None:
                    accepted += 1
                    assert exact([fast]) == exact(readable), (topic, payload)
    assert accepted > 1000


def test_the_readable_module_does_not_import_the_fast_one() -> None:
    """validation is read on its own; the fast copies follow it, never the other way round."""
    probe = (
        "import sys, energy_pipeline.core.validation;"
        "sys.exit('energy_pipeline.core.validation_fast' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)


def test_canonical_records_take_the_short_path_and_round_trip() -> None:
    rng = random.Random(1)
    for _ in range(500):
        reading = random_reading(rng)
        assert exact(_kafka_fast(reading.to_kafka_value(), NOW, LIMITS)) == exact(reading)
        topic = mqtt_topic(reading.site, reading.sensor, reading.device)
        fast = _mqtt_fast(topic, reading.to_mqtt_payload(), NOW, LIMITS, MQTT_TOPIC_ROOT)
        assert exact(fast) == exact(reading)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"-0", 0.0), (b"-0.0", -0.0), (b"5", 5.0), (b"5.0", 5.0), (b"1e1", 10.0), (b"25E-1", 2.5)],
)
def test_numbers_read_as_the_json_decoder_reads_them(value: bytes, expected: float) -> None:
    record = (
        b'{"schema":1,"site":"s","sensor":"temperature","device":"0",'
        b'"ts":"2025-01-01T00:00:00Z","value":' + value + b',"seq":null}'
    )
    fast = _kafka_fast(record, NOW, LIMITS)
    assert fast is not None
    assert repr(fast.value) == repr(expected)
    assert exact(fast) == exact(validation.parse_kafka_value(record, NOW, LIMITS))


def test_an_id_with_a_trailing_newline_is_rejected() -> None:
    """It would end the row early in ingest's COPY and stall the partition."""
    record = Reading("s\n", "temperature", "0", NOW, 1.0).to_kafka_value()
    result = validation_fast.parse_kafka_value(record, NOW)
    assert isinstance(result, Rejection) and result.reason == Reason.WRONG_TYPE
    payload = b'{"ts":"2025-01-01T00:00:00Z","value":1}'
    for topic in ("energy/s\n/temperature/0", "energy/s/temperature/0\n"):
        result = validation_fast.parse_mqtt(topic, payload, NOW)
        assert isinstance(result, Rejection) and result.reason == Reason.BAD_TOPIC


def test_an_integer_too_large_for_a_float_is_rejected_not_raised() -> None:
    payload = b'{"ts":"2025-01-01T00:00:00Z","value":1' + b"0" * 400 + b"}"
    result = validation_fast.parse_mqtt("energy/s/temperature/0", payload, NOW)
    assert isinstance(result, Rejection) and result.reason == Reason.OUT_OF_RANGE


def test_deeply_nested_json_is_rejected_not_raised() -> None:
    payload = b"[" * 2000 + b"]" * 2000
    for result in (
        validation_fast.parse_mqtt("energy/s/temperature/0", payload, NOW),
        validation_fast.parse_kafka_value(payload, NOW),
    ):
        assert isinstance(result, Rejection) and result.reason == Reason.MALFORMED_JSON


def test_new_reading_is_a_reading() -> None:
    args = ("s", "humidity", "3", NOW, 41.5, 9)
    made = new_reading(*args)
    assert type(made) is Reading
    assert made == Reading(*args) and hash(made) == hash(Reading(*args))
    assert repr(made) == repr(Reading(*args))
    assert new_reading(*args[:5]) == Reading(*args[:5])
    with pytest.raises(AttributeError):
        made.value = 1.0  # type: ignore[misc]


def _format_ts_before(ts: datetime) -> str:
    ts = ts.astimezone(UTC)
    if not ts.microsecond:
        spec = "seconds"
    elif ts.microsecond % 1000:
        spec = "microseconds"
    else:
        spec = "milliseconds"
    return ts.isoformat(timespec=spec).replace("+00:00", "Z")


def test_format_ts_and_record_encoding_are_unchanged() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        reading = random_reading(rng)
        zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
        for zone in zones:
            ts = reading.ts.astimezone(zone)
            assert format_ts(ts) == _format_ts_before(ts)
        doc = {
            "schema": 1,
            "site": reading.site,
            "sensor": reading.sensor,
            "device": reading.device,
            "ts": _format_ts_before(reading.ts),
            "value": reading.value,
            "seq": reading.seq,
        }
        assert reading.to_kafka_value() == json.dumps(doc, separators=(",", ":")).encode()
    naive = datetime(2025, 1, 1, 12, 30)
    assert format_ts(naive) == _format_ts_before(naive)
    assert math.isnan(
        json.loads(Reading("s", "humidity", "0", NOW, math.nan).to_kafka_value())["value"]
    )


@pytest.mark.parametrize("root", ["campus-b", "grid/region-1/campus"])
def test_a_pipelines_topic_root_is_parsed_and_others_are_bad_topics(root: str) -> None:
    """Both parsers take the pipeline's topic root (MQTT_TOPIC_ROOT): its own devices'
    readings pass, the same message under another pipeline's root is a bad topic."""
    payload = b'{"ts":"2025-01-01T00:00:00Z","value":21.5}'
    own = mqtt_topic("site-1", "temperature", "dev-1", root)
    for parse in (validation.parse_mqtt, validation_fast.parse_mqtt):
        result = parse(own, payload, NOW, LIMITS, root)
        assert isinstance(result, list) and [(r.site, r.sensor, r.device) for r in result] == [
            ("site-1", "temperature", "dev-1")]
        for other in (mqtt_topic("site-1", "temperature", "dev-1"),  # the default root
                      f"{root}x/site-1/temperature/dev-1", f"{root}/site-1/temperature",
                      f"x/{own}"):
            rejected = parse(other, payload, NOW, LIMITS, root)
            assert isinstance(rejected, Rejection) and rejected.reason == "bad_topic", other
