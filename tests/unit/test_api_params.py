"""Read API request parsing: defaults, every validation rule, and the messages a 400 carries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from energy_pipeline.api.paging import encode_cursor
from energy_pipeline.api.params import (
    BadRequest,
    check_site,
    parse_forecasts,
    parse_hourly,
    parse_models,
    parse_readings,
    parse_sites,
    query_from_mapping,
)
from energy_pipeline.api.settings import ApiSettings, PageSizes
from energy_pipeline.api.spec import routes
from energy_pipeline.core.contracts import SENSOR_NAMES
from energy_pipeline.core.settings import SettingsError, load

pytestmark = pytest.mark.unit

PAGES = PageSizes(default=100, maximum=1000)
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ROUTES = {r.name: r for r in routes(PAGES)}


def q(**values: str | list[str]) -> object:
    return query_from_mapping({k: v if isinstance(v, list) else [v] for k, v in values.items()})


def readings(**values: str | list[str]):
    return parse_readings("site-0", q(**values), ROUTES["getReadings"].query_params, PAGES, NOW)


def errors(call, **values: str | list[str]) -> dict[str, str]:
    with pytest.raises(BadRequest) as caught:
        call(**values)
    return {e.parameter: e.message for e in caught.value.errors}


def test_readings_defaults() -> None:
    r = readings()
    assert (r.start, r.end) == (NOW - timedelta(hours=24), NOW)
    assert r.sensors == SENSOR_NAMES and r.devices is None
    assert r.common.limit == 100 and r.common.format is None and r.after is None


def test_sensor_lists_comma_or_repeated_deduplicated_in_contract_order() -> None:
    r = readings(sensor=["energyconsumption,temperature", "temperature"])
    assert r.sensors == ("temperature", "energyconsumption")
    assert ("sensor", "temperature,energyconsumption") in r.common.echo


def test_unknown_sensor_names_the_known_ones() -> None:
    found = errors(readings, sensor="temp,humidity,x")
    assert found == {"sensor": "unknown sensor 'temp', 'x'; known: " + ", ".join(SENSOR_NAMES)}
    assert "empty item" in errors(readings, sensor="temperature,,humidity")["sensor"]


@pytest.mark.parametrize("device", ["a b", "0;1", "x" * 65, "dev/1", ""])
def test_device_ids_follow_the_topic_id_rule(device: str) -> None:
    assert "sensor" not in errors(readings, device=device)
    assert "device" in errors(readings, device=device)


def test_times_iso_or_relative_resolved_once() -> None:
    r = readings(**{"from": "now-2h", "to": "2025-06-01T13:30:00+02:00"})
    assert r.start == NOW - timedelta(hours=2)
    assert r.end == datetime(2025, 6, 1, 11, 30, tzinfo=UTC)
    r = readings(**{"from": "2025-05-31"})
    assert r.start == datetime(2025, 5, 31, tzinfo=UTC) and r.end == NOW
    # Only `to`: the window is the span before it.
    r = readings(to="2025-01-02T00:00:00Z")
    assert r.start == datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("text", ["yesterday", "", "now-", "now-1e3d", "2025-02-30",
                                  "now-3000000d", "0001-01-01T00:00:00+14:00", "now*2"])
def test_bad_times(text: str) -> None:
    assert "is not a time" in errors(readings, **{"from": text})["from"]


def test_from_after_to() -> None:
    found = errors(readings, **{"from": "2025-01-02T00:00:00Z", "to": "2025-01-01T00:00:00Z"})
    assert found == {"from": "from (2025-01-02T00:00:00Z) is after to (2025-01-01T00:00:00Z)"}
    empty = readings(**{"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"})
    assert empty.start == empty.end


def test_default_window_before_the_earliest_time_is_an_error_not_a_crash() -> None:
    assert "too early" in errors(readings, to="0001-01-01T01:00:00Z")["to"]


@pytest.mark.parametrize(("raw", "ok"), [("1", True), ("1000", True), ("01", True),
                                         ("0", False), ("1001", False), ("-1", False),
                                         (" 5", False), ("5.0", False), ("1e3", False),
                                         ("9" * 30, False)])
def test_limit_bounds(raw: str, ok: bool) -> None:
    if ok:
        assert readings(limit=raw).common.limit == int(raw)
    else:
        assert errors(readings, limit=raw) == {
            "limit": f"must be an integer from 1 to 1000, got {raw!r}"}


def test_format_and_unknown_and_repeated_parameters() -> None:
    assert readings(format="csv").common.format == "csv"
    assert errors(readings, format="xml") == {"format": "must be one of json, csv, got 'xml'"}
    found = errors(readings, sensors="temperature", limit=["5", "6"])
    assert found["sensors"] == ("unknown parameter; this endpoint accepts: cursor, device, "
                                "format, from, limit, sensor, to")
    assert found["limit"] == "given more than once"


def test_all_problems_are_reported_together() -> None:
    found = errors(readings, sensor="x", device="a b", limit="0", cursor="!", format="pdf",
                   **{"from": "never"})
    assert set(found) == {"sensor", "device", "limit", "cursor", "format", "from"}


def test_readings_cursor_round_trip_and_checks() -> None:
    ts = datetime(2025, 5, 31, 23, 59, 59, 123456, tzinfo=UTC)
    cursor = encode_cursor("readings", ("humidity", "2", ts))
    assert readings(cursor=cursor).after == ("humidity", "2", ts)
    assert readings(cursor=cursor, device="1,2").after == ("humidity", "2", ts)
    assert "other devices" in errors(readings, cursor=cursor, device="1,3")["cursor"]
    for bad in (encode_cursor("hourly", (ts,)), encode_cursor("readings", ("nope", "2", ts)),
                encode_cursor("readings", ("humidity", "a b", ts)), cursor[:-3], "%%%"):
        assert "not a cursor" in errors(readings, cursor=bad)["cursor"]


def test_sites_cursor_must_hold_a_site_id() -> None:
    params = ROUTES["listSites"].query_params
    assert parse_sites(q(cursor=encode_cursor("sites", ("site-9",))), params, PAGES).after == \
        "site-9"
    with pytest.raises(BadRequest, match="cursor"):
        parse_sites(q(cursor=encode_cursor("sites", ("\x00",))), params, PAGES)


def test_hourly_defaults_to_a_week() -> None:
    h = parse_hourly("s", q(), ROUTES["getHourly"].query_params, PAGES, NOW)
    assert (h.start, h.end, h.after) == (NOW - timedelta(days=7), NOW, None)


def test_forecasts_issued_latest_or_as_of() -> None:
    params = ROUTES["getForecasts"].query_params
    assert parse_forecasts("s", q(), params, PAGES, NOW).issued_by is None
    assert parse_forecasts("s", q(issued="latest"), params, PAGES, NOW).issued_by is None
    f = parse_forecasts("s", q(issued="now-1d"), params, PAGES, NOW)
    assert f.issued_by == NOW - timedelta(days=1) and f.start is None and f.end is None
    with pytest.raises(BadRequest, match="issued: 'newest' is neither latest nor a time"):
        parse_forecasts("s", q(issued="newest"), params, PAGES, NOW)
    with pytest.raises(BadRequest, match=r"from: from .* is after to"):
        parse_forecasts("s", q(**{"from": "now", "to": "now-1h"}), params, PAGES, NOW)


def test_models_promoted_filter_and_cursor() -> None:
    params = ROUTES["getModels"].query_params
    every = parse_models("s", q(), params, PAGES)
    assert (every.promoted, every.after, every.common.limit) == (None, None, 100)
    promoted = parse_models("s", q(promoted="true", limit="5"), params, PAGES)
    assert promoted.promoted is True
    assert ("promoted", "true") in promoted.common.echo  # carried into next links
    assert parse_models("s", q(promoted="false"), params, PAGES).promoted is False
    key = (NOW, "s.20250601T120000Z.abcd")
    resumed = parse_models("s", q(cursor=encode_cursor("models", key)), params, PAGES)
    assert resumed.after == key
    problems = errors(lambda **v: parse_models("s", q(**v), params, PAGES),
                      promoted="yes", cursor=encode_cursor("hourly", (NOW,)), issued="latest")
    assert problems["promoted"] == "must be true or false, got 'yes'"
    assert problems["cursor"] == "not a cursor of the models endpoint"
    assert "unknown parameter" in problems["issued"]


@pytest.mark.parametrize(("site", "ok"), [("site-0", True), ("a.b_c-D9", True), ("x" * 64, True),
                                          ("x" * 65, False), ("", False), ("a b", False),
                                          ("a\n", False), ("é", False)])
def test_site_ids(site: str, ok: bool) -> None:
    assert check_site(site) is ok


def test_settings_defaults_and_consistency() -> None:
    s = load(ApiSettings, {"DATABASE_URL": "postgresql://x/y", "API_TOKENS_FILE": "/t"})
    assert (s.api_port, s.http_port, s.api_default_page_size, s.api_max_page_size,
            s.api_statement_timeout_ms, s.api_db_pool_size) == (8000, 9104, 1000, 10000, 5000, 4)
    with pytest.raises(SettingsError, match=r"API_DEFAULT_PAGE_SIZE .* must not exceed"):
        load(ApiSettings, {"DATABASE_URL": "x", "API_DEFAULT_PAGE_SIZE": "20",
                           "API_MAX_PAGE_SIZE": "10", "API_TOKENS_FILE": "/t"})
    with pytest.raises(SettingsError, match="DATABASE_URL is required"):
        load(ApiSettings, {})
    with pytest.raises(SettingsError, match="API_MAX_PAGE_SIZE must be at least 1"):
        load(ApiSettings, {"DATABASE_URL": "x", "API_MAX_PAGE_SIZE": "0"})
