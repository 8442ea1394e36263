"""Pure parts of the data plane: validation, contracts, settings, time parsing, simulation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from energy_pipeline.core.contracts import (
    SENSOR_NAMES,
    SENSORS,
    Reading,
    all_kafka_topics,
    format_ts,
    partition_for,
)
from energy_pipeline.core.settings import SettingsError, env, load
from energy_pipeline.core.timeutil import floor_time, parse_duration, parse_time
from energy_pipeline.core.validation import Limits, Reason, Rejection
from energy_pipeline.core.validation_fast import parse_kafka_value, parse_mqtt
from energy_pipeline.simulation.publisher import combined_messages
from energy_pipeline.simulation.signals import SimulationConfig, generate

pytestmark = pytest.mark.unit

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def mqtt(topic: str, body: object) -> list[Reading] | Rejection:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_mqtt(topic, payload, NOW)


def test_a_valid_reading_parses_with_site_sensor_device_from_the_topic() -> None:
    result = mqtt(
        "energy/site-a/temperature/3", {"ts": "2025-06-01T11:00:00Z", "value": 20.05, "seq": 7}
    )
    assert result == [
        Reading("site-a", "temperature", "3", datetime(2025, 6, 1, 11, tzinfo=UTC), 20.05, 7)
    ]


def test_offsets_are_normalised_to_utc() -> None:
    result = mqtt("energy/s/humidity/0", {"ts": "2025-06-01T13:00:00+02:00", "value": 40})
    assert isinstance(result, list)
    assert result[0].ts == datetime(2025, 6, 1, 11, tzinfo=UTC)


def test_the_combined_record_splits_into_five_readings() -> None:
    record = {
        "Timestamp": "01/01/2025 13:00",
        "DeviceId": 1,
        "Temperature": 20.05,
        "Humidity": 44.05,
        "SquareFootage": 1506.05,
        "RenewableEnergy": 6.05,
        "EnergyConsumption": 60.05,
    }
    result = mqtt("energy/site-a/combined/1", record)
    assert isinstance(result, list)
    assert [(r.sensor, r.value) for r in result] == [
        ("temperature", 20.05),
        ("humidity", 44.05),
        ("squarefootage", 1506.05),
        ("renewableenergy", 6.05),
        ("energyconsumption", 60.05),
    ]
    assert {r.ts for r in result} == {datetime(2025, 1, 1, 13, tzinfo=UTC)}
    assert {(r.site, r.device) for r in result} == {("site-a", "1")}


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("energy/s/temperature/0", b"{", Reason.MALFORMED_JSON),
        ("energy/s/temperature/0", b'{"ts":"2025-01-01T00:00:00Z","value":NaN}', Reason.NON_FINITE),
        (
            "energy/s/temperature/0",
            b'{"ts":"2025-01-01T00:00:00Z","value":1e400}',
            Reason.NON_FINITE,
        ),
        ("energy/s/temperature/0", b'{"ts":"2025-01-01T00:00:00Z","value":"1"}', Reason.WRONG_TYPE),
        (
            "energy/s/temperature/0",
            b'{"ts":"2025-01-01T00:00:00Z","value":false}',
            Reason.WRONG_TYPE,
        ),
        (
            "energy/s/temperature/0",
            b'{"ts":"2025-01-01T00:00:00Z","value":1,"seq":-1}',
            Reason.WRONG_TYPE,
        ),
        ("energy/s/temperature/0", b'"just a string"', Reason.WRONG_TYPE),
        ("energy/s/temperature/0", b'{"value":1}', Reason.MISSING_FIELD),
        ("energy/s/humidity/0", b'{"ts":"2025-01-01T00:00:00Z","value":101}', Reason.OUT_OF_RANGE),
        ("energy/s/temperature/0", b'{"ts":"2025-01-01T00:00:00","value":1}', Reason.BAD_TIMESTAMP),
        (
            "energy/s/temperature/0",
            b'{"ts":"1999-12-31T23:59:59Z","value":1}',
            Reason.BAD_TIMESTAMP,
        ),
        (
            "energy/s/temperature/0",
            b'{"ts":"2025-06-01T12:06:00Z","value":1}',
            Reason.FUTURE_TIMESTAMP,
        ),
        ("energy/s/pressure/0", b'{"ts":"2025-01-01T00:00:00Z","value":1}', Reason.UNKNOWN_SENSOR),
        ("energy/s/temperature", b'{"ts":"2025-01-01T00:00:00Z","value":1}', Reason.BAD_TOPIC),
        ("other/s/temperature/0", b'{"ts":"2025-01-01T00:00:00Z","value":1}', Reason.BAD_TOPIC),
        ("energy/s/combined/2", b'{"Timestamp":"01/01/2025 13:00","DeviceId":1}', Reason.BAD_TOPIC),
        ("energy/s/temperature/0", b"x" * 5000, Reason.OVERSIZED),
    ],
)
def test_bad_input_is_rejected_with_a_reason(topic: str, payload: bytes, reason: Reason) -> None:
    result = parse_mqtt(topic, payload, NOW)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.detail


def test_limits_are_configurable() -> None:
    payload = b'{"ts":"2025-06-01T12:30:00Z","value":1}'
    assert isinstance(parse_mqtt("energy/s/temperature/0", payload, NOW), Rejection)
    relaxed = Limits(max_future=timedelta(hours=1))
    assert isinstance(parse_mqtt("energy/s/temperature/0", payload, NOW, relaxed), list)


def test_kafka_record_round_trips() -> None:
    reading = Reading(
        "s", "energyconsumption", "2", datetime(2025, 1, 1, 0, 5, tzinfo=UTC), 61.5, 9
    )
    assert parse_kafka_value(reading.to_kafka_value(), NOW) == reading


def test_device_i_goes_to_partition_i() -> None:
    assert [partition_for(str(d), 4) for d in range(6)] == [0, 1, 2, 3, 0, 1]
    assert partition_for("boiler-a", 4) is None


def test_topic_names() -> None:
    assert all_kafka_topics("energy") == [f"energy.{s}" for s in SENSOR_NAMES] + [
        "energy.weather_forecast", "energy.deadletter"
    ]


def test_timestamps_format_as_utc_z() -> None:
    assert format_ts(datetime(2025, 1, 1, 13, tzinfo=UTC)) == "2025-01-01T13:00:00Z"
    assert (
        format_ts(datetime(2025, 1, 1, 13, 0, 0, 250_000, tzinfo=UTC)) == "2025-01-01T13:00:00.250Z"
    )


@dataclass(frozen=True, kw_only=True)
class ExampleSettings:
    host: str = env("EX_HOST", doc="required host")
    port: int = env("EX_PORT", 1883, minimum=1)
    enabled: bool = env("EX_ENABLED", False)


def test_settings_load_types_and_defaults() -> None:
    settings = load(ExampleSettings, {"EX_HOST": "h", "EX_ENABLED": "yes"})
    assert settings == ExampleSettings(host="h", port=1883, enabled=True)


def test_settings_report_every_problem_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        load(ExampleSettings, {"EX_PORT": "0", "EX_ENABLED": "maybe"})
    message = str(info.value)
    assert "EX_HOST is required" in message
    assert "EX_PORT must be at least 1" in message
    assert "EX_ENABLED" in message


def test_durations_and_times() -> None:
    assert parse_duration("5m") == timedelta(minutes=5)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("500ms") == timedelta(milliseconds=500)
    with pytest.raises(ValueError, match="duration"):
        parse_duration("5 minutes")
    assert parse_time("now-7d", NOW) == NOW - timedelta(days=7)
    assert parse_time("2025-01-01T00:00:00", NOW) == datetime(2025, 1, 1, tzinfo=UTC)
    assert floor_time(datetime(2025, 1, 1, 0, 7, 30, tzinfo=UTC), timedelta(minutes=5)) == datetime(
        2025, 1, 1, 0, 5, tzinfo=UTC
    )


def test_simulation_is_reproducible_and_physically_plausible() -> None:
    config = SimulationConfig(sites=2, devices=2, steps=288, fault_rate=0.01, seed=3)
    first = list(generate(config))
    assert first == list(generate(config))
    assert len(first) == config.total_readings
    assert len({r.key for r in first}) == len(first)
    for r in first:
        spec = SENSORS[r.sensor]
        assert spec.minimum <= r.value <= spec.maximum
    other_seed = list(generate(SimulationConfig(sites=2, devices=2, steps=288, seed=4)))
    assert [r.value for r in first] != [r.value for r in other_seed]


def test_renewables_follow_the_sun_and_consumption_follows_occupancy() -> None:
    config = SimulationConfig(
        sites=1, devices=1, steps=24 * 12, start=datetime(2025, 6, 2, tzinfo=UTC)
    )
    by_hour: dict[tuple[str, int], list[float]] = {}
    for r in generate(config):
        by_hour.setdefault((r.sensor, r.ts.hour), []).append(r.value)
    assert max(by_hour[("renewableenergy", 0)]) == 0.0
    assert min(by_hour[("renewableenergy", 12)]) > 0.0
    assert min(by_hour[("energyconsumption", 11)]) > max(by_hour[("energyconsumption", 3)])


def test_combined_messages_match_the_original_record() -> None:
    config = SimulationConfig(
        sites=1, devices=2, steps=1, start=datetime(2025, 1, 1, 13, tzinfo=UTC)
    )
    messages = list(combined_messages(generate(config)))
    assert [topic for topic, _ in messages] == [
        "energy/site-0/combined/0",
        "energy/site-0/combined/1",
    ]
    record = json.loads(messages[1][1])
    assert record["Timestamp"] == "01/01/2025 13:00"
    assert record["DeviceId"] == 1
    assert set(record) == {
        "Timestamp",
        "DeviceId",
        "Temperature",
        "Humidity",
        "SquareFootage",
        "RenewableEnergy",
        "EnergyConsumption",
    }
    parsed = parse_mqtt(messages[1][0], messages[1][1], datetime(2025, 1, 2, tzinfo=UTC))
    assert isinstance(parsed, list) and len(parsed) == 5
