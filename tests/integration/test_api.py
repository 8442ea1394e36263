"""The read API as a real process (`energy-pipeline api`) against a real PostgreSQL.

The database is migrated and seeded the way the pipeline fills it: readings through the
ingest write path (energy_pipeline.db.writer, which also keeps hourly_features), forecasts
inserted as the scheduler stores them. The API connects as a read-only role, like the one
the postgres chart creates for dashboards. Every answer is checked against the database and
against the OpenAPI document the server publishes; a seeded random fuzzer (schemathesis is
not installed here) sends thousands of generated requests and accepts no server error.

Every data request carries a client's bearer token (`request` adds it unless told not to);
the refusals without one, the rotation of a token by editing the tokens file while the API
runs, and the per-client rate limit are tested against processes of their own.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
import re
import secrets
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
import pytest
from energy_harness.localstack import PostgresServer
from energy_harness.localstack.postgres import dsn
from energy_harness.localstack.process import free_port
from energy_harness.localstack.workers import WorkerProcess, energy_pipeline_argv
from energy_harness.testing import admin_sql, wait_for
from energy_pipeline.api.auth import entry
from energy_pipeline.api.pool import ConnectionPool, QueryTimeout
from energy_pipeline.core.contracts import SENSOR_NAMES, Reading
from energy_pipeline.db.migrate import latest_version, migrate
from energy_pipeline.db.writer import write_readings
from energy_pipeline.forecasting.registry import register_model

pytestmark = pytest.mark.integration

SITES = ("site-a", "site-b")
DEVICES = ("0", "1", "2", "3")
START = datetime(2025, 3, 3, tzinfo=UTC)
STEP = timedelta(minutes=10)
STEPS = 6 * 24 * 3  # three days per stream
END = START + STEP * STEPS
BASE = {"temperature": 20.0, "humidity": 45.0, "squarefootage": 1500.0,
        "renewableenergy": 6.0, "energyconsumption": 60.0}
DEFAULT_PAGE, MAX_PAGE = 500, 5000
RUN_1 = START + timedelta(hours=24)  # issued with 48 horizons
RUN_2 = START + timedelta(hours=60)  # the latest, 168 horizons, mostly beyond the data
# The client every request of these tests is made as (`request` sends its token).
CLIENT, TOKEN = "tests", secrets.token_urlsafe(32)


# site-a's registry: a default model in service, then a seed model trained for comparison
# (as `train --model seed` stores it), registered through the registry's own write path.
MODELS = (
    ("default", {"mase": 0.81, "mae": 3.2, "rmse": None, "report_split": {
        "train_rmse": 3.9, "test_rmse": 4.4, "n_train": 8.0, "n_test": 2.0}},
     [("lag_168", 0.625), ("hour_of_week", 0.25), ("avg_temperature_mean24", 0.125)]),
    ("seed", {"mase": 2.5, "mae": 9.9, "report_split": {
        "train_rmse": 5.5, "test_rmse": 7.3, "n_train": 8.0, "n_test": 2.0,
        "train_rmse_smoothed": 1.7, "test_rmse_smoothed": 5.4}},
     [("target_lag1", 0.75), ("avg_humidity_lag2", 0.25)]),
)


def value(sensor: str, device: str, i: int) -> float:
    return round(BASE[sensor] + int(device) + (i % 97) / 100, 2)


def all_readings(site: str) -> list[Reading]:
    return [
        Reading(site, sensor, device, START + STEP * i, value(sensor, device, i))
        for sensor in SENSOR_NAMES for device in DEVICES for i in range(STEPS)
    ]


def forecast_rows(site: str, issued: datetime, horizons: int, version: str) -> list[tuple]:
    rows = []
    for h in range(1, horizons + 1):
        p50 = 60.0 + h / 10
        rows.append((site, issued, issued + timedelta(hours=h - 1), h, version,
                     p50 - 2, p50, p50 + 2))
    return rows


@dataclass
class Api:
    process: WorkerProcess
    port: int
    database_url: str
    admin_url: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()


def request(url: str, headers: Mapping[str, str] | None = None, method: str = "GET",
            token: str | None = TOKEN) -> Reply:
    """One request; as client CLIENT unless `token` says otherwise (None: no Authorization)."""
    headers = dict(headers or {})
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    req = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Reply(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def get(api: Api, path: str, params: Mapping[str, str] | None = None, **headers: str) -> Reply:
    query = ("?" + urllib.parse.urlencode(params)) if params else ""
    return request(api.base + path + query, {k.replace("_", "-"): v for k, v in headers.items()})


def follow(api: Api, first: str, **headers: str) -> list[Reply]:
    """Every page from `first` on, following `next`."""
    replies, url = [], first
    while url:
        reply = request(api.base + url, {k.replace("_", "-"): v for k, v in headers.items()})
        assert reply.status == 200, reply.body[:500]
        replies.append(reply)
        url = reply.json["next"] if reply.content_type == "application/json" else _link(reply)
        assert len(replies) < 500
    return replies


def _link(reply: Reply) -> str | None:
    link = reply.headers.get("Link")
    if not link:
        return None
    match = re.fullmatch(r'<([^>]+)>; rel="next"', link)
    assert match, link
    return match.group(1)


def db_rows(url: str, sql: str, *args: object) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def iso(ts: datetime) -> str:
    ts = ts.astimezone(UTC)
    return ts.isoformat(timespec="microseconds" if ts.microsecond else "seconds").replace(
        "+00:00", "Z")


# ---- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database(postgres: PostgresServer) -> Iterator[tuple[str, str]]:
    """(owner DSN, read-only DSN) of a fresh, migrated, seeded database."""
    name = f"api_{uuid.uuid4().hex[:10]}"
    reader, password = f"reader_{uuid.uuid4().hex[:10]}", secrets.token_hex(12)
    admin_sql(postgres, f'CREATE DATABASE "{name}"')
    owner_url = dsn(postgres.port, postgres.password, name)
    migrate(owner_url)
    conn = psycopg2.connect(owner_url)
    try:
        for site in SITES:
            batch = all_readings(site)
            for i in range(0, len(batch), 5000):
                with conn:
                    write_readings(conn, batch[i:i + 5000])
        with conn, conn.cursor() as cur:
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO forecasts (site_id, issued_at, target_time, horizon, model_version,"
                " p10, p50, p90) VALUES %s",
                forecast_rows("site-a", RUN_1, 48, "v1")
                + forecast_rows("site-a", RUN_2, 168, "v2"),
            )
        for kind, metrics, shares in MODELS:
            with conn:  # one transaction each: a version per registration time
                register_model(conn, site_id="site-a", artifact=f"{kind} artifact",
                               trained_on_until=END, params={"model": kind}, metrics=metrics,
                               feature_importances=shares, serving="default")
        with conn, conn.cursor() as cur:
            # As the postgres chart's init script sets up the dashboards' role.
            cur.execute(f"CREATE ROLE {reader} LOGIN PASSWORD %s", (password,))
            cur.execute(f'GRANT CONNECT ON DATABASE "{name}" TO {reader}')
            cur.execute(f"GRANT USAGE ON SCHEMA public TO {reader}")
            cur.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}")
    finally:
        conn.close()
    try:
        yield owner_url, dsn(postgres.port, password, name, user=reader)
    finally:
        admin_sql(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_sql(postgres, f"DROP ROLE IF EXISTS {reader}")


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tokens file of the shared API process: client CLIENT only."""
    path = tmp_path_factory.mktemp("api-tokens") / "tokens"
    path.write_text(entry(CLIENT, TOKEN) + "\n")
    return path


def api_env(database_url: str, port: int, tokens: Path, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TZ"}}
    env.update({
        "DATABASE_URL": database_url,
        "API_PORT": str(port),
        "PIPELINE_NAME": "api-test",
        "API_DEFAULT_PAGE_SIZE": str(DEFAULT_PAGE),
        "API_MAX_PAGE_SIZE": str(MAX_PAGE),
        "API_TOKENS_FILE": str(tokens),
        # The fuzzer sends thousands of requests as one client; the limit has its own test.
        "API_RATE_LIMIT": "0",
        **extra,
    })
    return env


@pytest.fixture(scope="module")
def api(database: tuple[str, str], tokens_file: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    owner_url, reader_url = database
    port = free_port()
    worker = WorkerProcess("api", ["api"], api_env(reader_url, port, tokens_file),
                           tmp_path_factory.mktemp("api-logs"))
    worker.start()
    try:
        worker.wait_ready(timeout=30)
        yield Api(worker, port, reader_url, owner_url)
    finally:
        code = worker.stop(timeout=30)
        assert code == 0, f"api exited with {code} on SIGTERM"

# ---- sites, readings, hourly, forecasts ---------------------------------------------------


def test_sites_lists_each_site_with_its_span_and_latest_run(api: Api) -> None:
    reply = get(api, "/api/v1/sites")
    assert reply.status == 200 and reply.content_type == "application/json"
    body = reply.json
    assert body["next"] is None
    assert body["data"] == [
        {"site": "site-a", "first_hour": iso(START), "last_hour": iso(END - timedelta(hours=1)),
         "last_forecast_issued_at": iso(RUN_2)},
        {"site": "site-b", "first_hour": iso(START), "last_hour": iso(END - timedelta(hours=1)),
         "last_forecast_issued_at": None},
    ]
    pages = follow(api, "/api/v1/sites?limit=1")
    assert [p.json["data"][0]["site"] for p in pages] == list(SITES)


def test_readings_of_one_stream_are_the_stored_ones(api: Api) -> None:
    start, end = START + timedelta(hours=5), START + timedelta(hours=9)
    params = {"sensor": "temperature", "device": "2", "from": iso(start), "to": iso(end)}
    body = get(api, "/api/v1/sites/site-a/readings", params).json
    expected = db_rows(api.database_url,
                       "SELECT ts, value FROM readings WHERE site_id = 'site-a' AND sensor = "
                       "'temperature' AND device_id = '2' AND ts >= %s AND ts < %s ORDER BY ts",
                       start, end)
    assert len(expected) == 24
    assert body["data"] == [
        {"sensor": "temperature", "device": "2", "ts": iso(ts), "value": v} for ts, v in expected
    ]
    assert (body["site"], body["from"], body["to"], body["next"]) == (
        "site-a", iso(start), iso(end), None)
    assert body["sensors"] == ["temperature"] and body["units"] == {"temperature": "degC"}

    as_csv = get(api, "/api/v1/sites/site-a/readings", {**params, "format": "csv"})
    assert as_csv.status == 200 and as_csv.content_type == "text/csv"
    assert 'filename="site-a-readings.csv"' in as_csv.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(as_csv.body.decode())))
    assert rows[0] == ["site", "sensor", "device", "ts", "value"]
    assert rows[1:] == [["site-a", "temperature", "2", iso(ts), repr(v)] for ts, v in expected]
    assert as_csv.body.endswith(b"\r\n")


def test_a_large_range_comes_in_pages_each_row_exactly_once(api: Api) -> None:
    """All sensors and devices of three days (8640 rows) in pages of 1000, as JSON and CSV."""
    first = ("/api/v1/sites/site-b/readings?from=2025-03-01T00:00:00Z&to=2025-03-10T00:00:00Z"
             "&limit=1000")
    pages = follow(api, first)
    got = [(r["sensor"], r["device"], r["ts"], r["value"]) for p in pages for r in p.json["data"]]
    expected = [(s, d, iso(START + STEP * i), value(s, d, i))
                for s in SENSOR_NAMES for d in DEVICES for i in range(STEPS)]
    assert len(pages) == 9 and got == expected
    for page in pages[:-1]:
        assert page.headers["Link"] == f'<{page.json["next"]}>; rel="next"'
        assert "from=2025-03-01T00:00:00Z" in page.json["next"]
    assert "Link" not in pages[-1].headers

    csv_pages = follow(api, first, Accept="text/csv")
    csv_rows = [row for p in csv_pages
                for row in list(csv.reader(io.StringIO(p.body.decode())))[1:]]
    assert [tuple(r[1:4]) for r in csv_rows] == [e[:3] for e in expected]


def test_relative_windows_are_pinned_in_next_links(api: Api) -> None:
    # Relative times resolve once; the next link carries absolute ones.
    reply = get(api, "/api/v1/sites/site-a/readings",
                {"from": "now-1000d", "to": "now", "limit": "10"})
    assert reply.status == 200 and len(reply.json["data"]) == 10
    next_query = urllib.parse.parse_qs(urllib.parse.urlsplit(reply.json["next"]).query)
    assert next_query["from"] == [reply.json["from"]] and next_query["to"] == [reply.json["to"]]
    assert next_query["limit"] == ["10"]
    assert "now" not in reply.json["next"]


def test_without_limit_a_page_has_the_default_size(api: Api) -> None:
    body = get(api, "/api/v1/sites/site-a/readings",
               {"from": iso(START), "to": iso(END)}).json
    assert len(body["data"]) == DEFAULT_PAGE and body["next"]
    body = get(api, "/api/v1/sites/site-a/readings",
               {"from": iso(START), "to": iso(END), "limit": str(MAX_PAGE)}).json
    assert len(body["data"]) == MAX_PAGE


def test_sensor_and_device_lists_choose_streams(api: Api) -> None:
    pages = follow(api, f"/api/v1/sites/site-a/readings?sensor=humidity,temperature"
                        f"&sensor=humidity&device=3,1&from={iso(START)}&to={iso(END)}&limit=700")
    rows = [(r["sensor"], r["device"]) for p in pages for r in p.json["data"]]
    # Contract order of sensor types; devices in the order asked.
    streams = list(dict.fromkeys(rows))
    assert streams == [("temperature", "3"), ("temperature", "1"),
                       ("humidity", "3"), ("humidity", "1")]
    assert len(rows) == 4 * STEPS


def test_content_negotiation(api: Api) -> None:
    path = "/api/v1/sites/site-a/hourly"
    assert get(api, path).content_type == "application/json"
    assert get(api, path, Accept="text/csv").content_type == "text/csv"
    assert get(api, path, Accept="text/*").content_type == "text/csv"
    assert get(api, path, Accept="text/csv;q=0.5, application/json").content_type == \
        "application/json"
    assert get(api, path, Accept="application/json;q=0.1, text/csv;q=0.9").content_type == \
        "text/csv"
    assert get(api, path, {"format": "json"}, Accept="text/csv").content_type == \
        "application/json"
    refused = get(api, path, Accept="application/xml")
    assert refused.status == 406 and refused.content_type == "application/problem+json"
    assert refused.json["errors"][0]["parameter"] == "Accept"
    assert get(api, path, {"format": "csv"}, Accept="application/xml").status == 200
    assert get(api, path, Accept="*/*").content_type == "application/json"


def test_hourly_features_match_the_table_and_paginate(api: Api) -> None:
    pages = follow(api, f"/api/v1/sites/site-a/hourly?from={iso(START)}&to={iso(END)}&limit=20")
    rows = [r for p in pages for r in p.json["data"]]
    assert len(pages) == 4 and len(rows) == 72
    expected = db_rows(api.database_url,
                       "SELECT hour, avg_temperature, n_energyconsumption, n_readings "
                       "FROM hourly_features WHERE site_id = 'site-a' ORDER BY hour")
    assert [(r["hour"], r["avg_temperature"], r["n_energyconsumption"], r["n_readings"])
            for r in rows] == [(iso(h), a, n, t) for h, a, n, t in expected]
    assert rows[0]["n_readings"] == 5 * 4 * 6
    # Hours overlapping the window count, so a window starting mid-hour includes that hour.
    body = get(api, "/api/v1/sites/site-a/hourly",
               {"from": iso(START + timedelta(minutes=90)),
                "to": iso(START + timedelta(hours=3))}).json
    assert [r["hour"] for r in body["data"]] == [iso(START + timedelta(hours=1)),
                                                 iso(START + timedelta(hours=2))]
    header = get(api, "/api/v1/sites/site-a/hourly", {"format": "csv", "limit": "1"}).body
    assert header.split(b"\r\n")[0].decode().split(",")[:3] == ["site", "hour", "avg_temperature"]


def test_forecasts_latest_and_as_of_with_actuals(api: Api) -> None:
    latest = get(api, "/api/v1/sites/site-a/forecasts").json
    assert latest["issued_at"] == iso(RUN_2) and latest["next"] is None
    assert [r["horizon"] for r in latest["data"]] == list(range(1, 169))
    assert {r["model_version"] for r in latest["data"]} == {"v2"}
    first = latest["data"][0]
    actual = db_rows(api.database_url, "SELECT avg_energyconsumption FROM hourly_features "
                     "WHERE site_id = 'site-a' AND hour = %s", RUN_2)[0][0]
    assert first["target_time"] == iso(RUN_2) and first["actual"] == actual
    assert latest["data"][-1]["actual"] is None  # beyond the data
    assert first["p10"] <= first["p50"] <= first["p90"]

    # What was known half a day after run 1: run 1.
    as_of = get(api, "/api/v1/sites/site-a/forecasts",
                {"issued": iso(RUN_1 + timedelta(hours=12))}).json
    assert as_of["issued_at"] == iso(RUN_1) and len(as_of["data"]) == 48

    window = get(api, "/api/v1/sites/site-a/forecasts",
                 {"from": iso(RUN_2 + timedelta(hours=10)),
                  "to": iso(RUN_2 + timedelta(hours=20))}).json
    assert [r["horizon"] for r in window["data"]] == list(range(11, 21))

    before_any = get(api, "/api/v1/sites/site-a/forecasts", {"issued": iso(START)}).json
    assert before_any == {"site": "site-a", "issued_at": None, "data": [], "next": None}
    assert get(api, "/api/v1/sites/site-b/forecasts").json["issued_at"] is None

    pages = follow(api, "/api/v1/sites/site-a/forecasts?limit=50")
    assert [len(p.json["data"]) for p in pages] == [50, 50, 50, 18]
    assert all(f"issued={iso(RUN_2)}" in p.json["next"] for p in pages[:-1])
    rows = list(csv.reader(io.StringIO(get(api, "/api/v1/sites/site-a/forecasts",
                                           {"format": "csv", "limit": "2"}).body.decode())))
    assert rows[0] == ["site", "issued_at", "target_time", "horizon", "model_version",
                       "p10", "p50", "p90", "actual"]
    assert rows[1][:4] == ["site-a", iso(RUN_2), iso(RUN_2), "1"]


def test_models_with_kind_metrics_and_feature_importances(api: Api) -> None:
    stored = db_rows(api.admin_url, "SELECT version, created_at, promoted, promoted_at"
                     " FROM models WHERE site_id = 'site-a' ORDER BY created_at DESC")
    body = get(api, "/api/v1/sites/site-a/models").json
    assert (body["site"], body["next"]) == ("site-a", None)
    # Newest first: the seed model stored for comparison, then the default one in service.
    assert [(m["version"], m["kind"], m["promoted"]) for m in body["data"]] == [
        (stored[0][0], "seed", False), (stored[1][0], "default", True)]
    for model, (version, created, promoted, promoted_at), (kind, metrics, shares) in zip(
        body["data"], stored, reversed(MODELS), strict=True
    ):
        assert model == {
            "version": version, "kind": kind, "created_at": iso(created),
            "trained_on_until": iso(END), "promoted": promoted,
            "promoted_at": iso(promoted_at) if promoted_at else None, "metrics": metrics,
            "feature_importances": [{"feature": f, "gain": g} for f, g in shares],
        }
    assert "artifact" not in body["data"][0]

    in_service = get(api, "/api/v1/sites/site-a/models", {"promoted": "true"}).json["data"]
    assert [m["kind"] for m in in_service] == ["default"]
    assert in_service[0]["feature_importances"][0] == {"feature": "lag_168", "gain": 0.625}
    others = get(api, "/api/v1/sites/site-a/models", {"promoted": "false"}).json["data"]
    assert [m["kind"] for m in others] == ["seed"]

    pages = follow(api, "/api/v1/sites/site-a/models?limit=1")
    assert [p.json["data"][0]["version"] for p in pages] == [stored[0][0], stored[1][0]]
    assert "promoted" not in pages[0].json["next"]
    filtered = get(api, "/api/v1/sites/site-a/models", {"promoted": "false", "limit": "1"})
    assert filtered.json["next"] is None  # one version that is not promoted: one page

    as_csv = get(api, "/api/v1/sites/site-a/models", {"format": "csv", "promoted": "true"})
    rows = list(csv.reader(io.StringIO(as_csv.body.decode())))
    assert rows[0] == ["site", "version", "kind", "created_at", "trained_on_until", "promoted",
                       "promoted_at", "metrics", "feature_importances"]
    assert rows[1][:3] == ["site-a", stored[1][0], "default"] and rows[1][5] == "true"
    assert json.loads(rows[1][7]) == MODELS[0][1]
    assert json.loads(rows[1][8])[0] == {"feature": "lag_168", "gain": 0.625}

    # A site without models yet: none, not an error.
    assert get(api, "/api/v1/sites/site-b/models").json == {
        "site": "site-b", "data": [], "next": None}


# ---- errors -------------------------------------------------------------------------------

BAD = [
    ("readings", {"sensor": "temp"}, "sensor", "unknown sensor 'temp'; known: temperature"),
    ("readings", {"sensor": "temperature,"}, "sensor", "empty item"),
    ("readings", {"device": "a b"}, "device", "device ids match"),
    ("readings", {"from": "yesterday"}, "from", "'yesterday' is not a time"),
    ("readings", {"to": "2025-02-30T00:00:00Z"}, "to", "is not a time"),
    ("readings", {"from": "now-99999999999d"}, "from", "is not a time"),
    ("readings", {"from": "2025-03-05T00:00:00Z", "to": "2025-03-04T00:00:00Z"}, "from",
     "from (2025-03-05T00:00:00Z) is after to (2025-03-04T00:00:00Z)"),
    ("readings", {"limit": "0"}, "limit", f"must be an integer from 1 to {MAX_PAGE}, got '0'"),
    ("readings", {"limit": str(MAX_PAGE + 1)}, "limit", "must be an integer from 1 to"),
    ("readings", {"limit": "ten"}, "limit", "got 'ten'"),
    ("readings", {"limit": "-5"}, "limit", "got '-5'"),
    ("readings", {"cursor": "garbage!"}, "cursor", "not a cursor"),
    ("readings", {"format": "xml"}, "format", "must be one of json, csv"),
    ("readings", {"sensors": "temperature"}, "sensors",
     "unknown parameter; this endpoint accepts: cursor, device, format, from, limit, sensor, to"),
    ("hourly", {"to": "now-"}, "to", "is not a time"),
    ("hourly", {"sensor": "temperature"}, "sensor", "unknown parameter"),
    ("forecasts", {"issued": "newest"}, "issued", "neither latest nor a time"),
    ("models", {"promoted": "yes"}, "promoted", "must be true or false, got 'yes'"),
    ("models", {"from": "now-1d"}, "from", "unknown parameter"),
    ("forecasts", {"from": "now", "to": "now-1h"}, "from", "is after to"),
    ("", {"limit": "1e3"}, "limit", "got '1e3'"),
]


@pytest.mark.parametrize(("endpoint", "params", "field", "message"), BAD,
                         ids=[f"{b[0] or 'sites'}-{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_parameters_are_400_naming_the_field(
    api: Api, endpoint: str, params: dict[str, str], field: str, message: str
) -> None:
    path = f"/api/v1/sites/site-a/{endpoint}" if endpoint else "/api/v1/sites"
    reply = get(api, path, params)
    assert reply.status == 400, reply.body
    assert reply.content_type == "application/problem+json"
    problem = reply.json
    assert problem["status"] == 400 and problem["title"] == "Bad Request"
    assert [e["parameter"] for e in problem["errors"]] == [field]
    assert message in problem["errors"][0]["message"], problem
    assert problem["detail"].startswith(f"{field}: ")


def test_every_bad_parameter_is_reported_at_once(api: Api) -> None:
    reply = get(api, "/api/v1/sites/site-a/readings?sensor=x&limit=0&from=never&bogus=1&to=now"
                     "&to=now")
    params = {e["parameter"] for e in reply.json["errors"]}
    assert reply.status == 400 and params == {"sensor", "limit", "from", "bogus", "to"}


def test_a_cursor_from_another_endpoint_is_refused(api: Api) -> None:
    hourly_next = get(api, "/api/v1/sites/site-a/hourly", {"limit": "1", "from": iso(START),
                                                           "to": iso(END)}).json["next"]
    cursor = urllib.parse.parse_qs(urllib.parse.urlsplit(hourly_next).query)["cursor"][0]
    reply = get(api, "/api/v1/sites/site-a/readings", {"cursor": cursor})
    assert reply.status == 400 and reply.json["errors"][0]["parameter"] == "cursor"


@pytest.mark.parametrize("endpoint", ["readings", "hourly", "forecasts", "models"])
@pytest.mark.parametrize("site", ["site-z", "no%20such%20site", "x" * 65])
def test_unknown_site_is_404(api: Api, endpoint: str, site: str) -> None:
    reply = get(api, f"/api/v1/sites/{site}/{endpoint}")
    assert reply.status == 404 and reply.content_type == "application/problem+json"
    assert reply.json["errors"][0]["parameter"] == "site"
    assert "GET /api/v1/sites lists them" in reply.json["detail"]


def test_unknown_paths_and_methods(api: Api) -> None:
    missing = get(api, "/api/v2/sites")
    assert missing.status == 404 and missing.content_type == "application/problem+json"
    assert "openapi.json" in missing.json["detail"]
    post = request(api.base + "/api/v1/sites", method="POST")
    assert post.status == 405 and post.headers["Allow"] == "GET"
    assert post.json["status"] == 405


RAW = [
    "/api/v1/sites?limit=%FF", "/api/v1/sites?%FF=1", "/api/v1/sites/%FF/readings",
    "/api/v1/sites/site-a/readings?from=%00", "/api/v1/sites/site-a/readings?sensor=%C3%28",
    "/api/v1/sites/site-a/readings?cursor=%E2%82", "/api/v1/sites/site-a/readings?&&&=&",
    "/api/v1/sites/site-a/readings?limit", "/api/v1/sites/site-a%2Fx/readings",
    "/api/v1/sites/site-a/hourly?from=now-1d;to=now", "/api/v1/sites/..%2F..%2Fetc/hourly",
    "/api/v1/sites/site-a/forecasts?issued=%20latest%20", "/api/v1/sites/%2e%2e/forecasts",
    "/api/v1/sites/site-a/readings?to=2025-03-03T00:00:00%2B14:00&from=0001-01-01",
]


@pytest.mark.parametrize("path", RAW)
def test_oddly_encoded_urls_are_client_errors_not_crashes(api: Api, path: str) -> None:
    reply = request(api.base + path)
    assert reply.status < 500, reply.body[:300]
    if reply.status >= 400:
        assert reply.content_type == "application/problem+json"


# ---- OpenAPI ------------------------------------------------------------------------------


def openapi(api: Api) -> dict[str, Any]:
    reply = get(api, "/api/v1/openapi.json")
    assert reply.status == 200 and reply.content_type == "application/json"
    return reply.json


def concrete(path: str) -> str:
    return path.replace("{site}", "site-a")


def test_every_documented_parameter_is_accepted(api: Api) -> None:
    doc = openapi(api)
    tried = 0
    for path, item in doc["paths"].items():
        for param in item["get"]["parameters"]:
            if param["in"] != "query":
                continue
            example = param["example"]
            if param["name"] == "cursor":  # an opaque value: take one the server issued
                first = get(api, concrete(path),
                            {"limit": "1", "from": iso(START), "to": iso(END)}
                            if path.endswith(("/readings", "/hourly")) else {"limit": "1"}
                            ).json
                example = urllib.parse.parse_qs(
                    urllib.parse.urlsplit(first["next"]).query)["cursor"][0]
            reply = get(api, concrete(path), {param["name"]: example})
            assert reply.status == 200, (path, param["name"], reply.body[:300])
            tried += 1
    assert tried == 25


def test_undocumented_parameters_are_refused(api: Api) -> None:
    for path in openapi(api)["paths"]:
        if path.startswith("/api/v1/sites"):
            assert get(api, concrete(path), {"verbose": "1"}).status == 400, path


def test_answers_match_the_documented_schemas(api: Api) -> None:
    doc = openapi(api)
    cases = [
        ("/api/v1/sites", {}), ("/api/v1/sites", {"limit": "1"}),
        ("/api/v1/sites/{site}/readings", {"limit": "3"}),
        ("/api/v1/sites/{site}/hourly", {"from": iso(START), "limit": "3"}),
        ("/api/v1/sites/{site}/forecasts", {"limit": "3"}),
        ("/api/v1/sites/{site}/forecasts", {"issued": iso(START)}),
        ("/api/v1/sites/{site}/models", {}), ("/api/v1/sites/{site}/models", {"limit": "1"}),
        ("/api/v1/sites/{site}/models", {"promoted": "maybe"}),
        ("/api/v1/sites/{site}/readings", {"limit": "x"}),
        ("/api/v1/sites/{site}/readings", {"sensor": "x"}),
        ("/readyz", {}), ("/healthz", {}), ("/api/v1/openapi.json", {}),
    ]
    for path, params in cases:
        reply = get(api, concrete(path), params)
        check_response(doc, path, reply)
    check_response(doc, "/api/v1/sites/{site}/hourly",
                   get(api, "/api/v1/sites/nowhere/hourly"))


# ---- no token, no data; rotation; rate limit ----------------------------------------------

DATA_PATHS = ("/api/v1/sites", "/api/v1/sites/site-a/readings", "/api/v1/sites/site-a/hourly",
              "/api/v1/sites/site-a/forecasts", "/api/v1/sites/site-a/models")
MISSING = "this endpoint needs an Authorization: Bearer <token> header"
UNKNOWN = "the token is not one of a client in the tokens file"


def refused(detail: str) -> dict[str, Any]:
    return {"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": detail,
            "errors": [{"parameter": "Authorization", "in": "header", "message": detail}]}


def test_no_token_no_data(api: Api) -> None:
    def count(reason: str) -> float:
        return api.process.metric("energy_api_auth_refused_total", {"reason": reason})

    before = {r: count(r) for r in ("missing", "malformed", "unknown")}
    for path in DATA_PATHS:
        for headers, challenge, detail in (
            ({}, 'Bearer realm="energy-pipeline"', MISSING),
            ({"Authorization": f"Basic {base64.b64encode(b'tests:x').decode()}"},
             'Bearer realm="energy-pipeline", error="invalid_token"',
             "the Authorization header must be Bearer <token>"),
            ({"Authorization": "Bearer " + secrets.token_urlsafe(32)},
             'Bearer realm="energy-pipeline", error="invalid_token"', UNKNOWN),
            # The stored hash is not a token.
            ({"Authorization": "Bearer " + entry(CLIENT, TOKEN).split(":")[1]},
             'Bearer realm="energy-pipeline", error="invalid_token"', UNKNOWN),
        ):
            reply = request(api.base + path + "?format=csv", headers, token=None)
            assert (reply.status, reply.headers["WWW-Authenticate"], reply.content_type,
                    reply.json) == (401, challenge, "application/problem+json", refused(detail))
        assert request(api.base + path).status == 200
    n = len(DATA_PATHS)
    assert {r: count(r) - before[r] for r in before} == {"missing": n, "malformed": n,
                                                         "unknown": 2 * n}
    # The description of the API stays public; it holds no data.
    assert request(api.base + "/api/v1/openapi.json", token=None).status == 200


def test_curl_is_refused_without_the_token_and_served_with_it(api: Api) -> None:
    """The same with curl, a client nobody here wrote."""
    url = api.base + "/api/v1/sites/site-a/forecasts?format=csv"

    def curl(*args: str) -> list[str]:
        done = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args, url],
                              capture_output=True, text=True, timeout=30, check=True)
        return done.stdout.rsplit("\n", 1)

    body, status = curl()
    assert (status, json.loads(body)["detail"]) == ("401", MISSING)
    body, status = curl("-H", "Authorization: Bearer wrong")
    assert (status, json.loads(body)["detail"]) == ("401", UNKNOWN)
    body, status = curl("--oauth2-bearer", TOKEN)
    assert status == "200" and body.startswith("site,issued_at,target_time,horizon"), body[:200]


@pytest.fixture
def own_api(database: tuple[str, str], tmp_path: Path) -> Iterator[Any]:
    """Start an API process of this test's own: `own_api(tokens_file, **env)`."""
    started: list[WorkerProcess] = []

    def start(tokens: Path, **extra: str) -> Api:
        port = free_port()
        worker = WorkerProcess(f"api-{len(started)}", ["api"],
                               api_env(database[1], port, tokens, **extra), tmp_path)
        started.append(worker)
        worker.start()
        worker.wait_ready(timeout=30)
        return Api(worker, port, database[1], database[0])

    yield start
    for worker in started:
        assert worker.stop(timeout=30) == 0


def api_token(*args: str) -> str:
    """`energy-pipeline api-token ...`, as a user runs it; its standard output."""
    done = subprocess.run(energy_pipeline_argv(["api-token", *args]), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_token_rotated_in_the_file_takes_effect_without_a_restart(
    own_api: Any, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    old = api_token("dashboard", "--file", str(tokens))
    api = own_api(tokens)
    pid = api.process.process.pid
    sites = api.base + "/api/v1/sites"
    assert request(sites, token=old).status == 200

    new = api_token("dashboard", "--file", str(tokens))  # rotation: the old entry replaced
    other = api_token("ci", "--file", str(tokens))  # and a second client added
    assert len(tokens.read_text().splitlines()) == 2
    wait_for(lambda: request(sites, token=old).status == 401, timeout=15,
             what="the old token refused")
    assert request(sites, token=new).status == 200
    assert request(sites, token=other).status == 200
    assert api.process.process.pid == pid  # the same process: no restart
    assert api.process.metric("energy_api_token_reloads_total", {"result": "ok"}) >= 1
    assert api.process.metric("energy_api_clients") == 2

    # A broken edit keeps the clients of the last good file, and says so.
    tokens.write_text("dashboard:not-a-hash\n")
    wait_for(lambda: api.process.metric("energy_api_token_reloads_total",
                                        {"result": "error"}) >= 1,
             timeout=15, what="the broken file noticed")
    assert request(sites, token=new).status == 200
    lines = [json.loads(line) for line in Path(api.process.process.log_path).read_text()
             .splitlines() if line.startswith("{")]
    assert any(e["msg"] == "tokens file reloaded" and e["rotated"] == ["dashboard"]
               and e["added"] == ["ci"] for e in lines)
    assert any(e["msg"] == "tokens file not reloaded; the previous clients stay valid"
               for e in lines)


def test_each_client_is_held_to_its_own_rate(own_api: Any, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    alice = api_token("alice", "--file", str(tokens))
    bob = api_token("bob", "--file", str(tokens))
    # One request per 100 s after a burst of 3: the fourth is refused however slow this is.
    api = own_api(tokens, API_RATE_LIMIT="0.01", API_RATE_BURST="3")
    url = api.base + "/api/v1/sites"
    assert [request(url, token=alice).status for _ in range(3)] == [200, 200, 200]
    limited = request(url, token=alice)
    assert limited.status == 429 and limited.content_type == "application/problem+json"
    assert 99 <= int(limited.headers["Retry-After"]) <= 100
    assert limited.json["detail"] == (
        f"client 'alice' exceeded 0.01 requests per second (burst 3); retry after "
        f"{limited.headers['Retry-After']} s")
    # Bob has a bucket of his own; a refused token takes nothing from anyone's.
    assert request(url, token="nobody").status == 401
    assert [request(url, token=bob).status for _ in range(4)] == [200, 200, 200, 429]
    assert api.process.metric("energy_api_rate_limited_total", {"client": "alice"}) == 1
    assert api.process.metric("energy_api_rate_limited_total", {"client": "bob"}) == 1
    # Probes are never limited.
    assert all(request(api.base + "/readyz", token=None).status == 200 for _ in range(10))


def test_the_api_refuses_to_start_without_a_usable_tokens_file(
    database: tuple[str, str], tmp_path: Path
) -> None:
    env = api_env(database[1], free_port(), tmp_path / "absent", HTTP_PORT="0")
    done = subprocess.run(energy_pipeline_argv(["api"]), env=env, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stderr.splitlines()) == (2, [
        f"energy-pipeline api: error: API_TOKENS_FILE {tmp_path}/absent: No such file or "
        f"directory; write a client into it with `energy-pipeline api-token <client> --file "
        f"{tmp_path}/absent`"])
    # Knowingly open: it starts, with a warning.
    env.update(API_AUTH="none", API_TOKENS_FILE="")
    worker = WorkerProcess("api-open", ["api"], env, tmp_path).start()
    try:
        base = f"http://127.0.0.1:{env['API_PORT']}"
        assert request(base + "/api/v1/sites", token=None).status == 200
        lines = [json.loads(line) for line in Path(worker.process.log_path).read_text()
                 .splitlines() if line.startswith("{")]
        assert [e["level"] for e in lines if e["msg"].startswith("API_AUTH=none")] == ["warning"]
    finally:
        assert worker.stop(timeout=30) == 0


# ---- health, metrics, logs, failure -------------------------------------------------------


def test_health_readiness_and_metrics_on_both_ports(api: Api) -> None:
    ops = f"http://127.0.0.1:{api.process.http_port}"
    for base in (api.base, ops):  # for probes and scrapers: no token needed
        assert request(base + "/healthz", token=None).status == 200
        assert request(base + "/metrics", token=None).status == 200
        ready = request(base + "/readyz", token=None)
        assert ready.status == 200
        assert json.loads(ready.body) == {"status": "ready", "detail": "ok",
                                          "schema_version": latest_version()}
    # The ops port serves only those three.
    assert request(ops + "/api/v1/sites").status == 404

    for _ in range(3):
        get(api, "/api/v1/sites/site-a/readings", {"limit": "5", "from": iso(START)})
    get(api, "/api/v1/sites/site-a/readings", {"limit": "0"})
    get(api, "/api/v1/sites/no-such-site/readings")
    route = '/api/v1/sites/{site}/readings'

    def sample(name: str, **labels: str) -> float:
        return api.process.metric(name, labels)  # scrapes the ops port (HTTP_PORT)

    assert sample("energy_api_requests_total", route=route, status="200", method="GET") >= 3
    assert sample("energy_api_requests_total", route=route, status="400") >= 1
    assert sample("energy_api_requests_total", route=route, status="404") >= 1
    assert sample("energy_api_request_duration_seconds_bucket", route=route, le="+Inf") >= 5
    assert sample("energy_api_rows_returned_total", route=route) >= 15
    assert sample("energy_api_db_connections", state="idle") >= 1


def test_logs_are_json_lines_with_the_pipeline_name(api: Api) -> None:
    get(api, "/api/v1/sites", {"limit": "2"})
    assert api.process.process is not None
    lines = [json.loads(line) for line in
             Path(api.process.process.log_path).read_text().splitlines() if line.startswith("{")]
    requests = [e for e in lines if e["msg"] == "request" and e.get("route") == "/api/v1/sites"]
    assert requests and all(e["pipeline"] == "api-test" and e["component"] == "api"
                            for e in lines)
    assert requests[-1]["status"] == 200 and requests[-1]["rows"] == 2
    assert "duration_ms" in requests[-1]


def test_database_down_means_unready_and_503_not_a_crash(
    tmp_path: Path, postgres: PostgresServer, tokens_file: Path
) -> None:
    dead = dsn(free_port(), "x", "nowhere")
    port = free_port()
    worker = WorkerProcess("api-nodb", ["api"], api_env(dead, port, tokens_file),
                           tmp_path).start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert request(base + "/healthz").status == 200
        ready = request(base + "/readyz")
        assert ready.status == 503 and json.loads(ready.body)["status"] == "not ready"
        assert json.loads(ready.body)["detail"].startswith("database: ")
        reply = request(base + "/api/v1/sites/site-a/readings")
        assert reply.status == 503 and json.loads(reply.body)["detail"] == "database unavailable"
        assert request(base + "/api/v1/sites/site-a/readings?limit=0").status == 400
    finally:
        assert worker.stop(timeout=30) == 0


def test_unready_until_the_schema_is_migrated(tmp_path: Path, postgres: PostgresServer,
                                              tokens_file: Path) -> None:
    name = f"empty_{uuid.uuid4().hex[:10]}"
    admin_sql(postgres, f'CREATE DATABASE "{name}"')
    url = dsn(postgres.port, postgres.password, name)
    port = free_port()
    worker = WorkerProcess("api-empty", ["api"], api_env(url, port, tokens_file),
                           tmp_path).start()
    try:
        base = f"http://127.0.0.1:{port}"
        ready = request(base + "/readyz")
        assert ready.status == 503 and "schema not migrated" in json.loads(ready.body)["detail"]
        reply = request(base + "/api/v1/sites")
        assert reply.status == 503 and json.loads(reply.body)["detail"] == \
            "database schema not migrated yet"
        migrate(url)  # as the operator's migration Job does, while the API already runs
        worker.wait_ready(timeout=20)
        assert request(base + "/api/v1/sites").status == 200
    finally:
        assert worker.stop(timeout=30) == 0
        admin_sql(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_pool_sessions_are_read_only_with_a_timeout(database: tuple[str, str]) -> None:
    owner_url, _ = database
    pool = ConnectionPool(owner_url, 2, statement_timeout_ms=300, application_name="api-pool-test")
    try:
        def settings(conn: Any) -> tuple[str, ...]:
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('transaction_read_only'), "
                            "current_setting('statement_timeout'), current_setting('TimeZone'), "
                            "current_setting('transaction_isolation')")
                return cur.fetchone()

        assert pool.call(settings) == ("on", "300ms", "UTC", "repeatable read")

        def write(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM readings")

        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            pool.call(write)

        def sleep(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(2)")

        with pytest.raises(QueryTimeout, match="statement_timeout=300ms"):
            pool.call(sleep)
        assert pool.stats() == (0, 1)

        # The server drops every connection (a restart, a failover): the next call still works.
        db_rows(owner_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'api-pool-test'")
        assert pool.call(settings)[0] == "on"
    finally:
        pool.close()


# ---- checking answers against the OpenAPI document ----------------------------------------


def resolve(doc: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def validate(doc: Mapping[str, Any], instance: Any, schema: Mapping[str, Any],
             where: str = "$") -> None:
    """The JSON Schema subset the document uses (jsonschema is not installed here)."""
    schema = resolve(doc, schema)
    if "anyOf" in schema:
        failures = []
        for option in schema["anyOf"]:
            try:
                validate(doc, instance, option, where)
                break
            except AssertionError as exc:
                failures.append(str(exc))
        else:
            raise AssertionError(f"{where}: matches no anyOf option: {failures}")
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        ok = any(
            (k == "integer" and isinstance(instance, int) and not isinstance(instance, bool))
            or (k == "number" and isinstance(instance, int | float)
                and not isinstance(instance, bool))
            or (k in _TYPES and isinstance(instance, _TYPES[k])
                and not (k != "boolean" and isinstance(instance, bool)))
            for k in kinds
        )
        assert ok, f"{where}: {instance!r} is not {kinds}"
    if "enum" in schema:
        assert instance in schema["enum"], f"{where}: {instance!r} not in {schema['enum']}"
    if "const" in schema:
        assert instance == schema["const"], f"{where}: {instance!r} != {schema['const']!r}"
    if isinstance(instance, str):
        if schema.get("format") == "date-time":
            parsed = datetime.fromisoformat(instance)
            assert parsed.tzinfo is not None and instance.endswith("Z"), f"{where}: {instance}"
        if "pattern" in schema:
            assert re.search(schema["pattern"], instance), f"{where}: {instance!r} pattern"
    if isinstance(instance, int | float) and not isinstance(instance, bool):
        assert instance >= schema.get("minimum", instance), where
        assert instance <= schema.get("maximum", instance), where
    if isinstance(instance, dict):
        for name in schema.get("required", []):
            assert name in instance, f"{where}: {name} missing"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in instance.items():
            if key in props:
                validate(doc, item, props[key], f"{where}.{key}")
            elif extra is False:
                raise AssertionError(f"{where}: unexpected {key}")
            elif isinstance(extra, dict):
                validate(doc, item, extra, f"{where}.{key}")
    if isinstance(instance, list):
        assert len(instance) >= schema.get("minItems", 0), where
        for i, item in enumerate(instance):
            if "items" in schema:
                validate(doc, item, schema["items"], f"{where}[{i}]")


def check_response(doc: Mapping[str, Any], path: str, reply: Reply) -> None:
    """The status, content type and body are what the document says for this operation."""
    operation = doc["paths"][path]["get"]
    responses = operation["responses"]
    assert str(reply.status) in responses, f"{path}: undocumented status {reply.status}"
    content = responses[str(reply.status)]["content"]
    assert reply.content_type in content, f"{path}: {reply.content_type} not documented"
    if reply.content_type.endswith("json"):
        validate(doc, reply.json, content[reply.content_type]["schema"])
    if reply.status == 200 and "Link" in responses["200"].get("headers", {}):
        body_next = reply.json["next"] if reply.content_type == "application/json" else None
        if body_next is not None:
            assert _link(reply) == body_next


# ---- fuzzing ------------------------------------------------------------------------------

JUNK = ["", " ", "null", "\x00", "'; DROP TABLE readings; --", "é", "\U0001F600", "a" * 3000,
        "[]", "{}", "-1", "1e309", "NaN", "now-nand", "now-", "now+", "%", "%%", "0", "+1",
        "9" * 40, "true", ",", ",,", "now-1e3d", "2025-01-01T00:00:00+99:00", "T", "\n"]
TIMES = ["now", "now-1d", "now-7d", "now+1h", "now-100000d", "now+100000d", "now-3000000d",
         "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59Z",
         "9999-12-31T23:59:59-14:00", "2025-03-03", "2025-03-04T12:30:00", "2025-03-04T12:30:00Z",
         "2025-03-04T12:30:00.123456+02:00", "2025-03-04 12:30", "2025-13-01", "2025-03-04T25:00"]
ACCEPTS = [None, "*/*", "application/json", "text/csv", "text/*", "application/xml", "",
           "text/csv;q=0", "*/*;q=0", "text/csv;q=abc", "application/json;q=0.5, text/csv",
           ";;;", "application/*", "text/csv;level=1;q=0.9, */*;q=0.1"]


def _fuzz_value(rng: random.Random, param: Mapping[str, Any], cursors: list[str]) -> str:
    schema = param["schema"]
    roll = rng.random()
    if roll < 0.1:
        return rng.choice(JUNK)
    name = param["name"]
    if name == "cursor":
        if cursors and roll < 0.7:
            cursor = rng.choice(cursors)
            return cursor if rng.random() < 0.6 else cursor[: rng.randrange(len(cursor) + 1)]
        garbage = json.dumps(rng.choice([["readings", "x", "0", "nope"], ["sites", "\x00"],
                                         ["hourly", "9999-12-31T23:59:59-14:00"], [1, 2], {}]))
        return base64.urlsafe_b64encode(garbage.encode()).decode().rstrip("=")
    if schema.get("type") == "integer":
        top = schema["maximum"]
        return str(rng.choice([1, 2, top, top + 1, 0, -1, rng.randrange(1, top + 1), 10**15]))
    if schema.get("type") == "array":
        items = schema["items"]
        pool = items.get("enum") or ["0", "1", "2", "3", "9", "dev.x", "a-b_c"]
        chosen = rng.sample(pool, rng.randrange(1, len(pool) + 1))
        if rng.random() < 0.2:
            chosen.append(rng.choice(JUNK))
        return ",".join(chosen)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if name == "issued" and rng.random() < 0.3:
        return "latest"
    return rng.choice(TIMES)


def test_fuzzing_from_the_openapi_document_finds_no_server_error(api: Api) -> None:
    doc = openapi(api)
    rng = random.Random(20250303)
    cursors: list[str] = []
    sent = 0
    statuses: dict[int, int] = {}
    for path, item in doc["paths"].items():
        params = item["get"]["parameters"]
        rounds = 1000 if params else 5
        for _ in range(rounds):
            url_path = path
            if "{site}" in path:
                site = rng.choice(["site-a", "site-b"] * 8 + ["zz", *JUNK[:8]])
                url_path = path.replace("{site}", urllib.parse.quote(site, safe=""))
            query: list[tuple[str, str]] = []
            for param in params:
                if param["in"] == "query" and rng.random() < 0.5:
                    query.append((param["name"], _fuzz_value(rng, param, cursors)))
            if rng.random() < 0.05:
                query.append((rng.choice(["x", "page", "offset", "Sensor"]), "1"))
            if query and rng.random() < 0.05:
                query.append(rng.choice(query))  # a repeated parameter
            accept = rng.choice(ACCEPTS)
            url = api.base + url_path + ("?" + urllib.parse.urlencode(query) if query else "")
            reply = request(url, {"Accept": accept} if accept is not None else {})
            sent += 1
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
            assert reply.status < 500, (url, reply.body[:500])
            check_response(doc, path, reply)
            if reply.status == 200 and reply.content_type == "application/json" and isinstance(
                reply.json, dict
            ) and reply.json.get("next"):
                next_url = reply.json["next"]
                cursors.append(urllib.parse.parse_qs(
                    urllib.parse.urlsplit(next_url).query)["cursor"][0])
                if rng.random() < 0.3:
                    followed = request(api.base + next_url)
                    sent += 1
                    assert followed.status == 200, (next_url, followed.body[:500])
                    check_response(doc, path, followed)
    # The generator reached every kind of answer, not just one.
    assert sent > 4000 and {200, 400, 404, 406} <= set(statuses), statuses
    assert statuses[200] > 500, statuses
