"""Every SQL query of the Grafana dashboards and alert rules, run against a real PostgreSQL.

The database is set up as the postgres chart sets it up: the chart's own init script
(charts/postgres/files/init-roles.sh) creates the owner and the read-only Grafana role, and
makes no grant on any pipeline's schema. Two pipelines share the database, each in a schema
of its own as the operator migrates them (`migrate(with_schema(...))`, as the owner):
`energy` with a few days of readings written through the ingest write path
(energy_pipeline.db.writer), forecasts and promoted models beside them, and `other` with
different sites' data, forecasts and model. Then each query, with Grafana's macros expanded
for a fixed time range and the template variables set as Grafana's PostgreSQL datasource
sets them (the `pipeline` variable to each schema in turn; each alert rule's copy per
pipeline as the chart renders it), runs as the read-only role, must return rows and the
columns its panel or alert rule reads, and must show that pipeline's data only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from energy_harness.localstack import PostgresServer
from energy_harness.localstack.postgres import SUPERUSER, dsn
from energy_harness.testing import admin_sql
from energy_pipeline.db.connect import with_schema
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
    "variable pipeline": ("table_schema",),
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
    "v-other": [{"feature": "lag_24", "gain": 0.75}, {"feature": "hour_of_day", "gain": 0.25}],
}


# ---------------------------------------------------------------------------------------------
# Grafana's macros and variables, as its PostgreSQL datasource expands them
# ---------------------------------------------------------------------------------------------

def _interval_seconds(text: str) -> int:
    match = re.fullmatch(r"'?(\d+)([smhd])'?", text.strip())
    assert match, f"unsupported interval {text!r}"
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("'%Y-%m-%dT%H:%M:%SZ'")


# Grafana's variable syntaxes (variableRegex, public/app/features/variables/utils.ts): $name,
# [[name]] and ${name}, the last two with an optional :format, ${name.field} for a property.
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[([\s\S]+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")


def _sql_value(value: str | Sequence[str]) -> str:
    """A variable's value as the SQL datasources paste it (SqlDatasource.interpolateVariable,
    grafana/grafana packages/grafana-sql): one value of a single-value variable as it is
    with `'` doubled; the values of a multi-value variable each quoted as a literal, joined
    by commas."""
    if isinstance(value, str):
        return value.replace("'", "''")
    return ",".join("'" + v.replace("'", "''") + "'" for v in value)


def expand(
    sql: str, start: datetime, end: datetime, interval: str,
    variables: Mapping[str, str | Sequence[str]],
) -> str:
    """The SQL Grafana sends: macros for [start, end], $__interval, then the variables (a
    str: a single-value variable; a list: the selection of a multi-value one). Fails on a
    macro or variable it does not know, and on a variable format (`${x:raw}`), which would
    bypass the datasource's quoting that this replays."""

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

    def variable(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        assert not (m.group(3) or m.group(5) or m.group(6)), f"unsupported {m.group(0)}"
        assert name in variables, f"unset variable {m.group(0)} in {sql}"
        return _sql_value(variables[name])

    return _VARIABLE.sub(variable, sql)


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
# The database, as the postgres chart sets it up, with two pipelines' data
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Model:
    version: str
    site_id: str | None
    params: dict[str, Any]
    metrics: dict[str, Any]
    promoted: bool


@dataclass(frozen=True)
class Pipeline:
    """One EnergyPipeline's data, loaded into its schema; what its panels and rules show."""

    schema: str
    sites: tuple[str, ...]
    devices: tuple[str, ...]
    days: int
    seed: int
    # The forecasts' P50 over the measured hourly mean (0.04: 4 % above, a WAPE of 4 %).
    bias: float
    models: tuple[Model, ...]
    # Lost records detected now, and those of `aged_topic` detected two days ago.
    gaps: tuple[Gap, ...]
    aged_topic: str = ""
    # The label each rule's rows carry, and its values in the loaded data: a site unless named.
    rule_labels: dict[str, set[str]] = field(default_factory=dict)


ENERGY = Pipeline(
    "energy", SITES, DEVICES, days=3, seed=7, bias=0.04,
    models=(
        Model("v-test", None, {}, {"mae": 1.5, "n": 72,
                                   "lightgbm": {"pinball": 0.4, "mase": 0.8},
                                   "report_split": {"test_rmse": 4.5},
                                   "note": "text is skipped"}, promoted=True),
        # site-0's own model, a seed one (what a pipeline with spec.forecast.model: seed
        # promotes), serves site-0; site-1 has none, so the model for all sites serves it.
        # Another seed model of site-0, not promoted, must not show.
        Model("v-seed", SITE, {"model": "seed"}, {}, promoted=True),
        Model("v-seed-stored", SITE, {"model": "seed"}, {}, promoted=False),
    ),
    # Two gaps of one partition now, one of another partition two days ago (outside the
    # alert's 24 h).
    gaps=(Gap("energy.temperature", 2, 100, 199), Gap("energy.temperature", 2, 300, 349),
          Gap("energy.humidity", 0, 0, 9)),
    aged_topic="energy.humidity",
    rule_labels={"rule energy-readings-lost": {"energy.temperature-2"}},
)
# A second pipeline in the same database: a site named as one of energy's (site ids are
# per pipeline), other devices, values, forecast error and model.
OTHER = Pipeline(
    "other", ("site-0",), ("0", "1"), days=2, seed=11, bias=0.10,
    models=(Model("v-other", None, {}, {"mae": 9.0}, promoted=True),),
    gaps=(Gap("other.temperature", 1, 0, 4),),
    rule_labels={"rule energy-readings-lost": {"other.temperature-1"}},
)
PIPELINES = {p.schema: p for p in (ENERGY, OTHER)}


@dataclass(frozen=True)
class ChartDatabase:
    owner_dsn: str
    reader_dsn: str
    reader: str
    now: datetime
    # Readings stored per pipeline (schema).
    readings: dict[str, int]


def _load_data(owner_dsn: str, pipeline: Pipeline, now: datetime) -> int:
    """`pipeline`'s readings, forecasts, models and lost records, written into its schema
    (`owner_dsn` has its search_path); returns the number of readings."""
    start = (now - timedelta(days=pipeline.days)).replace(minute=0, second=0, microsecond=0)
    interval = timedelta(minutes=15)
    steps = int((now - start) / interval)
    config = SimulationConfig(sites=len(pipeline.sites), devices=len(pipeline.devices),
                              start=start, interval=interval, steps=steps, seed=pipeline.seed)
    readings = list(generate(config))
    assert {r.site for r in readings} == set(pipeline.sites)
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
            for site in pipeline.sites:
                # Hourly runs over the past days (day-ahead horizons), then the latest run
                # for the whole week ahead, as the inference service writes them.
                issue = start + timedelta(hours=1)
                while issue <= current_hour:
                    horizons = 168 if issue == current_hour else 24
                    for h in range(1, horizons + 1):
                        target = issue + timedelta(hours=h - 1)
                        base = actual.get((site, target)) or 50.0
                        p50 = base * (1 + pipeline.bias)
                        rows.append((site, issue, target, h, pipeline.models[0].version,
                                     p50 * 0.85, p50, p50 * 1.15))
                    issue += timedelta(hours=1)
            cur.executemany(
                "INSERT INTO forecasts (site_id, issued_at, target_time, horizon, model_version,"
                " p10, p50, p90) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
            for model in pipeline.models:
                cur.execute(
                    "INSERT INTO models (version, site_id, trained_on_until, params, metrics,"
                    " artifact, promoted, promoted_at, feature_importances)"
                    " VALUES (%s, %s, %s, %s, %s, 'none', %s, now(), %s)",
                    (model.version, model.site_id, start, json.dumps(model.params),
                     json.dumps(model.metrics), model.promoted,
                     json.dumps(IMPORTANCES[model.version])),
                )
        conn.commit()
        # Records Kafka deleted before ingest stored them.
        record_gaps(conn, "ingest", pipeline.gaps)
        if pipeline.aged_topic:
            with conn.cursor() as cur:
                cur.execute("UPDATE ingest_lost_records SET detected_at = now() - interval"
                            " '2 days' WHERE topic = %s", (pipeline.aged_topic,))
        conn.commit()
    finally:
        conn.close()
    return len(readings)


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
        # Each pipeline as the operator migrates it, as the owner; no grant is made here: the
        # reader reads the new schemas through init-roles.sh's default privileges only.
        readings = {}
        for pipeline in PIPELINES.values():
            schema_dsn = with_schema(owner_dsn, pipeline.schema)
            migrate(schema_dsn)
            readings[pipeline.schema] = _load_data(schema_dsn, pipeline, datetime.now(UTC))
        # A schema whose name the dashboards could not paste between double quotes (the
        # CRD never makes one): readable, with a pipeline's table, yet never offered.
        conn = psycopg2.connect(owner_dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute('CREATE SCHEMA "Odd-Schema"')
                cur.execute('CREATE TABLE "Odd-Schema".hourly_features (site_id text)')
        finally:
            conn.close()
        # Queries look at "now" after the load, so ingested_at falls inside their time range;
        # rounded up, as Grafana sends whole seconds.
        reader_dsn = dsn(postgres.port, reader_password, database, user=reader)
        now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        yield ChartDatabase(owner_dsn, reader_dsn, reader, now, readings)
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
    # The pipeline (schema) it reads: the dashboards' `pipeline` variable, or the pipeline of
    # the alert rule's copy.
    pipeline: str


def dashboard_queries(pipeline: str) -> list[Query]:
    queries: list[Query] = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        time_range = dashboard["time"]
        for variable in dashboard["templating"]["list"]:
            query = Query(f"variable {variable['name']}", variable["query"], "table",
                          time_range["from"], time_range["to"], pipeline)
            # The same variable on both dashboards: tested once.
            if all((q.name, q.sql) != (query.name, query.sql) for q in queries):
                queries.append(query)
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                if "rawSql" in target:
                    queries.append(Query(panel["title"], target["rawSql"], target["format"],
                                         time_range["from"], time_range["to"], pipeline))
    return queries


def chart_default_values() -> dict[str, Any]:
    return yaml.safe_load((GRAFANA / "values.yaml").read_text())


def chart_default_alert_values() -> dict[str, str]:
    """The placeholders of alerting/rules.yaml, filled from the chart's default values as
    its `grafana.alertRules` helper does (a cluster test checks the two agree)."""
    alerts = chart_default_values()["alerts"]
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


def rule_uid(uid: str, pipeline: str) -> str:
    """A rule's uid in the copy for `pipeline`, as the chart's grafana.ruleUid makes it."""
    suffixed = f"{uid}-{pipeline}"
    if len(suffixed) <= 40:
        return suffixed
    return f"{uid}-{hashlib.sha256(pipeline.encode()).hexdigest()[: 39 - len(uid)]}"


def chart_alert_rules(pipelines: Sequence[str]) -> dict[str, Any]:
    """The alert rule file the chart provisions for `pipelines` with its default alerts.*,
    as its `grafana.alertRules` helper makes it: a copy of the group per pipeline, then the
    uids of the rules before there were copies, deleted."""
    text = (GRAFANA / "alerting" / "rules.yaml").read_text()
    for placeholder, value in chart_default_alert_values().items():
        text = text.replace(placeholder, value)
    groups: list[dict[str, Any]] = []
    legacy: dict[str, None] = {}
    for pipeline in pipelines:
        for group in yaml.safe_load(text.replace("__PIPELINE__", pipeline))["groups"]:
            for rule in group["rules"]:
                legacy[rule["uid"]] = None
                rule["uid"] = rule_uid(rule["uid"], pipeline)
            groups.append(group)
    doc = {"apiVersion": 1, "groups": groups,
           "deleteRules": [{"orgId": 1, "uid": uid} for uid in legacy]}
    assert not re.findall(r"__[A-Z_]+__", json.dumps(doc)), "a placeholder without a value"
    return doc


def alert_queries(pipelines: Sequence[str]) -> list[Query]:
    queries = []
    for group in chart_alert_rules(pipelines)["groups"]:
        for rule in group["rules"]:
            pipeline = rule["labels"]["pipeline"]
            base = rule["uid"].removesuffix(f"-{pipeline}")
            for step in rule["data"]:
                if step["datasourceUid"] == "energy-postgres":
                    span = step["relativeTimeRange"]["from"]
                    queries.append(Query(f"rule {base}", step["model"]["rawSql"], "table",
                                         f"now-{span // 60}m", "now", pipeline))
    return queries


ALL_QUERIES = [q for p in PIPELINES for q in dashboard_queries(p)] + alert_queries(
    list(PIPELINES))


def test_every_query_has_its_expected_columns_listed() -> None:
    assert sorted({q.name for q in ALL_QUERIES}) == sorted(EXPECTED_COLUMNS)
    # Every rule once per pipeline, and the chart's default pipeline among those tested.
    rules = [(q.name, q.pipeline) for q in ALL_QUERIES if q.name.startswith("rule ")]
    assert sorted(rules) == sorted((name, p) for name in EXPECTED_COLUMNS
                                   if name.startswith("rule ") for p in PIPELINES)
    assert chart_default_values()["pipelines"] == [ENERGY.schema]


def test_the_expander_replays_grafanas_quoting_and_refuses_what_it_cannot_expand() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert expand('SELECT 1 FROM "${pipeline}".readings WHERE site_id = \'$site\''
                  " AND device_id IN ($device)", now, now, "5m",
                  {"pipeline": "energy", "site": "o'k", "device": ["0", "1"]}) == (
        "SELECT 1 FROM \"energy\".readings WHERE site_id = 'o''k' AND device_id IN ('0','1')")
    for sql in ('SELECT 1 FROM "${pipeline}".readings', "SELECT 1 FROM [[pipeline]].readings",
                'SELECT 1 FROM "$pipeline".readings', 'SELECT "${site:raw}"'):
        with pytest.raises(AssertionError):
            expand(sql, now, now, "5m", {"site": "x"})


def run_as_reader(db: ChartDatabase, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    conn = psycopg2.connect(db.reader_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [c.name for c in cur.description], cur.fetchall()
    finally:
        conn.close()


def variables_for(pipeline: Pipeline, site: str = SITE) -> dict[str, str | Sequence[str]]:
    """The dashboards' variables on `pipeline`: its schema, a site, every device (All)."""
    return {"pipeline": pipeline.schema, "site": site, "device": list(pipeline.devices)}


def rows_of(db: ChartDatabase, query: Query, site: str = SITE) -> list[tuple[Any, ...]]:
    now = db.now
    sql = expand(query.sql, resolve_time(query.time_from, now), resolve_time(query.time_to, now),
                 "5m", variables_for(PIPELINES[query.pipeline], site))
    return run_as_reader(db, sql)[1]


def by_name(pipeline: str) -> dict[str, Query]:
    return {q.name: q for q in ALL_QUERIES if q.pipeline == pipeline}


@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda q: f"{q.pipeline}: {q.name}")
def test_query_runs_as_the_reader_role_and_returns_its_columns(
    chart_database: ChartDatabase, query: Query
) -> None:
    now = chart_database.now
    pipeline = PIPELINES[query.pipeline]
    sql = expand(query.sql, resolve_time(query.time_from, now), resolve_time(query.time_to, now),
                 "5m", variables_for(pipeline))
    columns, rows = run_as_reader(chart_database, sql)
    assert tuple(columns) == EXPECTED_COLUMNS[query.name]
    assert rows, f"{query.name}: no rows\n{sql}"
    if query.fmt == "time_series":
        times = [row[0] for row in rows]
        assert times == sorted(times), "Grafana needs time series sorted by time"
        values = [v for row in rows for v in row[1:] if not isinstance(v, str)]
        assert any(v is not None for v in values)
    if query.name.startswith("rule "):
        # One row per site of the rule's pipeline (or what rule_labels names): a text label
        # and the number the threshold compares.
        assert {row[0] for row in rows} == pipeline.rule_labels.get(query.name,
                                                                    set(pipeline.sites))
        assert all(isinstance(row[1], float) for row in rows), rows


def test_the_pipeline_variable_lists_every_pipeline_the_reader_may_read(
    chart_database: ChartDatabase,
) -> None:
    # Whichever pipeline is selected; not "Odd-Schema", which could not be pasted as it is.
    for pipeline in PIPELINES:
        assert rows_of(chart_database, by_name(pipeline)["variable pipeline"]) == [
            (p,) for p in sorted(PIPELINES)]


def test_panels_show_the_loaded_data(chart_database: ChartDatabase) -> None:
    """Spot checks of values: the queries read what was written, not merely something."""
    now = chart_database.now
    queries = by_name(ENERGY.schema)

    def rows(name: str) -> list[tuple[Any, ...]]:
        return rows_of(chart_database, queries[name])

    assert [r[0] for r in rows("variable site")] == list(SITES)
    assert [r[0] for r in rows("variable device")] == list(DEVICES)
    week = rows("Forecast: next 7 days per day")
    assert 7 <= len(week) <= 8 and all(p10 <= p50 <= p90 for _, _, p10, p50, p90 in week)
    # The latest run covers 168 hours from the current one; the panel shows the 7 UTC days
    # from today's midnight, so the hours of today already past fall off its end.
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    assert sum(hours for _, hours, *_ in week) == 168 - current_hour.hour
    error = rows("Forecast error (rolling 24 h)")
    # The loaded forecasts are 4 % above the actual value: WAPE about 4 %, band always hit.
    last = error[-1]
    assert 3.5 < last[2] < 4.5 and last[3] == pytest.approx(100.0)
    freshness = dict(rows("Data freshness"))
    # Readings every 15 min up to the last whole step before now: at most two steps old.
    assert all(0 <= age < 31 * 60 for age in freshness.values()), freshness
    assert rows("rule energy-readings-lost") == [("energy.temperature-2", 150.0)]
    models = rows("Promoted models and backtest metrics")
    metrics = {r[5]: r[6] for r in models}
    assert metrics == {"mae": 1.5, "n": 72.0, "lightgbm.pinball": 0.4, "lightgbm.mase": 0.8,
                       "report_split.test_rmse": 4.5}
    assert {(r[0], r[1], r[2]) for r in models} == {("v-test", "all", "default")}
    # The model serving the selected site, its features largest first, in %.
    assert rows("Feature importance (model in service)") == [
        ("target_lag1", 60.0, "seed", "v-seed"), ("avg_humidity_lag2", 40.0, "seed", "v-seed")]
    other_site = rows_of(chart_database, queries["Feature importance (model in service)"],
                         site="site-1")
    assert other_site == [(i["feature"], pytest.approx(100 * i["gain"]), "default", "v-test")
                          for i in IMPORTANCES["v-test"]]
    consumption = rows("Energy consumption vs forecast")
    assert any(r[1] is None and r[3] is not None for r in consumption), "the next 24 h"
    assert any(r[1] is not None and r[3] is not None for r in consumption), "the past days"


def test_each_pipeline_shows_its_own_data_only(chart_database: ChartDatabase) -> None:
    """The same panels on pipeline `other`: its site, devices, forecast error, model and lost
    records, none of energy's, although both have a site-0."""
    queries = by_name(OTHER.schema)

    def rows(name: str) -> list[tuple[Any, ...]]:
        return rows_of(chart_database, queries[name])

    assert rows("variable site") == [("site-0",)]
    assert rows("variable device") == [("0",), ("1",)]
    assert {r[0] for r in rows("Data freshness")} == {"site-0"}
    assert {r[0] for r in rows("Last forecast issued")} == {"site-0"}
    assert {r[1] for r in rows("Temperature")} == {"0", "1"}
    # 10 % above the actual value here, 4 % in energy.
    assert 9.5 < rows("Forecast error (rolling 24 h)")[-1][2] < 10.5
    models = rows("Promoted models and backtest metrics")
    assert [(r[0], r[1], r[2], r[5], r[6]) for r in models] == [
        ("v-other", "all", "default", "mae", 9.0)]
    assert rows("Feature importance (model in service)") == [
        (i["feature"], pytest.approx(100 * i["gain"]), "default", "v-other")
        for i in IMPORTANCES["v-other"]]
    assert rows("rule energy-readings-lost") == [("other.temperature-1", 5.0)]
    # Every reading of a pipeline counted once, in its own dashboards only (all were
    # ingested within the last minutes).
    for schema, stored in chart_database.readings.items():
        per_minute = rows_of(chart_database, by_name(schema)["Rows per minute"])
        assert sum(count for _, count in per_minute) == stored, schema
    # And no panel or rule shows the same on both pipelines.
    energy = by_name(ENERGY.schema)
    for name, query in queries.items():
        if name != "variable pipeline":
            assert rows_of(chart_database, query) != rows_of(chart_database, energy[name]), name


def test_the_reader_reads_every_pipeline_through_the_default_privileges(
    chart_database: ChartDatabase,
) -> None:
    """init-roles.sh granted ahead what the owner creates later: USAGE on each pipeline's
    schema and SELECT on each table and view of it (distributeddata too), no grant since."""
    for schema in PIPELINES:
        _, relations = run_as_reader(chart_database, f"""
            SELECT c.relname, c.relkind, has_table_privilege(c.oid, 'SELECT')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = '{schema}' AND c.relkind IN ('r', 'p', 'v', 'm')
            ORDER BY 1""")
        kinds = {name: kind for name, kind, _ in relations}
        assert kinds["distributeddata"] == "v" and kinds["readings"] in {"r", "p"}, kinds
        assert [name for name, _, readable in relations if not readable] == [], schema
        _, [(count,)] = run_as_reader(
            chart_database, f'SELECT count(*) FROM "{schema}".distributeddata')
        assert count > 0, schema
    # Where the grants come from: the owner's default privileges, in no schema in particular.
    _, acl = run_as_reader(chart_database, """
        SELECT d.defaclobjtype, a.privilege_type
        FROM pg_default_acl d, aclexplode(d.defaclacl) a
        WHERE d.defaclnamespace = 0 AND a.grantee = current_user::regrole
        ORDER BY 1""")
    assert acl == [("n", "USAGE"), ("r", "SELECT")]


def test_reader_role_cannot_write(chart_database: ChartDatabase) -> None:
    conn = psycopg2.connect(chart_database.reader_dsn)
    try:
        for schema in PIPELINES:
            with conn.cursor() as cur, pytest.raises(psycopg2.Error) as denied:
                cur.execute(f'DELETE FROM "{schema}".readings')
            # Read-only transaction or no privilege; not a missing table.
            assert denied.value.pgcode in {"25006", "42501"}, denied.value
            conn.rollback()
    finally:
        conn.close()
