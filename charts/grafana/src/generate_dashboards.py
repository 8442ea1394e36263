"""Writes the Grafana dashboards of this chart (`../dashboards/*.json`) from Python.

Generated rather than hand-edited so that every panel has the same shape (datasource, ids,
grid) and the SQL lives in one readable place. Every query reads the tables of the pipeline
chosen in the `pipeline` variable (one PostgreSQL schema per EnergyPipeline). After editing, run
`python charts/grafana/src/generate_dashboards.py`; a unit test fails while the committed
JSON differs from what this produces. Excluded from the packaged chart by .helmignore.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

POSTGRES = {"type": "grafana-postgresql-datasource", "uid": "energy-postgres"}
PROMETHEUS = {"type": "prometheus", "uid": "energy-prometheus"}
# Grafana 12.x dashboards; Grafana migrates older schema versions on load, never newer ones.
SCHEMA_VERSION = 41

# Every pipeline keeps its tables in a PostgreSQL schema of its own (spec.database.schema), so
# every table below is qualified by the `pipeline` variable: "${pipeline}".readings. Grafana's
# PostgreSQL datasource pastes a single-value variable's value as it is, only doubling `'`
# (SqlDatasource.interpolateVariable, grafana/grafana packages/grafana-sql; docs: "PostgreSQL
# template variables", quoting only for multi-value variables), so that reads
# "energy".readings: a quoted identifier, exact whatever the schema's name.
# The variable's options: schemas holding a pipeline's tables that the reader may read
# (information_schema shows only tables it has a privilege on), limited to the names the CRD
# admits for spec.database.schema: a value goes between the double quotes unescaped.
PIPELINES_SQL = """\
SELECT DISTINCT table_schema
FROM information_schema.tables
WHERE table_name = 'hourly_features'
  AND table_schema ~ '^[a-z_][a-z0-9_]*$'
  AND has_schema_privilege(table_schema, 'USAGE')
ORDER BY 1"""

SENSORS = (
    ("temperature", "Temperature", "celsius"),
    ("humidity", "Humidity", "percent"),
    ("squarefootage", "Square footage", "areaFT2"),
    ("renewableenergy", "Renewable energy", "kwatth"),
    ("energyconsumption", "Energy consumption", "kwatth"),
)

# Seconds since the newest reading, per site. hourly_features (small) names the sites and
# their last hour, so only that hour of `readings` is scanned, through the BRIN index.
FRESHNESS_SQL = """\
SELECT s.site_id, EXTRACT(EPOCH FROM now() - r.last_ts)::double precision AS age_seconds
FROM (
  SELECT site_id, max(hour) AS last_hour
  FROM "${pipeline}".hourly_features
  WHERE hour > now() - interval '30 days'
  GROUP BY site_id
) s
CROSS JOIN LATERAL (
  SELECT max(ts) AS last_ts
  FROM "${pipeline}".readings r
  WHERE r.site_id = s.site_id AND r.ts >= s.last_hour
) r
ORDER BY s.site_id"""


def sensor_sql(sensor: str) -> str:
    return f"""\
SELECT $__timeGroupAlias(ts, $__interval), device_id AS metric, avg(value) AS value
FROM "${{pipeline}}".readings
WHERE $__timeFilter(ts)
  AND site_id = '$site'
  AND sensor = '{sensor}'
  AND device_id IN ($device)
GROUP BY 1, 2
ORDER BY 1, 2"""


# The most recently issued forecast of each target hour next to the hourly average actually
# measured (hourly_features.hour and forecasts.target_time both label an hour by its start).
CONSUMPTION_VS_FORECAST_SQL = """\
WITH actual AS (
  SELECT hour, avg_energyconsumption AS actual
  FROM "${pipeline}".hourly_features
  WHERE site_id = '$site' AND $__timeFilter(hour)
), latest AS (
  SELECT DISTINCT ON (target_time) target_time, p10, p50, p90
  FROM "${pipeline}".forecasts
  WHERE site_id = '$site' AND $__timeFilter(target_time)
  ORDER BY target_time, issued_at DESC
)
SELECT coalesce(a.hour, f.target_time) AS "time", a.actual, f.p10, f.p50, f.p90
FROM actual a
FULL JOIN latest f ON f.target_time = a.hour
ORDER BY 1"""

# Daily totals of the latest forecast run, as energy_pipeline.forecasting.daily computes them:
# quantiles summed per UTC day, with the hour count so a partial first/last day shows.
NEXT_7_DAYS_SQL = """\
WITH run AS (
  SELECT max(issued_at) AS issued_at FROM "${pipeline}".forecasts WHERE site_id = '$site'
)
SELECT to_char(date_trunc('day', f.target_time, 'UTC'), 'YYYY-MM-DD') AS day,
       count(*) AS hours, sum(f.p10) AS p10, sum(f.p50) AS p50, sum(f.p90) AS p90
FROM "${pipeline}".forecasts f
JOIN run ON f.issued_at = run.issued_at
WHERE f.site_id = '$site'
  AND f.target_time >= date_trunc('day', now(), 'UTC')
  AND f.target_time < date_trunc('day', now(), 'UTC') + interval '7 days'
GROUP BY 1
ORDER BY 1"""

# Day-ahead forecasts (horizons 1..24) scored against closed hours, then a trailing 24 h
# window: MAE, WAPE (MAE relative to the mean actual, robust where actuals are near zero)
# and how often the actual fell inside the P10-P90 band (ideally about 80 %).
FORECAST_ERROR_SQL = """\
WITH pairs AS (
  SELECT f.target_time,
         abs(f.p50 - h.avg_energyconsumption) AS abs_err,
         abs(h.avg_energyconsumption) AS abs_actual,
         CASE WHEN h.avg_energyconsumption BETWEEN f.p10 AND f.p90 THEN 1.0 ELSE 0.0 END AS covered
  FROM "${pipeline}".forecasts f
  JOIN "${pipeline}".hourly_features h ON h.site_id = f.site_id AND h.hour = f.target_time
  WHERE f.site_id = '$site'
    AND f.horizon BETWEEN 1 AND 24
    AND $__timeFilter(f.target_time)
    AND h.hour < date_trunc('hour', now())
    AND h.avg_energyconsumption IS NOT NULL
), per_hour AS (
  SELECT target_time, avg(abs_err) AS mae, avg(abs_actual) AS mean_actual, avg(covered) AS coverage
  FROM pairs
  GROUP BY target_time
)
SELECT target_time AS "time",
       avg(mae) OVER w AS "MAE 24h",
       100 * sum(mae) OVER w / nullif(sum(mean_actual) OVER w, 0) AS "WAPE 24h",
       100 * avg(coverage) OVER w AS "P10-P90 coverage 24h"
FROM per_hour
WINDOW w AS (ORDER BY target_time RANGE BETWEEN interval '23 hours' PRECEDING AND CURRENT ROW)
ORDER BY 1"""

# `readings` has a BRIN index on ts only: bounding ts as well keeps this a range scan, while
# the week of slack still counts readings that arrived late (a replay, a backfill).
ROWS_PER_MINUTE_SQL = """\
SELECT $__timeGroupAlias(ingested_at, '1m'), count(*)::double precision AS "rows/min"
FROM "${pipeline}".readings
WHERE $__timeFilter(ingested_at)
  AND ts >= $__timeFrom()::timestamptz - interval '7 days'
GROUP BY 1
ORDER BY 1"""

INGESTION_DELAY_SQL = """\
SELECT $__timeGroupAlias(ingested_at, $__interval),
       avg(EXTRACT(EPOCH FROM ingested_at - ts)) AS "mean delay",
       percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM ingested_at - ts))
         AS "p95 delay"
FROM "${pipeline}".readings
WHERE $__timeFilter(ingested_at)
  AND ts >= $__timeFrom()::timestamptz - interval '7 days'
GROUP BY 1
ORDER BY 1"""

# Closed hours of the last day that have readings but no forecast issued since they closed.
FORECAST_BACKLOG_SQL = """\
SELECT s.site_id, count(h.hour)::double precision AS backlog_hours
FROM (
  SELECT DISTINCT site_id FROM "${pipeline}".hourly_features
  WHERE hour >= date_trunc('hour', now()) - interval '24 hours'
) s
LEFT JOIN "${pipeline}".hourly_features h
  ON h.site_id = s.site_id
  AND h.hour >= date_trunc('hour', now()) - interval '24 hours'
  AND h.hour < date_trunc('hour', now())
  AND h.n_readings > 0
  AND NOT EXISTS (
    SELECT 1 FROM "${pipeline}".forecasts f
    WHERE f.site_id = h.site_id AND f.issued_at >= h.hour + interval '1 hour'
  )
GROUP BY s.site_id
ORDER BY s.site_id"""

LAST_FORECAST_SQL = """\
SELECT site_id, EXTRACT(EPOCH FROM now() - max(issued_at))::double precision AS age_seconds
FROM "${pipeline}".forecasts
GROUP BY site_id
ORDER BY site_id"""

# The promoted models (newest first) with their backtest metrics, numbers at the top level
# of `metrics` and one level down (e.g. {"report_split": {"test_rmse": ...}}) flattened to
# rows. A model's kind is params.model (no such key: a default model, as `train` wrote
# before there were other kinds).
MODELS_SQL = """\
SELECT m.version, coalesce(m.site_id, 'all') AS site,
       coalesce(m.params->>'model', 'default') AS kind, m.trained_on_until, m.promoted_at,
       x.metric, x.value
FROM (
  SELECT * FROM "${pipeline}".models WHERE promoted
  ORDER BY promoted_at DESC NULLS LAST, created_at DESC
  LIMIT 5
) m
CROSS JOIN LATERAL (
  SELECT k.key AS metric, (k.value #>> '{}')::double precision AS value
  FROM jsonb_each(m.metrics) k
  WHERE jsonb_typeof(k.value) = 'number'
  UNION ALL
  SELECT k.key || '.' || n.key, (n.value #>> '{}')::double precision
  FROM jsonb_each(m.metrics) k
  CROSS JOIN LATERAL jsonb_each(
    CASE WHEN jsonb_typeof(k.value) = 'object' THEN k.value ELSE '{}'::jsonb END
  ) n
  WHERE jsonb_typeof(n.value) = 'number'
) x
ORDER BY m.promoted_at DESC NULLS LAST, x.metric"""


# What the model serving the site splits on: its feature importances (each feature's share
# of the boosters' split gain, in %), largest first. The site's own promoted model, else the
# promoted model for every site (site_id NULL), as inference chooses.
FEATURE_IMPORTANCE_SQL = """\
SELECT f.feature, 100 * f.gain AS share, m.kind, m.version
FROM (
  SELECT version, coalesce(params->>'model', 'default') AS kind, feature_importances
  FROM "${pipeline}".models
  WHERE promoted AND (site_id = '$site' OR site_id IS NULL)
  ORDER BY site_id NULLS LAST
  LIMIT 1
) m
CROSS JOIN LATERAL jsonb_to_recordset(m.feature_importances)
  AS f(feature text, gain double precision)
ORDER BY f.gain DESC, f.feature
LIMIT 20"""


def sql_target(sql: str, fmt: str = "time_series", ref: str = "A") -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": POSTGRES,
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": sql,
    }


def prom_target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": PROMETHEUS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
    }


class Layout:
    """Hands out panel ids and grid positions left to right, top to bottom (24 columns)."""

    def __init__(self) -> None:
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_height = 0

    def place(self, w: int, h: int) -> tuple[int, dict[str, int]]:
        if self.x + w > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        panel_id = self.next_id
        self.next_id += 1
        return panel_id, pos


def panel(
    layout: Layout,
    kind: str,
    title: str,
    targets: list[dict[str, Any]],
    *,
    w: int = 12,
    h: int = 8,
    unit: str | None = None,
    description: str = "",
    overrides: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
) -> dict[str, Any]:
    panel_id, pos = layout.place(w, h)
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    if custom:
        defaults["custom"] = custom
    return {
        "id": panel_id,
        "type": kind,
        "title": title,
        "description": description,
        "gridPos": pos,
        "datasource": targets[0]["datasource"],
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }


def override(name: str, **props: Any) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": key, "value": value} for key, value in props.items()],
    }


def dashboard(uid: str, title: str, panels: list[dict[str, Any]], variables: list[dict[str, Any]],
              time_from: str, time_to: str, description: str) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["energy-pipeline"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": time_to},
        "timepicker": {},
        "templating": {"list": variables},
        "annotations": {"list": []},
        # includeVars: the other dashboard opens on the same pipeline.
        "links": [
            {"type": "dashboards", "tags": ["energy-pipeline"], "asDropdown": False,
             "title": "Energy pipeline", "includeVars": True, "keepTime": True}
        ],
        "panels": panels,
    }


def query_variable(name: str, label: str, query: str, **options: Any) -> dict[str, Any]:
    """A variable whose options a query on the PostgreSQL datasource lists; `options`
    overrides Grafana's settings below (multi, includeAll, refresh, sort, current)."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": POSTGRES,
        "query": query,
        "definition": query,
        "multi": False,
        "includeAll": False,
        # On dashboard load.
        "refresh": 1,
        "sort": 1,
        "current": {},
        "options": [],
        **options,
    }


def pipeline_variable() -> dict[str, Any]:
    # One schema at a time: each query reads the tables of one pipeline. `current` stays empty
    # here: the chart sets it to the first of its `pipelines` value (grafana.dashboard).
    return query_variable("pipeline", "Pipeline", PIPELINES_SQL)


def site_variable() -> dict[str, Any]:
    # Forecasts are per site: one site at a time.
    return query_variable(
        "site", "Site",
        'SELECT DISTINCT site_id FROM "${pipeline}".hourly_features ORDER BY 1',
    )


def device_variable() -> dict[str, Any]:
    query = (
        'SELECT DISTINCT device_id FROM "${pipeline}".readings '
        "WHERE site_id = '$site' AND $__timeFilter(ts) ORDER BY 1"
    )
    return query_variable(
        "device", "Device", query, multi=True, includeAll=True,
        # On time range change: the query reads the time range.
        refresh=2, sort=3,
        current={"selected": True, "text": ["All"], "value": ["$__all"]},
    )


def energy_overview() -> dict[str, Any]:
    layout = Layout()
    panels = [
        panel(
            layout, "timeseries", "Energy consumption vs forecast",
            [sql_target(CONSUMPTION_VS_FORECAST_SQL)],
            w=24, h=10, unit="kwatth",
            description="Hourly mean consumption of the site, and the latest forecast for each "
            "hour: P50 line inside the P10-P90 band. The range shows past days and the next 24 h.",
            overrides=[
                override("p90", **{"custom.fillBelowTo": "p10", "custom.lineWidth": 0,
                                   "color": {"mode": "fixed", "fixedColor": "blue"}}),
                override("p10", **{"custom.lineWidth": 0, "custom.hideFrom":
                                   {"legend": True, "tooltip": False, "viz": False},
                                   "color": {"mode": "fixed", "fixedColor": "blue"}}),
                override("p50", **{"custom.lineStyle": {"fill": "dash", "dash": [10, 10]},
                                   "color": {"mode": "fixed", "fixedColor": "blue"}}),
                override("actual", **{"color": {"mode": "fixed", "fixedColor": "orange"},
                                      "custom.lineWidth": 2}),
            ],
            custom={"fillOpacity": 20, "spanNulls": False, "lineWidth": 1},
            options={"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                     "tooltip": {"mode": "multi", "sort": "none"}},
        ),
        panel(
            layout, "barchart", "Forecast: next 7 days per day",
            [sql_target(NEXT_7_DAYS_SQL, fmt="table")],
            w=12, h=9, unit="kwatth",
            description="Latest forecast run, hourly quantiles summed per UTC day; "
            "`hours` < 24 marks a partial day.",
            options={"xField": "day", "showValue": "auto", "groupWidth": 0.7, "barWidth": 0.9,
                     "stacking": "none", "orientation": "auto",
                     "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
            overrides=[override("hours", **{"custom.hideFrom":
                                            {"legend": True, "tooltip": False, "viz": True}})],
        ),
        panel(
            layout, "timeseries", "Forecast error (rolling 24 h)",
            [sql_target(FORECAST_ERROR_SQL)],
            w=12, h=9, unit="kwatth",
            description="Day-ahead forecasts (horizons 1-24 h) against the measured hourly mean, "
            "over a trailing 24 h window: MAE (kWh), WAPE (%) and P10-P90 coverage (%).",
            overrides=[
                override("WAPE 24h", unit="percent", **{"custom.axisPlacement": "right"}),
                override("P10-P90 coverage 24h", unit="percent",
                         **{"custom.axisPlacement": "right"}),
            ],
        ),
    ]
    for sensor, title, unit in SENSORS:
        panels.append(
            panel(
                layout, "timeseries", title, [sql_target(sensor_sql(sensor))],
                w=12 if sensor != "energyconsumption" else 24, h=8, unit=unit,
                description=f"`{sensor}` readings of the selected devices, averaged per interval.",
            )
        )
    panels.append(
        panel(
            layout, "table", "Feature importance (model in service)",
            [sql_target(FEATURE_IMPORTANCE_SQL, fmt="table")],
            w=24, h=10,
            description="What the promoted model of the site splits on: each feature's share "
            "of its LightGBM boosters' split gain (top 20). Default models: the features of "
            "`energy_pipeline.forecasting.features`; seed models: `<column>_lag<k>`, the "
            "smoothed value k hours before the forecast step. Empty for a seasonal-naive "
            "fallback model.",
            overrides=[
                override("share", unit="percent", min=0, **{
                    "custom.cellOptions": {"type": "gauge", "mode": "basic"}}),
                override("version", **{"custom.width": 320}),
            ],
            options={"showHeader": True, "cellHeight": "sm"},
        )
    )
    return dashboard(
        "energy-overview", "Energy overview", panels,
        [pipeline_variable(), site_variable(), device_variable()],
        "now-3d", "now+24h",
        "Sensor readings, energy consumption against its forecast, and forecast quality.",
    )


def pipeline_health() -> dict[str, Any]:
    layout = Layout()
    stat_options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
                    "colorMode": "background", "graphMode": "none", "textMode": "value_and_name"}
    panels = [
        panel(
            layout, "stat", "Data freshness", [sql_target(FRESHNESS_SQL, fmt="table")],
            w=8, h=6, unit="s",
            description="Seconds since the newest stored reading, per site.",
            options=stat_options,
            custom=None,
        ),
        panel(
            layout, "stat", "Forecast backlog", [sql_target(FORECAST_BACKLOG_SQL, fmt="table")],
            w=8, h=6, unit="h",
            description="Closed hours of the last 24 h with readings but no forecast issued "
            "since they closed, per site.",
            options=stat_options,
        ),
        panel(
            layout, "stat", "Last forecast issued", [sql_target(LAST_FORECAST_SQL, fmt="table")],
            w=8, h=6, unit="s",
            description="Seconds since each site's latest forecast run.",
            options=stat_options,
        ),
        panel(
            layout, "timeseries", "Rows per minute", [sql_target(ROWS_PER_MINUTE_SQL)],
            w=12, h=8, unit="short",
            description="Readings stored per minute (by ingestion time).",
        ),
        panel(
            layout, "timeseries", "Ingestion delay", [sql_target(INGESTION_DELAY_SQL)],
            w=12, h=8, unit="s",
            description="ingested_at - ts: from the sensor's timestamp to the database commit. "
            "Backfilled or replayed data shows as large delays.",
        ),
        panel(
            layout, "table", "Promoted models and backtest metrics",
            [sql_target(MODELS_SQL, fmt="table")],
            w=24, h=8,
            description="The model versions in service (newest first), their kind (default "
            "or seed, FORECAST_MODEL), the metrics of their backtests and the original "
            "report's 80/20 split (report_split.*).",
        ),
        # Worker metrics: only when the chart provisions a Prometheus datasource (the chart
        # drops panels on energy-prometheus otherwise).
        panel(
            layout, "stat", "Dead letters (time range)",
            [prom_target("sum(increase(energy_rejected_total[$__range]))", "dead letters")],
            w=6, h=8, unit="short",
            description="Inputs the bridge and ingest rejected to the dead-letter topic.",
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                     "colorMode": "value", "graphMode": "none"},
        ),
        panel(
            layout, "timeseries", "Dead letters by reason",
            [prom_target(
                "sum by (stage, reason) (increase(energy_rejected_total[$__rate_interval]))",
                "{{stage}} {{reason}}",
            )],
            w=18, h=8, unit="short",
        ),
        panel(
            layout, "timeseries", "Consumer lag (ingest)",
            [prom_target("sum by (topic) (energy_consumer_lag)", "{{topic}}")],
            w=12, h=8, unit="short",
            description="Messages in Kafka not yet consumed by the ingest group.",
        ),
        panel(
            layout, "timeseries", "Throughput",
            [
                prom_target(
                    "sum by (stage) (rate(energy_messages_received_total[$__rate_interval]))",
                    "received ({{stage}})", "A",
                ),
                prom_target("sum(rate(energy_readings_written_total[$__rate_interval]))",
                            "written", "B"),
            ],
            w=12, h=8, unit="reqps",
        ),
    ]
    return dashboard(
        "energy-pipeline-health", "Pipeline health", panels, [pipeline_variable()],
        "now-6h", "now",
        "Is data flowing and are forecasts current: freshness, throughput, delay, backlog, "
        "model in service; worker metrics when Prometheus is configured.",
    )


DASHBOARDS = {
    "energy-overview.json": energy_overview,
    "pipeline-health.json": pipeline_health,
}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    out = Path(__file__).resolve().parent.parent / "dashboards"
    out.mkdir(exist_ok=True)
    for name, text in render().items():
        (out / name).write_text(text)
        print(f"wrote {out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
