"""The Grafana dashboards and alert rules of charts/grafana, checked as files.

Structure that Grafana 12 needs to load a provisioned dashboard (uids, ids, grid, panel
types, targets), that the committed JSON is what the generator writes, and that every
Prometheus query names a metric the workers really export. The SQL itself runs against a
real PostgreSQL in tests/integration/test_dashboards_sql.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

pytestmark = pytest.mark.unit

CHART = Path(__file__).resolve().parents[2] / "charts" / "grafana"
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
POSTGRES_UID = "energy-postgres"
PROMETHEUS_UID = "energy-prometheus"
DATASOURCE_TYPES = {POSTGRES_UID: "grafana-postgresql-datasource", PROMETHEUS_UID: "prometheus"}
# Panel types built into Grafana 12 (no plugin to install).
CORE_PANELS = {"timeseries", "barchart", "stat", "table", "text", "gauge", "row"}
SENSORS = ("temperature", "humidity", "squarefootage", "renewableenergy", "energyconsumption")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return dashboard["panels"]


def generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "generate_dashboards", CHART / "src" / "generate_dashboards.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    rendered = generator().render()
    assert sorted(rendered) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text() == rendered[path.name], (
            f"{path.name} is stale: run python charts/grafana/src/generate_dashboards.py"
        )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure_loads_in_grafana_12(path: Path) -> None:
    dashboard = load(path)
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 39
    assert "id" not in dashboard or dashboard["id"] is None, "a provisioned dashboard has no id"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        assert panel["type"] in CORE_PANELS, panel["type"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0
        uid = panel["datasource"]["uid"]
        assert panel["datasource"]["type"] == DATASOURCE_TYPES[uid]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            if uid == POSTGRES_UID:
                assert target["rawQuery"] is True and target["editorMode"] == "code"
                assert target["format"] in {"time_series", "table"}
                assert target["rawSql"].strip()
            else:
                assert target["expr"].strip()
    # No two panels overlap on the grid.
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        g = panel["gridPos"]
        xs, ys = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
        own = {(x, y) for x in xs for y in ys}
        assert not cells & own, f"panel {panel['title']!r} overlaps another"
        cells |= own


def test_energy_overview_has_what_the_issue_asks_for() -> None:
    dashboard = load(CHART / "dashboards" / "energy-overview.json")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"pipeline", "site", "device"}
    assert variables["device"]["multi"] and variables["device"]["includeAll"]
    # One pipeline (PostgreSQL schema) at a time; its value qualifies every table.
    assert not (variables["pipeline"]["multi"] or variables["pipeline"]["includeAll"])
    assert dashboard["templating"]["list"][0]["name"] == "pipeline"  # the others depend on it
    sqls = {p["title"]: p["targets"][0]["rawSql"] for p in panels(dashboard)}
    for sensor in SENSORS:
        matching = [t for t, sql in sqls.items() if f"sensor = '{sensor}'" in sql]
        assert len(matching) == 1, f"one panel per sensor type, {sensor}: {matching}"
        assert "device_id IN ($device)" in sqls[matching[0]]
        assert "site_id = '$site'" in sqls[matching[0]]
    by_title = {p["title"]: p for p in panels(dashboard)}
    consumption = by_title["Energy consumption vs forecast"]
    band = {o["matcher"]["options"]: o for o in consumption["fieldConfig"]["overrides"]}
    fill = {p["id"]: p["value"] for p in band["p90"]["properties"]}
    assert fill["custom.fillBelowTo"] == "p10", "the P10-P90 band"
    # Past days and the next 24 h.
    assert dashboard["time"] == {"from": "now-3d", "to": "now+24h"}
    assert "Forecast: next 7 days per day" in sqls
    assert "Forecast error (rolling 24 h)" in sqls


def test_pipeline_health_has_what_the_issue_asks_for() -> None:
    dashboard = load(CHART / "dashboards" / "pipeline-health.json")
    titles = {p["title"] for p in panels(dashboard)}
    assert {
        "Data freshness", "Rows per minute", "Ingestion delay", "Forecast backlog",
        "Promoted models and backtest metrics", "Dead letters (time range)",
    } <= titles


def exported_metric_names() -> set[str]:
    import energy_pipeline.core.metrics  # noqa: F401  (registers the workers' metrics)

    # Families, with the sample suffixes Prometheus sees (a labelled metric that has not
    # been observed yet has no samples to list).
    suffixes = ("", "_total", "_bucket", "_count", "_sum", "_created")
    return {family.name + suffix for family in REGISTRY.collect() for suffix in suffixes}


def test_prometheus_queries_name_metrics_the_workers_export() -> None:
    known = exported_metric_names()
    found = 0
    for path in DASHBOARDS:
        for panel in panels(load(path)):
            for target in panel["targets"]:
                if "expr" not in target:
                    continue
                for name in re.findall(r"\benergy_[a-z_]+\b", target["expr"]):
                    assert name in known, f"{path.name} / {panel['title']}: unknown metric {name}"
                    found += 1
    assert found >= 4


def test_alert_rules_file_is_grafana_provisioning_with_every_issue_rule() -> None:
    rules_file = yaml.safe_load((CHART / "alerting" / "rules.yaml").read_text())
    assert rules_file["apiVersion"] == 1
    rules = [r for g in rules_file["groups"] for r in g["rules"]]
    assert {r["uid"] for r in rules} == {
        "energy-stale-data", "energy-forecast-consumption-high", "energy-forecast-error-high",
        "energy-readings-lost",
    }
    for rule in rules:
        refs = {d["refId"]: d for d in rule["data"]}
        assert rule["condition"] in refs
        sql_steps = [d for d in rule["data"] if d["datasourceUid"] == POSTGRES_UID]
        assert len(sql_steps) == 1 and sql_steps[0]["model"]["format"] == "table"
        for step in rule["data"]:
            assert step["datasourceUid"] in {POSTGRES_UID, "__expr__"}
            if step["datasourceUid"] == "__expr__":
                assert step["model"]["expression"] in refs
        threshold = refs[rule["condition"]]["model"]
        assert threshold["type"] == "threshold"
        # The configurable level is a chart placeholder, filled from values.yaml.
        level = threshold["conditions"][0]["evaluator"]["params"][0]
        assert re.fullmatch(r"__[A-Z_]+__", str(level))
