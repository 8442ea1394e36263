"""Reading.to_kafka_value's fast path writes exactly what the JSON encoder writes."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from energy_pipeline.core.contracts import SCHEMA_VERSION, Reading, format_ts

pytestmark = pytest.mark.unit


def encoded_by_json(r: Reading) -> bytes:
    record = {
        "schema": SCHEMA_VERSION,
        "site": r.site,
        "sensor": r.sensor,
        "device": r.device,
        "ts": format_ts(r.ts),
        "value": r.value,
        "seq": r.seq,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def test_fast_and_general_encodings_agree_byte_for_byte() -> None:
    rnd = random.Random(7)
    values = [0.0, -0.0, 1e16, 1e-7, 123.456, 5e-324, 1.7976931348623157e308, 20, True]
    values += [float("nan"), float("inf")]
    for _ in range(5000):
        reading = Reading(
            rnd.choice(["site-1", 'si"te', "s\n", "a.b_c-d", "é"]),
            rnd.choice(["temperature", "energyconsumption", "bogus"]),
            rnd.choice(["0", "12", "dev-x", "d\\1"]),
            datetime(2025, 1, 1, tzinfo=UTC) + timedelta(microseconds=rnd.randrange(10**12)),
            rnd.choice([*values, rnd.uniform(-1e6, 1e6)]),
            rnd.choice([None, 0, 12345, 2**70]),
        )
        assert reading.to_kafka_value() == encoded_by_json(reading)


def test_the_record_is_json_with_every_field() -> None:
    reading = Reading("site-1", "humidity", "3", datetime(2025, 1, 1, 0, 0, 1, 500, UTC), 41.5)
    assert json.loads(reading.to_kafka_value()) == {
        "schema": SCHEMA_VERSION,
        "site": "site-1",
        "sensor": "humidity",
        "device": "3",
        "ts": "2025-01-01T00:00:01.000500Z",
        "value": 41.5,
        "seq": None,
    }
