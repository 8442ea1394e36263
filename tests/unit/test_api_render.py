"""Read API content negotiation, JSON / CSV bodies, cursors and next links."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from energy_pipeline.api.paging import CursorError, decode_cursor, encode_cursor, iso, page_link
from energy_pipeline.api.render import NotAcceptable, csv_page, json_page, negotiate, problem
from energy_pipeline.api.spec import FORECAST_TABLE, MODEL_TABLE, READING_TABLE, SITE_TABLE

pytestmark = pytest.mark.unit

TS = datetime(2025, 1, 1, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(("fmt", "accept", "chosen"), [
    (None, None, "json"),
    (None, "", "json"),
    (None, "*/*", "json"),
    (None, "application/json", "json"),
    (None, "text/csv", "csv"),
    (None, "TEXT/CSV", "csv"),
    (None, "text/*", "csv"),
    (None, "application/*", "json"),
    (None, "text/csv, application/json", "json"),  # a tie: the server's preference
    (None, "text/csv;q=0.9, application/json;q=0.8", "csv"),
    (None, "text/csv;q=0, */*", "json"),  # the specific range's q=0 wins over */*
    (None, "application/json;q=0, */*;q=0.1", "csv"),
    (None, "text/csv;q=abc", "csv"),  # a malformed weight counts as 1
    (None, "text/html, text/csv;level=1", "csv"),
    (None, ";;,", "json"),
    ("csv", "application/json", "csv"),  # ?format= wins
    ("json", "application/xml", "json"),
])
def test_negotiate(fmt: str | None, accept: str | None, chosen: str) -> None:
    assert negotiate(fmt, accept) == chosen


@pytest.mark.parametrize("accept", ["application/xml", "text/html", "*/*;q=0",
                                    "application/json;q=0, text/csv;q=0"])
def test_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable, match="allows neither application/json nor text/csv"):
        negotiate(None, accept)


def test_json_page() -> None:
    rows = [("temperature", "0", TS, 20.5), ("temperature", "0", TS + timedelta(minutes=1),
                                              float("nan"))]
    body = json.loads(json_page(READING_TABLE, rows, {"site": "s", "from": TS}, "/next?c=1"))
    assert body == {
        "site": "s", "from": "2025-01-01T13:00:00Z",
        "data": [{"sensor": "temperature", "device": "0", "ts": "2025-01-01T13:00:00Z",
                  "value": 20.5},
                 {"sensor": "temperature", "device": "0", "ts": "2025-01-01T13:01:00Z",
                  "value": None}],
        "next": "/next?c=1",
    }


def test_csv_page_has_context_columns_and_round_trips_values() -> None:
    rows = [(TS, 1, "v1,with comma", 1.0, 0.1 + 0.2, 3.0, None)]
    text = csv_page(FORECAST_TABLE, rows, {"site": "s", "issued_at": TS}).decode()
    assert text.count("\r\n") == 2 and text.endswith("\r\n")  # RFC 4180 line ends
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == ["site", "issued_at", "target_time", "horizon", "model_version",
                         "p10", "p50", "p90", "actual"]
    assert parsed[1] == ["s", "2025-01-01T13:00:00Z", "2025-01-01T13:00:00Z", "1",
                         "v1,with comma", "1.0", "0.30000000000000004", "3.0", ""]
    assert float(parsed[1][6]) == 0.1 + 0.2
    assert csv_page(SITE_TABLE, [], {}) == b"site,first_hour,last_hour,last_forecast_issued_at\r\n"


def test_a_models_json_columns_are_json_in_csv_too() -> None:
    metrics = {"mase": 0.8, "report_split": {"test_rmse": 4.5, "n_test": 62.0}, "x": None}
    shares = [{"feature": "target_lag1", "gain": 0.75}, {"feature": "avg_humidity_lag2",
                                                         "gain": 0.25}]
    row = ("s.v1", "seed", TS, None, True, TS, metrics, shares)
    body = json.loads(json_page(MODEL_TABLE, [row], {"site": "s"}, None))
    assert body["data"][0]["metrics"] == metrics
    assert body["data"][0]["feature_importances"] == shares
    parsed = list(csv.reader(io.StringIO(csv_page(MODEL_TABLE, [row], {"site": "s"}).decode())))
    assert parsed[0] == ["site", "version", "kind", "created_at", "trained_on_until", "promoted",
                         "promoted_at", "metrics", "feature_importances"]
    assert parsed[1][:7] == ["s", "s.v1", "seed", "2025-01-01T13:00:00Z", "", "true",
                             "2025-01-01T13:00:00Z"]
    assert json.loads(parsed[1][7]) == metrics and json.loads(parsed[1][8]) == shares


def test_iso_keeps_full_precision_in_utc() -> None:
    assert iso(TS) == "2025-01-01T13:00:00Z"
    assert iso(TS.replace(microsecond=5)) == "2025-01-01T13:00:00.000005Z"
    assert iso(datetime(2025, 1, 1, 15, tzinfo=timezone(timedelta(hours=2)))) == \
        "2025-01-01T13:00:00Z"


def test_cursor_round_trip_and_rejection() -> None:
    key = ("humidity", "3", TS.replace(microsecond=123456))
    text = encode_cursor("readings", key)
    assert "=" not in text and decode_cursor("readings", text) == key
    assert decode_cursor("sites", encode_cursor("sites", ("site-0",))) == ("site-0",)
    assert decode_cursor("models", encode_cursor("models", (TS, "s.v1"))) == (TS, "s.v1")
    for kind, bad in [("hourly", text), ("readings", text[:-2]), ("readings", "!!"),
                      ("readings", ""), ("hourly", encode_cursor("hourly", ("2025-01-01",))),
                      ("hourly", encode_cursor("hourly", ("0001-01-01T00:00:00+14:00",))),
                      ("sites", encode_cursor("sites", ("",))),
                      ("sites", encode_cursor("sites", (5,)))]:
        with pytest.raises(CursorError):
            decode_cursor(kind, bad)


def test_page_link_is_relative_and_readable() -> None:
    link = page_link("/api/v1/sites/s-1/readings",
                     [("sensor", "temperature,humidity"), ("from", "2025-01-01T00:00:00Z"),
                      ("cursor", "abc_-")])
    assert link == ("/api/v1/sites/s-1/readings?sensor=temperature,humidity"
                    "&from=2025-01-01T00:00:00Z&cursor=abc_-")
    assert page_link("/x", [("to", "2025-01-01T00:00:00+01:00")]) == \
        "/x?to=2025-01-01T00:00:00%2B01:00"


def test_problem_document() -> None:
    body = json.loads(problem(400, "Bad Request", "limit: bad",
                              [{"parameter": "limit", "in": "query", "message": "bad"}]))
    assert body == {"type": "about:blank", "title": "Bad Request", "status": 400,
                    "detail": "limit: bad",
                    "errors": [{"parameter": "limit", "in": "query", "message": "bad"}]}
    assert "errors" not in json.loads(problem(404, "Not Found", "x"))
