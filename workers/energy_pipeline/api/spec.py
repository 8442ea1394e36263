"""The API's routes, parameters and result columns, and the OpenAPI 3.1 document built from them.

One table serves three masters: the app registers exactly these routes, the request parser
accepts exactly these parameters (anything else is a 400), and the OpenAPI document
describes exactly these. So the document cannot drift from what the server does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from energy_pipeline.api.settings import PageSizes
from energy_pipeline.core.contracts import SENSOR_NAMES, SENSORS

API_PREFIX = "/api/v1"
# The same id rule the bridge applies to MQTT topics (energy_pipeline.core.validation).
ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
RELATIVE_TIME_PATTERN = r"^now([+-][0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))?$"
FORMATS = ("json", "csv")
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
PROBLEM_TYPE = "application/problem+json"
# The security scheme of the data routes in the OpenAPI document.
BEARER = "bearerToken"

DATE_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}


def nullable(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


@dataclass(frozen=True)
class Param:
    name: str
    location: str  # "path" or "query"
    description: str
    schema: Mapping[str, Any]
    example: str
    required: bool = False
    # A list: comma-separated (as documented) or the parameter repeated (also accepted).
    is_list: bool = False

    def openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "in": self.location,
            "required": self.required or self.location == "path",
            "description": self.description,
            "schema": dict(self.schema),
            "example": self.example,
        }
        if self.is_list:
            out.update(style="form", explode=False)
        return out


@dataclass(frozen=True)
class Column:
    name: str
    schema: Mapping[str, Any]
    description: str


@dataclass(frozen=True)
class Table:
    """The rows a data route returns: same columns in JSON objects and CSV."""

    schema_name: str
    columns: tuple[Column, ...]
    # Fields of the JSON envelope; CSV has no envelope, so those in `csv_context` become
    # leading CSV columns instead (a CSV file must say which site it is about).
    envelope: tuple[Column, ...] = ()
    csv_context: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def csv_header(self) -> tuple[str, ...]:
        return self.csv_context + self.names


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    summary: str
    description: str
    params: tuple[Param, ...] = ()
    table: Table | None = None
    tag: str = "data"
    # Non-data routes spell out their responses; data routes get the standard set.
    responses: Mapping[str, Any] = field(default_factory=dict)

    @property
    def query_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.location == "query")

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)


# ---- parameters -------------------------------------------------------------------------

SITE = Param(
    "site", "path", "Site id, as in the MQTT topic `<topic root>/<site>/...`.",
    {"type": "string", "pattern": ID_PATTERN}, "site-0", required=True,
)
TIME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "anyOf": [
        {"format": "date-time"},
        {"format": "date"},
        {"pattern": RELATIVE_TIME_PATTERN},
    ],
}
_TIME_HELP = (
    "ISO 8601 (UTC when no offset is given), or relative to the request time: `now`, "
    "`now-7d`, `now+1h` (units ms, s, m, h, d, w)."
)
FORMAT = Param(
    "format", "query",
    "Response format; overrides the `Accept` header (`application/json` or `text/csv`).",
    {"type": "string", "enum": list(FORMATS)}, "csv",
)
CURSOR = Param(
    "cursor", "query",
    "Opaque position from a previous page's `next` link; clients follow `next` rather than "
    "build cursors.",
    {"type": "string", "minLength": 1, "maxLength": 512}, "WyJzIiwic2l0ZS0wIl0",
)


def limit_param(pages: PageSizes) -> Param:
    return Param(
        "limit", "query", f"Rows per page (default {pages.default}).",
        {"type": "integer", "minimum": 1, "maximum": pages.maximum, "default": pages.default},
        "100",
    )


def time_param(name: str, what: str) -> Param:
    return Param(name, "query", f"{what} {_TIME_HELP}", TIME_SCHEMA,
                 "now-1d" if name == "from" else "now")


SENSOR = Param(
    "sensor", "query",
    "Sensor types, comma-separated (default: all). Repeating the parameter also works.",
    {"type": "array", "items": {"type": "string", "enum": list(SENSOR_NAMES)}, "minItems": 1},
    "temperature,energyconsumption", is_list=True,
)
DEVICE = Param(
    "device", "query", "Device ids, comma-separated (default: all devices of the site).",
    {"type": "array", "items": {"type": "string", "pattern": ID_PATTERN}, "minItems": 1},
    "0,1", is_list=True,
)
ISSUED = Param(
    "issued", "query",
    "Which forecast run: `latest` (default), or a time, meaning the latest run issued at "
    f"or before it (what was known then). {_TIME_HELP}",
    {"type": "string", "anyOf": [{"const": "latest"}, *TIME_SCHEMA["anyOf"]]}, "latest",
)
PROMOTED = Param(
    "promoted", "query",
    "`true`: only the version in service (at most one per site); `false`: only the others. "
    "Default: every version.",
    {"type": "string", "enum": ["true", "false"]}, "true",
)

# ---- result columns ----------------------------------------------------------------------

SITE_TABLE = Table("Site", (
    Column("site", {"type": "string"}, "site id"),
    Column("first_hour", DATE_TIME, "start of the first hour with readings"),
    Column("last_hour", DATE_TIME, "start of the latest hour with readings"),
    Column("last_forecast_issued_at", nullable(DATE_TIME),
           "when the latest forecast run was issued (null: none yet)"),
))

READING_TABLE = Table(
    "Reading",
    (
        Column("sensor", {"type": "string", "enum": list(SENSOR_NAMES)}, "sensor type"),
        Column("device", {"type": "string"}, "device id"),
        Column("ts", DATE_TIME, "measurement time"),
        Column("value", {"type": "number"}, "measured value, in the sensor type's unit"),
    ),
    envelope=(
        Column("site", {"type": "string"}, "site id"),
        Column("from", DATE_TIME, "start of the window (inclusive), resolved"),
        Column("to", DATE_TIME, "end of the window (exclusive), resolved"),
        Column("sensors", {"type": "array", "items": {"type": "string"}}, "sensor types asked"),
        Column("units", {"type": "object", "additionalProperties": {"type": "string"}},
               "unit of each sensor type asked"),
    ),
    csv_context=("site",),
)

HOURLY_TABLE = Table(
    "HourlyFeatures",
    (
        Column("hour", DATE_TIME, "start of the hour (UTC)"),
        *(Column(f"avg_{s}", nullable({"type": "number"}),
                 f"mean {s} over the hour's readings, {SENSORS[s].unit} (null: none)")
          for s in SENSOR_NAMES),
        *(Column(f"n_{s}", {"type": "integer"}, f"{s} readings in the hour")
          for s in SENSOR_NAMES),
        Column("n_readings", {"type": "integer"}, "readings in the hour, all sensor types"),
    ),
    envelope=(
        Column("site", {"type": "string"}, "site id"),
        Column("from", DATE_TIME, "start of the window, resolved (hours overlapping it count)"),
        Column("to", DATE_TIME, "end of the window (exclusive), resolved"),
    ),
    csv_context=("site",),
)

FORECAST_TABLE = Table(
    "Forecast",
    (
        Column("target_time", DATE_TIME, "start of the forecast hour"),
        Column("horizon", {"type": "integer"}, "hours ahead of the run's origin (1..168)"),
        Column("model_version", {"type": "string"}, "model registry version that made it"),
        Column("p10", {"type": "number"}, "10th percentile of the hourly mean consumption, kWh"),
        Column("p50", {"type": "number"}, "median, kWh"),
        Column("p90", {"type": "number"}, "90th percentile, kWh"),
        Column("actual", nullable({"type": "number"}),
               "measured hourly mean energyconsumption, kWh (null: not yet measured)"),
    ),
    envelope=(
        Column("site", {"type": "string"}, "site id"),
        Column("issued_at", nullable(DATE_TIME), "when the run was issued (null: no run)"),
    ),
    csv_context=("site", "issued_at"),
)

MODEL_TABLE = Table(
    "Model",
    (
        Column("version", {"type": "string"}, "model registry version"),
        Column("kind", {"type": "string"},
               "`default` (LightGBM quantile boosters) or `seed` (the original report's "
               "recipe, P10 = P50 = P90)"),
        Column("created_at", DATE_TIME, "when `train` stored it"),
        Column("trained_on_until", nullable(DATE_TIME), "end of the hours it was trained on"),
        Column("promoted", {"type": "boolean"}, "in service: inference serves this version"),
        Column("promoted_at", nullable(DATE_TIME), "when it was promoted (null: never)"),
        Column("metrics", {"type": "object"},
               "its backtest's scores (mae, rmse, mase, coverage_p10_p90, ...; null: not "
               "computable) and `report_split`, the original report's 80/20 evaluation "
               "(train_rmse, test_rmse, n_train, n_test; for seed models also the report's "
               "own figures against the smoothed target, *_smoothed); JSON text in CSV"),
        Column("feature_importances", {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"feature": {"type": "string"}, "gain": {"type": "number"}},
                "required": ["feature", "gain"],
                "additionalProperties": False,
            },
        }, "what its LightGBM boosters split on, largest first: each feature's share of the "
           "split gain (summing to 1; empty for a model without trees, or stored before "
           "importances were recorded); JSON text in CSV"),
    ),
    envelope=(Column("site", {"type": "string"}, "site id"),),
    csv_context=("site",),
)

_JSON_OBJECT: dict[str, Any] = {"type": "object"}


def routes(pages: PageSizes) -> tuple[Route, ...]:
    limit = limit_param(pages)
    window = "Default window: the last {} before `to`; `to` defaults to now."
    return (
        Route(
            "listSites", f"{API_PREFIX}/sites", "Sites that have readings",
            "Ordered by site id; each with the span of its hourly data and latest forecast run.",
            (limit, CURSOR, FORMAT), SITE_TABLE,
        ),
        Route(
            "getReadings", f"{API_PREFIX}/sites/{{site}}/readings", "Raw readings of a site",
            "Readings with `from` <= ts < `to`, ordered by sensor, device, ts (the primary key, "
            "so every page is an index range scan). " + window.format("24 hours"),
            (SITE, SENSOR, DEVICE, time_param("from", "Window start (inclusive)."),
             time_param("to", "Window end (exclusive)."), limit, CURSOR, FORMAT),
            READING_TABLE,
        ),
        Route(
            "getHourly", f"{API_PREFIX}/sites/{{site}}/hourly", "Hourly features of a site",
            "Per hour: mean and count of each sensor type, as ingest keeps them. Hours that "
            "overlap [`from`, `to`), in time order. " + window.format("7 days"),
            (SITE, time_param("from", "Window start."), time_param("to", "Window end (exclusive)."),
             limit, CURSOR, FORMAT),
            HOURLY_TABLE,
        ),
        Route(
            "getForecasts", f"{API_PREFIX}/sites/{{site}}/forecasts", "A forecast run of a site",
            "P10/P50/P90 of hourly consumption for each target hour of one run, in target time "
            "order, with the measured value where it exists. `from`/`to` filter target times.",
            (SITE, ISSUED, time_param("from", "Earliest target time (inclusive)."),
             time_param("to", "Target times before this."), limit, CURSOR, FORMAT),
            FORECAST_TABLE,
        ),
        Route(
            "getModels", f"{API_PREFIX}/sites/{{site}}/models", "Forecasting models of a site",
            "The site's model versions in the registry, newest first: kind, training span, "
            "whether it is in service, backtest metrics, the original report's 80/20 split "
            "and feature importances (never the model itself).",
            (SITE, PROMOTED, limit, CURSOR, FORMAT),
            MODEL_TABLE,
        ),
        Route(
            "getOpenApi", f"{API_PREFIX}/openapi.json", "This document", "OpenAPI 3.1.",
            tag="meta",
            responses={"200": {"description": "the OpenAPI document",
                               "content": {JSON_TYPE: {"schema": _JSON_OBJECT}}}},
        ),
        Route(
            "healthz", "/healthz", "Liveness", "The process serves requests.", tag="meta",
            responses={"200": {"description": "alive",
                               "content": {JSON_TYPE: {"schema": _JSON_OBJECT}}}},
        ),
        Route(
            "readyz", "/readyz", "Readiness",
            "The database answers and its schema is migrated far enough for this version.",
            tag="meta",
            responses={
                "200": {"description": "ready", "content": {JSON_TYPE: {"schema": {
                    "$ref": "#/components/schemas/Readiness"}}}},
                "503": {"description": "not ready (detail says why)", "content": {JSON_TYPE: {
                    "schema": {"$ref": "#/components/schemas/Readiness"}}}},
            },
        ),
        Route(
            "metrics", "/metrics", "Prometheus metrics",
            "Requests by route and status, latency histogram, rows returned, database pool.",
            tag="meta",
            responses={"200": {"description": "Prometheus text format",
                               "content": {"text/plain": {"schema": {"type": "string"}}}}},
        ),
    )


# ---- OpenAPI ---------------------------------------------------------------------------------


def _object(columns: tuple[Column, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {c.name: {**c.schema, "description": c.description} for c in columns},
        "required": [c.name for c in columns],
        "additionalProperties": False,
    }


def page_schema_name(table: Table) -> str:
    return f"{table.schema_name}Page"


def _components(tables: list[Table]) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details; `errors` names each bad parameter.",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "parameter": {"type": "string"},
                        "in": {"type": "string", "enum": ["path", "query", "header"]},
                        "message": {"type": "string"},
                    },
                    "required": ["parameter", "in", "message"],
                }},
            },
            "required": ["type", "title", "status", "detail"],
        },
        "Readiness": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["ready", "not ready"]},
                "detail": {"type": "string"},
                "schema_version": {"type": ["integer", "null"]},
            },
            "required": ["status", "detail"],
        },
    }
    for table in tables:
        schemas[table.schema_name] = _object(table.columns)
        page = _object(table.envelope)
        page["properties"]["data"] = {
            "type": "array", "items": {"$ref": f"#/components/schemas/{table.schema_name}"},
        }
        page["properties"]["next"] = {
            "type": ["string", "null"],
            "description": "relative URL of the next page; null on the last page",
        }
        page["required"] += ["data", "next"]
        schemas[page_schema_name(table)] = page
    return {"schemas": schemas, "securitySchemes": {BEARER: {
        "type": "http", "scheme": "bearer",
        "description": "A client's token from the API's tokens file (API_TOKENS_FILE); "
                       "`energy-pipeline api-token` makes one.",
    }}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _data_responses(route: Route) -> dict[str, Any]:
    assert route.table is not None
    header = ",".join(route.table.csv_header)
    responses: dict[str, Any] = {
        "200": {
            "description": "one page of rows",
            "headers": {"Link": {
                "description": 'RFC 8288 `<next page>; rel="next"`, absent on the last page',
                "schema": {"type": "string"},
            }},
            "content": {
                JSON_TYPE: {"schema": {
                    "$ref": f"#/components/schemas/{page_schema_name(route.table)}"}},
                CSV_TYPE: {"schema": {"type": "string"}, "example": header + "\r\n"},
            },
        },
        "400": _problem("a parameter is invalid; `errors` names each one"),
        "401": {**_problem("no `Authorization: Bearer <token>` header, or a token of no client"),
                "headers": {"WWW-Authenticate": {"description": "`Bearer realm=...`",
                                                 "schema": {"type": "string"}}}},
        "429": {**_problem("the client exceeded its request rate"),
                "headers": {"Retry-After": {"description": "seconds until it may ask again",
                                            "schema": {"type": "integer"}}}},
        "406": _problem("the Accept header allows neither JSON nor CSV"),
        "503": _problem("the database is unreachable or the query took too long"),
    }
    if any(p.location == "path" for p in route.params):
        responses["404"] = _problem("no such site")
    return dict(sorted(responses.items()))


def openapi_document(pages: PageSizes, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    tables = []
    for route in routes(pages):
        operation: dict[str, Any] = {
            "operationId": route.name,
            "summary": route.summary,
            "description": route.description,
            "tags": [route.tag],
            "parameters": [p.openapi() for p in route.params],
        }
        if route.table is not None:
            tables.append(route.table)
            operation["responses"] = _data_responses(route)
            operation["security"] = [{BEARER: []}]
        else:
            operation["responses"] = dict(route.responses)
        paths[route.path] = {"get": operation}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "energy-pipeline read API",
            "version": version,
            "description": (
                "Read-only access to the readings, hourly features, forecasts and forecasting "
                "models the pipeline stores. JSON by default, CSV with `Accept: text/csv` or "
                "`?format=csv`. Lists are paginated: follow `next` (in the body and the "
                "`Link` header) until it is null. Errors are RFC 9457 problem details naming "
                "the bad parameter. Data routes need `Authorization: Bearer <token>` (401 "
                "without) and are rate-limited per client (429 with Retry-After)."
            ),
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": [{"name": "data"}, {"name": "meta"}],
        "paths": paths,
        "components": _components(tables),
    }
