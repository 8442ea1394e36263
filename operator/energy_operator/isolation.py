"""What an EnergyPipeline claims for itself, and which of two pipelines yields when they clash.

Two pipelines that bridge the same MQTT topics, write the same Kafka topics, share a consumer
group or a database schema read or steal each other's readings. The names that keep them apart
are derived from each pipeline's name by default (crd.derived_defaults); a spec may still set
one to a value another pipeline uses. CEL rules see one object only, so the operator checks:
the pipeline created later (then the one later by namespace/name) is refused and told what to
change; the earlier one carries on.

Pure functions over effective specs (crd.with_defaults with the pipeline's name).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from energy_operator import crd
from energy_operator.status import Problem

REASON = "ClaimedByAnotherPipeline"


@dataclass(frozen=True)
class Claim:
    """One resource a pipeline uses alone: `field` of its spec, `value` on `where`."""

    field: str
    value: str
    where: str

    def clashes(self, other: Claim) -> bool:
        if self.field != other.field or self.where != other.where:
            return False
        if self.field == "mqtt.topicRoot":
            # energy and energy/b overlap: energy/# also receives energy/b's devices.
            a, b = self.value + "/", other.value + "/"
            return a.startswith(b) or b.startswith(a)
        return self.value == other.value


@dataclass(frozen=True)
class Pipeline:
    namespace: str
    name: str
    created: str  # metadata.creationTimestamp (RFC 3339, UTC: sorts as text)
    spec: Mapping[str, Any]  # effective: crd.with_defaults(spec, name)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.created, self.namespace, self.name)


def from_body(body: Mapping[str, Any]) -> Pipeline:
    meta = body["metadata"]
    return Pipeline(meta["namespace"], meta["name"], meta.get("creationTimestamp") or "",
                    crd.with_defaults(body.get("spec") or {}, meta["name"]))


def claims(pipeline: Pipeline) -> list[Claim]:
    """What `pipeline` must not share. A Kafka cluster is known by its bootstrap list, a
    broker by host:port, a database by the Secret naming its URL: two spellings of one
    server are not recognised (the README says so)."""
    spec = pipeline.spec
    mqtt, kafka, database = spec["mqtt"], spec["kafka"], spec["database"]
    broker = f"MQTT broker {mqtt['host']}:{mqtt['port']}"
    cluster = f"Kafka {kafka['bootstrapServers']}"
    secret = database["urlSecret"]
    db = f"the database of Secret {pipeline.namespace}/{secret['name']} (key {secret['key']})"
    found = [Claim("mqtt.topicRoot", mqtt["topicRoot"], broker),
             Claim("kafka.topicPrefix", kafka["topicPrefix"], cluster),
             Claim("kafka.consumerGroup", kafka["consumerGroup"], cluster),
             Claim("database.schema", database["schema"], db)]
    if mqtt["topicFilter"] != f"{mqtt['topicRoot']}/#":
        found.append(Claim("mqtt.topicFilter", mqtt["topicFilter"], broker))
    return found


def conflicts(me: Pipeline, others: Iterable[Pipeline]) -> list[Problem]:
    """A Problem per claim of `me` that an earlier pipeline holds; none for the earliest."""
    problems: list[Problem] = []
    mine = claims(me)
    for other in sorted(others, key=lambda p: p.key):
        if (other.namespace, other.name) == (me.namespace, me.name) or other.key > me.key:
            continue
        for claim in mine:
            held = next((c for c in claims(other) if claim.clashes(c)), None)
            if held is not None:
                problems.append(_problem(me, other, claim, held))
    return problems


def _problem(me: Pipeline, other: Pipeline, claim: Claim, held: Claim) -> Problem:
    section, field = claim.field.split(".")
    fix = {"spec": {section: {field: _suggestion(me, claim)}}}
    return Problem(
        REASON,
        f"spec.{claim.field} {claim.value!r} on {claim.where} clashes with EnergyPipeline "
        f"{other.namespace}/{other.name} ({held.value!r}, created earlier): the two would "
        f"read or overwrite each other's data, so nothing of this pipeline is created or "
        f"changed until it differs; e.g. kubectl patch energypipeline {me.name} -n "
        f"{me.namespace} --type merge -p '{json.dumps(fix, separators=(',', ':'))}' (or "
        f"remove the field to use the default derived from the name)",
    )


def _suggestion(me: Pipeline, claim: Claim) -> str:
    derived = crd.derived_defaults(me.name, {})
    section, field = claim.field.split(".")
    value = derived[(section, field)]
    if value != claim.value:
        return value
    # The name's own value clashes too (the same name in another namespace): qualify it.
    return f"{me.namespace}_{value}".replace("-", "_") if field == "schema" else \
        f"{me.namespace}-{value}"
