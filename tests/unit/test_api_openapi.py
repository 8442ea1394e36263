"""The OpenAPI document and the app agree: every route documented, every documented parameter
accepted, nothing else accepted, and the document is well-formed OpenAPI 3.1."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from energy_pipeline.api.app import ApiState, create_app, create_ops_app
from energy_pipeline.api.params import QueryReader, query_from_mapping
from energy_pipeline.api.pool import ConnectionPool
from energy_pipeline.api.settings import ApiSettings
from energy_pipeline.api.spec import openapi_document, page_schema_name, routes

pytestmark = pytest.mark.unit

SETTINGS = ApiSettings(database_url="postgresql://nobody@127.0.0.1:1/none",
                       api_default_page_size=50, api_max_page_size=700,
                       api_tokens_file="/nowhere/tokens")


@pytest.fixture
def state() -> Iterator[ApiState]:
    pool = ConnectionPool(SETTINGS.database_url, 1, 1000)  # connects lazily: never, here
    try:
        yield ApiState(SETTINGS, pool)
    finally:
        pool.close()


def document(state: ApiState) -> dict[str, Any]:
    return json.loads(state.openapi)


def served(app: Any) -> set[tuple[str, str]]:
    return {(r.method, r.resource.canonical) for r in app.router.routes()}


def test_every_route_is_documented_and_every_documented_path_is_served(state: ApiState) -> None:
    doc = document(state)
    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert served(create_app(state)) == documented
    assert served(create_ops_app(state)) == {("GET", "/healthz"), ("GET", "/readyz"),
                                             ("GET", "/metrics")}
    assert {p for _, p in documented} >= {
        "/api/v1/sites", "/api/v1/sites/{site}/readings", "/api/v1/sites/{site}/hourly",
        "/api/v1/sites/{site}/forecasts", "/api/v1/sites/{site}/models", "/api/v1/openapi.json",
        "/healthz", "/readyz", "/metrics"}


def test_every_documented_query_parameter_is_accepted_and_nothing_else(state: ApiState) -> None:
    doc = document(state)
    for route in routes(SETTINGS.page_sizes):
        operation = doc["paths"][route.path]["get"]
        documented = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
        assert documented == {p.name for p in route.query_params}
        for name in documented:
            reader = QueryReader(query_from_mapping({name: ["x"]}), route.query_params)
            assert not [e for e in reader.errors if "unknown parameter" in e.message], name
        reader = QueryReader(query_from_mapping({"nope": ["1"]}), route.query_params)
        assert [e.parameter for e in reader.errors] == ["nope"]


def test_path_templates_and_path_parameters_agree(state: ApiState) -> None:
    for path, item in document(state)["paths"].items():
        in_template = set(re.findall(r"\{(\w+)\}", path))
        declared = {p["name"] for p in item["get"]["parameters"] if p["in"] == "path"}
        assert in_template == declared, path
        assert all(p["required"] for p in item["get"]["parameters"] if p["in"] == "path")


def test_document_is_well_formed_openapi_3_1(state: ApiState) -> None:
    doc = document(state)
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] and doc["info"]["version"]
    ids = [item["get"]["operationId"] for item in doc["paths"].values()]
    assert len(ids) == len(set(ids))
    text = json.dumps(doc)
    for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node: Any = doc
        for part in ref.split("/"):
            node = node[part]  # KeyError: a dangling reference
    for path, item in doc["paths"].items():
        operation = item["get"]
        assert operation["responses"] and all(
            "description" in r for r in operation["responses"].values()), path
        for param in operation["parameters"]:
            assert {"name", "in", "schema", "description"} <= set(param), (path, param)
            assert param["in"] in {"query", "path"}


def test_data_routes_document_json_csv_and_errors(state: ApiState) -> None:
    doc = document(state)
    for route in routes(SETTINGS.page_sizes):
        if route.table is None:
            continue
        responses = doc["paths"][route.path]["get"]["responses"]
        assert set(responses["200"]["content"]) == {"application/json", "text/csv"}
        assert "Link" in responses["200"]["headers"]
        expected = {"200", "400", "401", "406", "429", "503"} | (
            {"404"} if "{site}" in route.path else set())
        assert set(responses) == expected
        # No token, no data: every data route names the bearer scheme and its refusals.
        assert doc["paths"][route.path]["get"]["security"] == [{"bearerToken": []}]
        assert set(responses["401"]["headers"]) == {"WWW-Authenticate"}
        assert set(responses["429"]["headers"]) == {"Retry-After"}
        for status in expected - {"200"}:
            assert set(responses[status]["content"]) == {"application/problem+json"}
        row = doc["components"]["schemas"][route.table.schema_name]
        assert list(row["properties"]) == list(route.table.names)
        assert row["additionalProperties"] is False
        page = doc["components"]["schemas"][page_schema_name(route.table)]
        assert {"data", "next"} <= set(page["required"])
        csv_header = responses["200"]["content"]["text/csv"]["example"].strip()
        assert csv_header == ",".join(route.table.csv_header)
        assert set(route.table.csv_context) <= {c.name for c in route.table.envelope}


def test_limit_bounds_come_from_the_settings() -> None:
    doc = openapi_document(SETTINGS.page_sizes, "1")
    limits = [p["schema"] for item in doc["paths"].values() for p in item["get"]["parameters"]
              if p["name"] == "limit"]
    assert len(limits) == 5
    assert all(s == {"type": "integer", "minimum": 1, "maximum": 700, "default": 50}
               for s in limits)


def test_list_parameters_are_documented_as_comma_separated(state: ApiState) -> None:
    params = document(state)["paths"]["/api/v1/sites/{site}/readings"]["get"]["parameters"]
    sensor = next(p for p in params if p["name"] == "sensor")
    assert (sensor["style"], sensor["explode"], sensor["schema"]["type"]) == ("form", False,
                                                                             "array")


def test_only_data_routes_need_the_bearer_token(state: ApiState) -> None:
    doc = document(state)
    assert doc["components"]["securitySchemes"]["bearerToken"]["type"] == "http"
    assert doc["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"
    secured = {path for path, item in doc["paths"].items() if "security" in item["get"]}
    assert secured == {r.path for r in routes(SETTINGS.page_sizes) if r.table is not None}
    assert {"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"}.isdisjoint(secured)


def test_models_route_documents_kind_metrics_and_importances(state: ApiState) -> None:
    doc = document(state)
    operation = doc["paths"]["/api/v1/sites/{site}/models"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {
        "site", "promoted", "limit", "cursor", "format"}
    model = doc["components"]["schemas"]["Model"]["properties"]
    assert model["metrics"]["type"] == "object"
    assert "report_split" in model["metrics"]["description"]
    items = model["feature_importances"]["items"]
    assert model["feature_importances"]["type"] == "array"
    assert items["required"] == ["feature", "gain"] and items["additionalProperties"] is False
    assert "artifact" not in model  # the trees stay in the registry
