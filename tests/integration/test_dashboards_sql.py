"""Every SQL query of the Grafana dashboards and alert rules, run against a real PostgreSQL.

The database is set up as the postgres chart sets it up: the chart's own init script
(charts/postgres/files/init-roles.sh) creates the owner and the read-only Grafana role,
the migrations run as the owner, and a few days of readings are written through the ingest
write path (energy_pipeline.db.writer) with forecasts and a promoted model beside them.
Then each query, with Grafana's macros expanded for a fixed time range and the template
variables set, runs as the read-only role, must return rows, and must return the columns
its panel or alert rule reads.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from energy_harness.localstack import PostgresServer
from energy_harness.localstack.postgres import SUPERUSER, dsn
from energy_harness.testing import admin_sql
from energy_pipeline.db.migrate import migrate
from energy_pipeline.db.writer import Gap, record_gaps, write_readings
from energy_pipeline.simulation.signals import SimulationConfig, generate

pytestmark = pytest.mark.integration

CHARTS = Path(__file__).resolve().parents[2] / "charts"
GRAFANA = CHARTS / "grafana"
SITES = ("site-0", "site-1")
SITE = "site-0"
DEVICES = ("0", "1", "2", "3")

# What each panel and rule reads: its result columns, in order.
EXPECTED_COLUMNS: dict[str, tuple[str, ...]] = {
    "Energy consumption vs forecast": ("time", "actual", "p10", "p50", "p90"),
    "Forecast: next 7 days per day": ("day", "hours", "p10", "p50", "p90"),
    "Forecast error (rolling 24 h)": ("time", "MAE 24h", "WAPE 24h", "P10-P90 coverage 24h"),
    "Temperature": ("time", "metric", "value"),
    "Humidity": ("time", "metric", "value"),
    "Square footage": ("time", "metric", "value"),
    "Renewable energy": ("time", "metric", "value"),
    "Energy consumption": ("time", "metric", "value"),
    "Data freshness": ("site_id", "age_seconds"),
    "Forecast backlog": ("site_id", "backlog_hours"),
    "Last forecast issued": ("site_id", "age_seconds"),
    "Rows per minute": ("time", "rows/min"),
    "Ingestion delay": ("time", "mean delay", "p95 delay"),
    "Promoted models and backtest metrics": (
        "version", "site", "kind", "trained_on_until", "promoted_at", "metric", "value",
    ),
    "Feature importance (model in service)": ("feature", "share", "kind", "version"),
    "variable site": ("site_id",),
    "variable device": ("device_id",),
    "rule energy-stale-data": ("site_id", "age_seconds"),
    "rule energy-forecast-consumption-high": ("site_id", "peak_p50"),
    "rule energy-forecast-error-high": ("site_id", "wape_percent"),
    "rule energy-readings-lost": ("partition", "lost_records"),
}
# Feature importances of the loaded models, as `train` stores them (largest first).
IMPORTANCES: dict[str, list[dict[str, Any]]] = {
    "v-test": [{"feature": "lag_168", "gain": 0.5}, {"feature": "hour_of_week", "gain": 0.3},
               {"feature": "avg_temperature_mean24", "gain": 0.2}],
    "v-seed": [{"feature": "target_lag1", "gain": 0.6}, {"feature": "avg_humidity_lag2",
                                                          "gain": 0.4}],
    "v-seed-stored": [{"feature": "avg_renewableenergy_lag7", "gain": 1.0}],
}
# The label each rule's rows carry, and its values in the loaded data: a site unless named.
RULE_LABELS: dict[str, set[str]] = {
    "rule energy-readings-lost": {"energy.temperature-2"},
}


# ---------------------------------------------------------------------------------------------
# Grafana's macros, as its PostgreSQL datasource expands them
# ---------------------------------------------------------------------------------------------

def _interval_seconds(text: str) -> int:
    match = re.fullmatch(r"'?(\d+)([smhd])'?", text.strip())
    assert match, f"unsupported interval {text!r}"
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("'%Y-%m-%dT%H:%M:%SZ'")


def expand(
    sql: str, start: datetime, end: datetime, interval: str, variables: dict[str, str]
) -> str:
    """The SQL Grafana sends: macros for [start, end], $__interval, then the variables."""

    def time_group(m: re.Match[str]) -> str:
        step = _interval_seconds(m.group(2).replace("$__interval", interval))
        return f'floor(extract(epoch from {m.group(1)})/{step})*{step} AS "time"'

    sql = re.sub(r"\$__timeGroupAlias\(\s*([\w.]+)\s*,\s*([^)]+)\)", time_group, sql)
    sql = re.sub(
        r"\$__timeFilter\(\s*([\w.]+)\s*\)",
        lambda m: f"{m.group(1)} BETWEEN {_ts(start)} AND {_ts(end)}",
        sql,
    )
    sql = sql.replace("$__timeFrom()", _ts(start)).replace("$__timeTo()", _ts(end))
    unknown = re.findall(r"\$__\w+", sql)
    assert not unknown, f"macros this test does not expand (add them): {unknown}"
    # Longest names first, so $device never eats the start of a longer variable name.
    for name in sorted(variables, key=len, reverse=True):
        sql = sql.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    assert not re.findall(r"\$\{?[a-zA-Z]\w*", sql), f"unset variables in {sql}"
    return sql


def resolve_time(text: str, now: datetime) -> datetime:
    """Grafana's relative times that the dashboards use: now, now-3d, now+24h."""
    match = re.fullmatch(r"now(?:([+-])(\d+)([mhd]))?", text)
    assert match, text
    if not match.group(1):
        return now
    unit = {"m": 60, "h": 3600, "d": 86400}[match.group(3)]
    delta = timedelta(seconds=int(match.group(2)) * unit)
    return now + delta if match.group(1) == "+" else now - delta


# ---------------------------------------------------------------------------------------------
# The database, as the postgres chart sets it up, with data
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChartDatabase:
    owner_dsn: str
    reader_dsn: str
    now: datetime


def _load_data(owner_dsn: str, now: datetime) -> None:
    start = (now - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    interval = timedelta(minutes=15)
    steps = int((now - start) / interval)
    config = SimulationConfig(sites=len(SITES), devices=len(DEVICES), start=start,
                              interval=interval, steps=steps, seed=7)
    readings = list(generate(config))
    assert {r.site for r in readings} == set(SITES)
    conn = psycopg2.connect(owner_dsn)
    try:
        for i in range(0, len(readings), 5000):
            write_readings(conn, readings[i : i + 5000])
            conn.commit()
        with conn.cursor() as cur:
            cur.execute("SELECT site_id, hour, avg_energyconsumption FROM hourly_features")
            actual = {(site, hour): value for site, hour, value in cur.fetchall()}
            current_hour = now.replace(minute=0, second=0, microsecond=0)
            rows = []
            for site in SITES:
                # Hourly runs over the past days (day-ahead horizons), then the latest run
                # for the whole week ahead, as the inference service writes them.
                issue = start + timedelta(hours=1)
                while issue <= current_hour:
                    horizons = 168 if issue == current_hour else 24
                    for h in range(1, horizons + 1):
                        target = issue + timedelta(hours=h - 1)
                        base = actual.get((site, target)) or 50.0
                        p50 = base * 1.04
                        rows.append(
                            (site, issue, target, h, "v-test", p50 * 0.85, p50, p50 * 1.15)
                        )
                    issue += timedelta(hours=1)
            cur.executemany(
                "INSERT INTO forecasts (site_id, issued_at, target_time, horizon, model_version,"
                " p10, p50, p90) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
            cur.execute(
                "INSERT INTO models (version, site_id, trained_on_until, params, metrics,"
                " artifact, promoted, promoted_at, feature_importances)"
                " VALUES ('v-test', NULL, %s, '{}', %s, 'none', true, now(), %s)",
                (start, json.dumps({"mae": 1.5, "n": 72, "lightgbm": {"pinball": 0.4, "mase": 0.8},
                                    "report_split": {"test_rmse": 4.5},
                                    "note": "text is skipped"}),
                 json.dumps(IMPORTANCES["v-test"])),
            )
            # site-0's own model, a seed one (what a pipeline with spec.forecast.model: seed
            # promotes), serves site-0; site-1 has none, so the model for all sites serves it.
            # Another seed model of site-0, not promoted, must not show.
            for version, promoted in (("v-seed", True), ("v-seed-stored", False)):
                cur.execute(
                    "INSERT INTO models (version, site_id, trained_on_until, params, metrics,"
                    " artifact, promoted, promoted_at, feature_importances)"
                    " VALUES (%s, %s, %s, '{\"model\": \"seed\"}', '{}', 'none', %s, now(), %s)",
                    (version, SITE, start, promoted, json.dumps(IMPORTANCES[version])),
                )
        conn.commit()
        # Records Kafka deleted before ingest stored them: two gaps of one partition now,
        # one of another partition two days ago (outside the alert's 24 h).
        record_gaps(conn, "ingest", [Gap("energy.temperature", 2, 100, 199),
                                     Gap("energy.temperature", 2, 300, 349),
                                     Gap("energy.humidity", 0, 0, 9)])
        with conn.cursor() as cur:
            cur.execute("UPDATE ingest_lost_records SET detected_at = now() - interval '2 days'"
                        " WHERE topic = 'energy.humidity'")
        conn.commit()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def chart_database(postgres: PostgresServer) -> Iterator[ChartDatabase]:
    suffix = uuid.uuid4().hex[:8]
    database, owner, reader = f"dash_{suffix}", f"energy_{suffix}", f"reader_{suffix}"
    owner_password, reader_password = uuid.uuid4().hex, f"r'{uuid.uuid4().hex}\"x"
    admin_sql(postgres, f'CREATE DATABASE "{database}"')
    try:
        # The chart's init script, with the environment the StatefulSet gives it.
        env = {
            **os.environ,
            "PGHOST": "127.0.0.1", "PGPORT": str(postgres.port), "PGPASSWORD": postgres.password,
            "POSTGRES_USER": SUPERUSER, "POSTGRES_DB": database,
            "APP_USER": owner, "APP_PASSWORD": owner_password,
            "READER_USER": reader, "READER_PASSWORD": reader_password,
        }
        script = CHARTS / "postgres" / "files" / "init-roles.sh"
        result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        owner_dsn = dsn(postgres.port, owner_password, database, user=owner)
        migrate(owner_dsn)
        _load_data(owner_dsn, datetime.now(UTC))
        # Queries look at "now" after the load, so ingested_at falls inside their time range;
        # rounded up, as Grafana sends whole seconds.
        reader_dsn = dsn(postgres.port, reader_password, database, user=reader)
        now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        yield ChartDatabase(owner_dsn, reader_dsn, now)
    finally:
        admin_sql(postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin_sql(postgres, f'DROP ROLE IF EXISTS "{reader}"')
        admin_sql(postgres, f'DROP ROLE IF EXISTS "{owner}"')


# ---------------------------------------------------------------------------------------------
# The queries
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    name: str
    sql: str
    fmt: str
    time_from: str
    time_to: str


def dashboard_queries() -> list[Query]:
    queries = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        time_range = dashboard["time"]
        for variable in dashboard["templating"]["list"]:
            queries.append(Query(f"variable {variable['name']}", variable["query"], "table",
                                 time_range["from"], time_range["to"]))
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                if "rawSql" in target:
                    queries.append(Query(panel["title"], target["rawSql"], target["format"],
                                         time_range["from"], time_range["to"]))
    return queries


def chart_default_alert_values() -> dict[str, str]:
    """The placeholders of alerting/rules.yaml, filled from the chart's default values as
    its `grafana.alertRules` helper does (a cluster test checks the two agree)."""
    alerts = yaml.safe_load((GRAFANA / "values.yaml").read_text())["alerts"]
    return {
        "__FOLDER__": json.dumps(alerts["folder"]),
        "__STALE_AFTER_SECONDS__": str(alerts["staleData"]["afterSeconds"]),
        "__STALE_FOR__": str(alerts["staleData"]["for"]),
        "__CONSUMPTION_THRESHOLD__": str(alerts["forecastConsumption"]["threshold"]),
        "__CONSUMPTION_FOR__": str(alerts["forecastConsumption"]["for"]),
        "__ERROR_MAX_PERCENT__": str(alerts["forecastError"]["maxPercent"]),
        "__ERROR_MIN_SAMPLES__": str(alerts["forecastError"]["minSamples"]),
        "__ERROR_FOR__": str(alerts["forecastError"]["for"]),
        "__LOST_WITHIN_HOURS__": str(alerts["readingsLost"]["withinHours"]),
        "__LOST_MORE_THAN__": str(alerts["readingsLost"]["moreThan"]),
    }


def alert_queries() -> list[Query]:
    text = (GRAFANA / "alerting" / "rules.yaml").read_text()
    for placeholder, value in chart_default_alert_values().items():
        text = text.replace(placeholder, value)
    parsed = yaml.safe_load(text)
    assert not re.findall(r"__[A-Z_]+__", json.dumps(parsed)), "a placeholder without a value"
    queries = []
    for group in parsed["groups"]:
        for rule in group["rules"]:
            for step in rule["data"]:
                if step["datasourceUid"] == "energy-postgres":
                    span = step["relativeTimeRange"]["from"]
                    queries.append(Query(f"rule {rule['uid']}", step["model"]["rawSql"], "table",
                                         f"now-{span // 60}m", "now"))
    return queries


ALL_QUERIES = dashboard_queries() + alert_queries()


def test_every_query_has_its_expected_columns_listed() -> None:
    assert sorted({q.name for q in ALL_QUERIES}) == sorted(EXPECTED_COLUMNS)


def run_as_reader(db: ChartDatabase, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    conn = psycopg2.connect(db.reader_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [c.name for c in cur.description], cur.fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda q: q.name)
def test_query_runs_as_the_reader_role_and_returns_its_columns(
    chart_database: ChartDatabase, query: Query
) -> None:
    now = chart_database.now
    variables = {"site": SITE, "device": ",".join(f"'{d}'" for d in DEVICES)}
    sql = expand(query.sql, resolve_time(query.time_from, now), resolve_time(query.time_to, now),
                 "5m", variables)
    columns, rows = run_as_reader(chart_database, sql)
    assert tuple(columns) == EXPECTED_COLUMNS[query.name]
    assert rows, f"{query.name}: no rows\n{sql}"
    if query.fmt == "time_series":
        times = [row[0] for row in rows]
        assert times == sorted(times), "Grafana needs time series sorted by time"
        values = [v for row in rows for v in row[1:] if not isinstance(v, str)]
        assert any(v is not None for v in values)
    if query.name.startswith("rule "):
        # One row per site (or what RULE_LABELS names): a text label and the number the
        # threshold compares.
        assert {row[0] for row in rows} == RULE_LABELS.get(query.name, set(SITES))
        assert all(isinstance(row[1], float) for row in rows), rows


def test_panels_show_the_loaded_data(chart_database: ChartDatabase) -> None:
    """Spot checks of values: the queries read what was written, not merely something."""
    now = chart_database.now
    by_name = {q.name: q for q in ALL_QUERIES}

    def rows_of(name: str) -> list[tuple[Any, ...]]:
        q = by_name[name]
        sql = expand(q.sql, resolve_time(q.time_from, now), resolve_time(q.time_to, now), "5m",
                     {"site": SITE, "device": "'0','1','2','3'"})
        return run_as_reader(chart_database, sql)[1]

    assert [r[0] for r in rows_of("variable site")] == list(SITES)
    assert [r[0] for r in rows_of("variable device")] == list(DEVICES)
    week = rows_of("Forecast: next 7 days per day")
    assert 7 <= len(week) <= 8 and all(p10 <= p50 <= p90 for _, _, p10, p50, p90 in week)
    # The latest run covers 168 hours from the current one; the panel shows the 7 UTC days
    # from today's midnight, so the hours of today already past fall off its end.
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    assert sum(hours for _, hours, *_ in week) == 168 - current_hour.hour
    error = rows_of("Forecast error (rolling 24 h)")
    # The loaded forecasts are 4 % above the actual value: WAPE about 4 %, band always hit.
    last = error[-1]
    assert 3.5 < last[2] < 4.5 and last[3] == pytest.approx(100.0)
    freshness = dict(rows_of("Data freshness"))
    # Readings every 15 min up to the last whole step before now: at most two steps old.
    assert all(0 <= age < 31 * 60 for age in freshness.values()), freshness
    assert rows_of("rule energy-readings-lost") == [("energy.temperature-2", 150.0)]
    models = rows_of("Promoted models and backtest metrics")
    metrics = {r[5]: r[6] for r in models}
    assert metrics == {"mae": 1.5, "n": 72.0, "lightgbm.pinball": 0.4, "lightgbm.mase": 0.8,
                       "report_split.test_rmse": 4.5}
    assert {(r[0], r[1], r[2]) for r in models} == {("v-test", "all", "default")}
    # The model serving the selected site, its features largest first, in %.
    assert rows_of("Feature importance (model in service)") == [
        ("target_lag1", 60.0, "seed", "v-seed"), ("avg_humidity_lag2", 40.0, "seed", "v-seed")]
    q = by_name["Feature importance (model in service)"]
    other = run_as_reader(chart_database, expand(q.sql, now, now, "5m", {"site": "site-1"}))[1]
    assert other == [(i["feature"], pytest.approx(100 * i["gain"]), "default", "v-test")
                     for i in IMPORTANCES["v-test"]]
    consumption = rows_of("Energy consumption vs forecast")
    assert any(r[1] is None and r[3] is not None for r in consumption), "the next 24 h"
    assert any(r[1] is not None and r[3] is not None for r in consumption), "the past days"


def test_reader_role_cannot_write(chart_database: ChartDatabase) -> None:
    conn = psycopg2.connect(chart_database.reader_dsn)
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as denied:
            cur.execute("DELETE FROM readings")
        assert denied.value.pgcode in {"25006", "42501"}  # read-only transaction / no privilege
    finally:
        conn.close()
