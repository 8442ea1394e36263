"""Pipelines isolated by name: the defaults derived from it, and the clash check that refuses
the later of two pipelines claiming one topic root, Kafka topic prefix, consumer group or
database schema."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest
from energy_operator import crd, isolation, render
from energy_pipeline.core.contracts import SCHEMA_NAME, TOPIC_ROOT

pytestmark = pytest.mark.unit

BASE = {"mqtt": {"host": "hivemq"}, "kafka": {"bootstrapServers": "kafka:9092"},
        "database": {"urlSecret": {"name": "pg", "key": "url"}}}


def spec(**sections: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(BASE))
    for section, fields in sections.items():
        out.setdefault(section, {}).update(fields)
    return out


def body(name: str, created: str, namespace: str = "energy", **sections: dict[str, Any]
         ) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace,
                         "creationTimestamp": created}, "spec": spec(**sections)}


def test_the_names_that_isolate_a_pipeline_derive_from_its_name() -> None:
    data = render.config_data("campus-b", "energy", spec())
    assert {k: data[k] for k in ("MQTT_TOPIC_ROOT", "MQTT_TOPIC_FILTER", "MQTT_SHARED_GROUP",
                                 "KAFKA_TOPIC_PREFIX", "KAFKA_CONSUMER_GROUP",
                                 "DATABASE_SCHEMA")} == {
        "MQTT_TOPIC_ROOT": "campus-b", "MQTT_TOPIC_FILTER": "campus-b/#",
        "MQTT_SHARED_GROUP": "campus-b", "KAFKA_TOPIC_PREFIX": "campus-b",
        "KAFKA_CONSUMER_GROUP": "campus-b-ingest", "DATABASE_SCHEMA": "campus_b"}
    assert render.topic_names(spec(), "campus-b")[0] == "campus-b.temperature"


def test_what_the_spec_sets_wins_and_the_filter_follows_the_root() -> None:
    effective = crd.with_defaults(spec(mqtt={"topicRoot": "grid/north", "sharedGroup": ""},
                                       kafka={"topicPrefix": "north"},
                                       database={"schema": "public"}), "campus-b")
    assert effective["mqtt"]["topicFilter"] == "grid/north/#"
    assert effective["mqtt"]["sharedGroup"] == ""  # empty: a plain subscription, kept
    assert effective["kafka"]["topicPrefix"] == "north"
    assert effective["kafka"]["consumerGroup"] == "campus-b-ingest"
    assert effective["database"]["schema"] == "public"


def test_without_a_name_nothing_is_derived() -> None:
    effective = crd.with_defaults(spec())
    assert "topicPrefix" not in effective["kafka"] and "schema" not in effective["database"]


def test_every_derivable_name_passes_the_crds_and_the_workers_patterns() -> None:
    """Any name the CRD admits (a DNS label of at most MAX_NAME_LENGTH) derives values that
    the CRD's own patterns and the workers' settings accept."""
    props = crd.spec_schema()["properties"]
    # The CRD admits what the workers' settings admit: one pattern for both.
    assert props["mqtt"]["properties"]["topicRoot"]["pattern"] == f"^{TOPIC_ROOT.pattern}$"
    assert props["database"]["properties"]["schema"]["pattern"] == f"^{SCHEMA_NAME.pattern}$"
    for name in ("a", "energy", "campus-b-2", "x" * crd.MAX_NAME_LENGTH):
        for (section, field), value in crd.derived_defaults(name, {}).items():
            schema = props[section]["properties"][field]
            assert re.fullmatch(schema.get("pattern", ".*"), value), (name, field)
            assert len(value) <= schema.get("maxLength", len(value)), (name, field)


def conflicts_of(me: dict[str, Any], *others: dict[str, Any]) -> list[str]:
    return [p.message for p in isolation.conflicts(
        isolation.from_body(me), [isolation.from_body(o) for o in (me, *others)])]


def test_two_pipelines_with_their_own_names_do_not_clash() -> None:
    a = body("alpha", "2026-01-01T00:00:00Z")
    b = body("beta", "2026-01-02T00:00:00Z")
    assert conflicts_of(a, b) == [] and conflicts_of(b, a) == []


@pytest.mark.parametrize(("sections", "field"), [
    ({"kafka": {"topicPrefix": "alpha"}}, "kafka.topicPrefix"),
    ({"kafka": {"consumerGroup": "alpha-ingest"}}, "kafka.consumerGroup"),
    ({"database": {"schema": "alpha"}}, "database.schema"),
    ({"mqtt": {"topicRoot": "alpha"}}, "mqtt.topicRoot"),
    # alpha/# also receives alpha/east's devices: overlapping roots clash too.
    ({"mqtt": {"topicRoot": "alpha/east"}}, "mqtt.topicRoot"),
])
def test_the_later_pipeline_is_refused_with_a_fix_it_can_run(
        sections: dict[str, Any], field: str) -> None:
    first = body("alpha", "2026-01-01T00:00:00Z")
    later = body("beta", "2026-01-02T00:00:00Z", **sections)
    assert conflicts_of(first, later) == []  # the earlier one carries on
    (message,) = conflicts_of(later, first)
    assert message.startswith(f"spec.{field} ")
    assert "EnergyPipeline energy/alpha" in message
    command = shlex.split(message.split("e.g. ", 1)[1].split(" (or remove")[0])
    assert command[:5] == ["kubectl", "patch", "energypipeline", "beta", "-n"]
    patch = json.loads(command[-1])
    section, name = field.split(".")
    # Applying the suggested patch ends the clash.
    fixed = body("beta", "2026-01-02T00:00:00Z", **sections)
    fixed["spec"][section][name] = patch["spec"][section][name]
    assert conflicts_of(fixed, first) == []


def test_the_same_name_in_two_namespaces_clashes_on_a_shared_broker_but_not_database() -> None:
    first = body("energy", "2026-01-01T00:00:00Z", namespace="team-a")
    later = body("energy", "2026-01-02T00:00:00Z", namespace="team-b")
    fields = sorted(m.split(" ")[0] for m in conflicts_of(later, first))
    # Their URL Secrets are in different namespaces: not known to be one database.
    assert fields == ["spec.kafka.consumerGroup", "spec.kafka.topicPrefix",
                      "spec.mqtt.topicRoot"]
    messages = conflicts_of(later, first)
    assert any('"topicPrefix":"team-b-energy"' in m for m in messages)
    other_cluster = body("energy", "2026-01-02T00:00:00Z", namespace="team-b",
                         kafka={"bootstrapServers": "other-kafka:9092"},
                         mqtt={"host": "other-hivemq"})
    assert conflicts_of(other_cluster, first) == []


def test_a_tie_on_creation_time_is_broken_by_namespace_and_name() -> None:
    a = body("alpha", "2026-01-01T00:00:00Z", kafka={"topicPrefix": "shared"})
    b = body("beta", "2026-01-01T00:00:00Z", kafka={"topicPrefix": "shared"})
    assert conflicts_of(a, b) == [] and len(conflicts_of(b, a)) == 1
