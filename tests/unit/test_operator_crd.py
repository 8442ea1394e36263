"""The EnergyPipeline CRD: documented, defaulted, and bound to the same environment variable
names the workers read (tests/unit/test_generated_files.py keeps the generated file in step)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from energy_operator import crd
from energy_pipeline.dataplane.admin_commands import TopicSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "manifests" / "crd" / f"{crd.CRD_NAME}.yaml"
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))


def test_names_group_and_scope() -> None:
    manifest = yaml.safe_load(CRD_FILE.read_text())
    spec = manifest["spec"]
    assert manifest["metadata"]["name"] == "energypipelines.energy.pipeline.dev"
    assert spec["group"] == "energy.pipeline.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "EnergyPipeline"
    assert spec["names"]["plural"] == "energypipelines"
    assert "ep" in spec["names"]["shortNames"]
    assert spec["names"]["categories"] == ["all"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns_read_status() -> None:
    columns = {c["name"]: c for c in crd.crd_manifest()["spec"]["versions"][0][
        "additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Ingestion"]["jsonPath"] == ".status.ingestion"
    assert columns["Inference"]["jsonPath"] == ".status.inference"
    assert columns["Last forecast"]["type"] == "date"
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    # The default `kubectl get` shows exactly the columns the issue asks for.
    default = [c["name"] for c in columns.values() if not c.get("priority")]
    assert default == ["Ready", "Ingestion", "Inference", "Last forecast", "Age"]


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, child in node.get("properties", {}).items():
        out += _walk(child, f"{path}.{name}")
    if "items" in node:
        out += _walk(node["items"], f"{path}[]")
    return out


def test_every_field_is_documented_for_kubectl_explain() -> None:
    schema = crd.crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    undocumented = [
        path for path, node in _walk(schema, "")
        if path not in {".metadata", ".apiVersion", ".kind"} and not node.get("description")
        and not path.endswith("[]")
    ]
    assert not undocumented


def test_schema_is_structural_without_internal_markers() -> None:
    text = CRD_FILE.read_text()
    assert "x-energy-env" not in text
    schema = crd.crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema, ""):
        if path in {".metadata"}:
            continue
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path


def test_spec_sections_and_required_fields() -> None:
    spec = crd.spec_schema()
    assert set(spec["required"]) == {"mqtt", "kafka", "database"}
    assert set(spec["properties"]) >= {
        "mqtt", "kafka", "database", "ingestion", "inference", "forecast", "paused", "image",
    }
    assert spec["properties"]["image"]["default"] == crd.DEFAULT_IMAGE
    kafka = spec["properties"]["kafka"]["properties"]
    assert kafka["partitions"]["default"] == 4 and kafka["partitions"]["minimum"] == 1
    assert kafka["replicationFactor"]["default"] == 2
    assert kafka["deleteTopicsOnDelete"]["default"] is False
    horizons = spec["properties"]["forecast"]["properties"]["horizons"]
    assert (horizons["minimum"], horizons["maximum"]) == (1, 168)


def test_cel_rules_name_the_field_they_check() -> None:
    spec = crd.spec_schema()
    rules = {r["fieldPath"]: r for r in spec["x-kubernetes-validations"]}
    replicas_rule = rules[".ingestion.replicas"]["rule"]
    assert "self.ingestion.replicas <= self.kafka.partitions" in replicas_rule
    kafka_rules = {r["fieldPath"] for r in spec["properties"]["kafka"]["x-kubernetes-validations"]}
    assert kafka_rules == {".replicationFactor", ".minInSyncReplicas", ".securityProtocol"}


def test_api_section_defaults_off_with_bounds_and_a_page_size_rule() -> None:
    api = crd.spec_schema()["properties"]["api"]
    props = api["properties"]
    assert api["default"] == {} and props["enabled"]["default"] is False
    assert props["replicas"]["default"] == 1
    assert (props["replicas"]["minimum"], props["replicas"]["maximum"]) == (0, 100)
    assert "databaseUrlSecret" not in crd.with_defaults(
        {"mqtt": {"host": "h"}, "kafka": {"bootstrapServers": "b"},
         "database": {"urlSecret": {"name": "db"}}})["api"]
    (page_rule,) = api["x-kubernetes-validations"]
    assert page_rule["fieldPath"] == ".defaultPageSize"
    assert page_rule["rule"].endswith("self.defaultPageSize <= self.maxPageSize")
    by_env = {s.env: s for s in crd.settings()}
    for env, field in (("API_DEFAULT_PAGE_SIZE", "defaultPageSize"),
                       ("API_MAX_PAGE_SIZE", "maxPageSize"),
                       ("API_STATEMENT_TIMEOUT_MS", "statementTimeoutMs"),
                       ("API_DB_POOL_SIZE", "dbPoolSize")):
        assert by_env[env].path == ("api", field) and by_env[env].workers == ("api",)


def test_api_defaults_agree_with_the_api_settings() -> None:
    from energy_pipeline.api.settings import ApiSettings

    fields = {f.metadata["env"]: f.default for f in dataclasses.fields(ApiSettings)
              if "env" in f.metadata}
    for setting in crd.settings():
        if setting.workers == ("api",):
            assert setting.default == fields[setting.env], setting.env


def test_mqtt_tls_ca_secret_has_the_shape_of_kafkas() -> None:
    props = crd.spec_schema()["properties"]
    tls = props["mqtt"]["properties"]["tls"]
    ca = tls["properties"]["caSecret"]
    assert ca["required"] == ["name"] and ca["properties"]["key"]["default"] == "ca.crt"
    assert ca["properties"] == props["kafka"]["properties"]["tls"]["properties"]["caSecret"][
        "properties"]
    assert crd.MQTT_CA_DIR in ca["description"] and "MQTT_CA_FILE" in ca["description"]
    assert (crd.MQTT_CA_DIR, crd.MQTT_CA_FILE) == (
        "/etc/energy-pipeline/mqtt-ca", "/etc/energy-pipeline/mqtt-ca/ca.crt")
    # MQTT_TLS only when asked for: no default, or a CA alongside would read MQTT_TLS=false.
    by_env = {s.env: s for s in crd.settings()}
    assert by_env["MQTT_TLS"].path == ("mqtt", "tls", "enabled")
    assert by_env["MQTT_TLS"].workers == ("bridge",) and by_env["MQTT_TLS"].default is None
    (enabled_rule,) = tls["x-kubernetes-validations"]
    assert enabled_rule["fieldPath"] == ".enabled"
    spec = crd.with_defaults({"mqtt": {"host": "h", "tls": {"caSecret": {"name": "c"}}},
                              "kafka": {"bootstrapServers": "b"},
                              "database": {"urlSecret": {"name": "db"}}})
    assert spec["mqtt"]["tls"] == {"caSecret": {"name": "c", "key": "ca.crt"}}
    assert "tls" not in crd.with_defaults({"mqtt": {"host": "h"}})["mqtt"]


def test_with_defaults_fills_nested_sections() -> None:
    spec = crd.with_defaults({"mqtt": {"host": "h"}, "kafka": {"bootstrapServers": "b:9092"},
                              "database": {"urlSecret": {"name": "db"}}})
    assert spec["database"]["urlSecret"]["key"] == "url"
    assert spec["ingestion"]["bridge"]["replicas"] == 2
    assert spec["ingestion"]["resources"]["requests"]["cpu"] == "100m"
    assert spec["forecast"]["horizons"] == 168
    assert spec["paused"] is False
    # Given values win; the input is not modified.
    given = {"kafka": {"bootstrapServers": "b", "partitions": 8}}
    assert crd.with_defaults(given)["kafka"]["partitions"] == 8
    assert given == {"kafka": {"bootstrapServers": "b", "partitions": 8}}


def test_env_names_are_unique_and_documented() -> None:
    settings = crd.settings()
    names = [s.env for s in settings] + [s.env for s in crd.SECRET_SETTINGS]
    assert len(names) == len(set(names))
    for setting in settings:
        assert setting.env in setting.schema["description"], setting.field
        assert set(setting.workers) <= set(crd.WORKERS)


def test_setting_values_render_as_the_workers_parse_them() -> None:
    by_env = {s.env: s for s in crd.settings()}
    assert by_env["LOG_LEVEL"].render("INFO") == "INFO"
    assert by_env["MQTT_PORT"].render(1883) == "1883"
    assert by_env["TRAIN_MODEL_PARAMS"].render({"num_leaves": 31, "learning_rate": 0.1}) == (
        '{"learning_rate":0.1,"num_leaves":31}'
    )
    assert crd.Setting(("x",), "X", (), {}).render(True) == "true"


def test_model_parameters_are_the_default_models_numeric_parameters() -> None:
    from energy_pipeline.forecasting.models import DefaultParams

    numeric = tuple(f.name for f in dataclasses.fields(DefaultParams)
                    if f.type in ("int", "float", int, float))
    assert numeric == crd.MODEL_PARAMETERS


def test_topic_settings_defaults_agree_with_the_crd() -> None:
    kafka = crd.spec_schema()["properties"]["kafka"]["properties"]
    defaults = TopicSettings.__dataclass_fields__
    assert kafka["partitions"]["default"] == defaults["kafka_partitions"].default
    assert kafka["replicationFactor"]["default"] == defaults["kafka_replication_factor"].default


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_only_use_schema_fields(path: Path) -> None:
    """kubectl would reject unknown fields; catch them before a cluster does."""
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == crd.API_VERSION and doc["kind"] == crd.KIND

    def check(value: Any, node: dict[str, Any], where: str) -> None:
        if isinstance(value, dict) and node.get("type") == "object":
            props = node.get("properties")
            for key, child in value.items():
                if props is not None:
                    assert key in props, f"{path.name}: unknown field {where}.{key}"
                    check(child, props[key], f"{where}.{key}")

    check(doc["spec"], crd.spec_schema(), "spec")
