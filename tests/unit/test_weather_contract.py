"""The forecast-weather contract (issue #20): MQTT `<root>/<site>/weather_forecast/<source>`
in, one record per issue on `<prefix>.weather_forecast`, every check with its reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from energy_pipeline.core.contracts import (
    WEATHER_MAX_POINTS,
    Limits,
    WeatherForecast,
    weather_topic,
)
from energy_pipeline.core.validation import (
    Reason,
    Rejection,
    parse_weather_kafka_value,
    parse_weather_mqtt,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 5, 6, 30, tzinfo=UTC)
TOPIC = "energy/site-1/weather_forecast/met"


def payload(issued: str = "2026-01-05T06:00:00Z", hours: int = 3, **extra: object) -> bytes:
    start = datetime(2026, 1, 5, 7, tzinfo=UTC)
    forecasts = [{"valid_time": (start + timedelta(hours=h)).isoformat().replace("+00:00", "Z"),
                  "temperature": 1.5 + h % 10, "humidity": 80.0} for h in range(hours)]
    return json.dumps({"issued_at": issued, "forecasts": forecasts, **extra}).encode()


def reason(result: object) -> Reason:
    assert isinstance(result, Rejection), result
    return result.reason


def test_a_forecast_goes_to_kafka_and_back_unchanged() -> None:
    parsed = parse_weather_mqtt(TOPIC, payload(), NOW)
    assert isinstance(parsed, WeatherForecast)
    assert (parsed.site, parsed.source, parsed.key) == ("site-1", "met", "site-1/met")
    assert parsed.issued_at == datetime(2026, 1, 5, 6, tzinfo=UTC)
    assert [p.valid_time.hour for p in parsed.points] == [7, 8, 9]
    assert parsed.points[2].values == (("temperature", 3.5), ("humidity", 80.0))
    again = parse_weather_kafka_value(parsed.to_kafka_value(), NOW)
    assert again == parsed
    assert parse_weather_mqtt(TOPIC, parsed.to_mqtt_payload(), NOW) == parsed
    assert weather_topic("alpha") == "alpha.weather_forecast"


def test_hours_are_sorted_and_a_variable_may_be_missing_from_some() -> None:
    body = {"issued_at": "2026-01-05T07:00:00+01:00", "forecasts": [
        {"valid_time": "2026-01-05T09:00:00Z", "temperature": 2.0},
        {"valid_time": "2026-01-05T08:00:00Z", "humidity": 70, "temperature": None}]}
    parsed = parse_weather_mqtt(TOPIC, json.dumps(body).encode(), NOW)
    assert isinstance(parsed, WeatherForecast)
    assert parsed.issued_at == datetime(2026, 1, 5, 6, tzinfo=UTC)  # offsets become UTC
    assert [(p.valid_time.hour, p.values) for p in parsed.points] == [
        (8, (("humidity", 70.0),)), (9, (("temperature", 2.0),))]


@pytest.mark.parametrize(("topic", "body", "expected", "words"), [
    ("energy/site-1/temperature/met", payload(), Reason.BAD_TOPIC, "weather_forecast"),
    ("other/site-1/weather_forecast/met", payload(), Reason.BAD_TOPIC, "energy/<site>"),
    ("energy/site 1/weather_forecast/met", payload(), Reason.BAD_TOPIC, "site id"),
    (TOPIC, b"{", Reason.MALFORMED_JSON, "JSON"),
    (TOPIC, b"[]", Reason.WRONG_TYPE, "object"),
    (TOPIC, json.dumps({"forecasts": []}).encode(), Reason.MISSING_FIELD, "issued_at"),
    (TOPIC, payload(issued="2026-01-05T06:00:00"), Reason.BAD_TIMESTAMP, "offset"),
    (TOPIC, payload(issued="2026-01-06T06:00:00Z"), Reason.FUTURE_TIMESTAMP, "ahead"),
    (TOPIC, payload(hours=0), Reason.WRONG_TYPE, "non-empty"),
    (TOPIC, payload(issued="2025-12-01T00:00:00Z"), Reason.BAD_TIMESTAMP, "16 days"),
    (TOPIC, json.dumps({"issued_at": "2026-01-05T06:00:00Z", "forecasts": [
        {"valid_time": "2026-01-05T07:00:00Z", "windspeed": 3}]}).encode(),
     Reason.UNKNOWN_SENSOR, "windspeed"),
    (TOPIC, json.dumps({"issued_at": "2026-01-05T06:00:00Z", "forecasts": [
        {"valid_time": "2026-01-05T07:00:00Z"}]}).encode(), Reason.MISSING_FIELD, "none of"),
    (TOPIC, json.dumps({"issued_at": "2026-01-05T06:00:00Z", "forecasts": [
        {"valid_time": "2026-01-05T07:00:00Z", "temperature": 99}]}).encode(),
     Reason.OUT_OF_RANGE, "temperature 99"),
    (TOPIC, json.dumps({"issued_at": "2026-01-05T06:00:00Z", "forecasts": [
        {"valid_time": "2026-01-05T07:00:00Z", "temperature": "3"}]}).encode(),
     Reason.WRONG_TYPE, "must be a number"),
    (TOPIC, b'{"issued_at": "2026-01-05T06:00:00Z", "forecasts": [{"valid_time": '
     b'"2026-01-05T07:00:00Z", "temperature": NaN}]}', Reason.NON_FINITE, "finite"),
    (TOPIC, json.dumps({"issued_at": "2026-01-05T06:00:00Z", "forecasts": [
        {"valid_time": "2026-01-05T07:00:00Z", "temperature": 1},
        {"valid_time": "2026-01-05T08:00:00+01:00", "temperature": 2}]}).encode(),
     Reason.BAD_TIMESTAMP, "appears twice"),
])
def test_each_bad_message_is_rejected_with_its_reason(
        topic: str, body: bytes, expected: Reason, words: str) -> None:
    result = parse_weather_mqtt(topic, body, NOW)
    assert reason(result) == expected
    assert words in result.detail  # type: ignore[union-attr]


def test_size_and_hour_limits() -> None:
    assert reason(parse_weather_mqtt(TOPIC, payload(hours=3), NOW,
                                     Limits(max_forecast_payload_bytes=100))) == Reason.OVERSIZED
    # 16 days of hours fit the default payload limit; one more hour is refused by count.
    assert isinstance(parse_weather_mqtt(TOPIC, payload(hours=WEATHER_MAX_POINTS), NOW),
                      WeatherForecast)
    too_many = parse_weather_mqtt(TOPIC, payload(hours=WEATHER_MAX_POINTS + 1), NOW)
    assert reason(too_many) == Reason.OVERSIZED


def test_a_kafka_record_is_checked_as_strictly() -> None:
    good = parse_weather_mqtt(TOPIC, payload(), NOW)
    assert isinstance(good, WeatherForecast)
    doc = json.loads(good.to_kafka_value())
    assert reason(parse_weather_kafka_value(None, NOW)) == Reason.MISSING_FIELD
    for change, expected in (({"schema": 2}, Reason.UNSUPPORTED_SCHEMA),
                             ({"site": "a/b"}, Reason.BAD_TOPIC),
                             ({"source": 7}, Reason.WRONG_TYPE),
                             ({"forecasts": "none"}, Reason.WRONG_TYPE)):
        bad = json.dumps({**doc, **change}).encode()
        assert reason(parse_weather_kafka_value(bad, NOW)) == expected, change
