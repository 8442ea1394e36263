"""One reconcile of one EnergyPipeline: level-based and idempotent.

Called for create, update and resume events and periodically for drift, always with only
the object's name: the current object is read first, so every trigger converges on the same
state whatever it saw. External trouble (Kafka or PostgreSQL down, a Secret missing) is
never raised to kopf: it becomes a Degraded condition with an actionable message, and the
next periodic pass tries again. Each step reports what it found and did into one `Outcome`
and returns only what a later step needs.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from energy_pipeline.api.auth import new_token
from energy_pipeline.core.kafka import client_config
from energy_pipeline.core.readiness import describe
from energy_pipeline.dataplane.topics import (
    TopicSpec,
    broker_count,
    config_drift,
    create_topic,
    delete_topics,
    describe_problems,
    describe_topics,
    grow_partitions,
    plan_topic,
    set_topic_config,
    topic_config,
)
from energy_pipeline.db.connect import (
    DatabaseUnreachable,
    connect,
    with_ca,
    with_schema,
    worker_name,
)
from energy_pipeline.db.migrate import MigrationError, latest_version, migrate, schema_version

from energy_operator import certificates, crd, isolation, render
from energy_operator.kube import Kube, KubeError
from energy_operator.naming import (
    OPTIONAL_WORKERS,
    POD_MONITOR,
    POD_MONITOR_API,
    ChildNames,
    instance_selector,
)
from energy_operator.status import (
    FirstTraining,
    History,
    Observed,
    Problem,
    TopicsObserved,
    TrainingJob,
    Workload,
    build_status,
    first_training_events,
    plan_first_training,
    status_patch,
    training_job_from,
    workload_from_deployment,
)

log = logging.getLogger("energy_operator.reconcile")

KAFKA_TIMEOUT = 5.0
# The schema version that added forecast_sites, which says up to where a site's hours are
# closed (the history query reads it).
FORECASTING_SCHEMA_VERSION = 2
# The schema version that records what each site's newest forecast lacked (0007).
INPUTS_SCHEMA_VERSION = 7

Adopt = Callable[[list[dict[str, Any]], Mapping[str, Any]], None]


@dataclass
class Event:
    reason: str
    message: str
    type: str = "Normal"


@dataclass
class DatabaseFacts:
    schema_version: int | None = None
    last_forecast: datetime | None = None
    promoted_models: int | None = None
    # Read only while no model is promoted: (site, closed hours with a consumption value in
    # the training window) of the site with the most, (None, 0) without any.
    history: tuple[str | None, int] | None = None
    # Per model input, the sites whose newest forecast was made without it.
    missing_inputs: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Outcome:
    """What one reconcile found and did: each step reports into it as it goes.

    `topics` and `database` are the facts the status reports, `events` what is posted on the
    object, `changes` what is logged, `problems` what becomes the Degraded condition;
    `status` is what the pass wrote (or would have), `skipped` why there was no pass.
    """

    events: list[Event] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    topics: TopicsObserved = field(default_factory=lambda: TopicsObserved((), "Unknown"))
    database: DatabaseFacts = field(default_factory=DatabaseFacts)
    status: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    def did(self, reason: str, message: str, change: str, type: str = "Normal") -> None:
        """A change the pass made: an Event for whoever looks at the object, a line in the log."""
        self.events.append(Event(reason, message, type))
        self.changes.append(change)

    def event(self, reason: str, message: str, type: str = "Normal") -> None:
        self.events.append(Event(reason, message, type))

    def problem(self, reason: str, message: str, *, blocking: bool = True) -> None:
        self.problems.append(Problem(reason, message, blocking))


# ---------------------------------------------------------------------------------------------
# Kafka and PostgreSQL clients
# ---------------------------------------------------------------------------------------------

class AdminClients:
    """One Kafka AdminClient per distinct client configuration, least recently used dropped.

    A client keeps connections and metadata; building one per pass would reconnect every time.
    """

    def __init__(self, size: int = 8) -> None:
        self._clients: collections.OrderedDict[str, AdminClient] = collections.OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, config: Mapping[str, str]) -> AdminClient:
        key = repr(sorted(config.items()))
        with self._lock:
            if key in self._clients:
                self._clients.move_to_end(key)
                return self._clients[key]
            client = AdminClient(dict(config), logger=logging.getLogger("librdkafka"))
            self._clients[key] = client
            while len(self._clients) > self._size:
                self._clients.popitem(last=False)
            return client

    def discard(self, config: Mapping[str, str]) -> None:
        """Forget a client that cannot reach its cluster: it would keep reconnecting forever."""
        with self._lock:
            self._clients.pop(repr(sorted(config.items())), None)


ADMIN_CLIENTS = AdminClients()


def _secret(kube: Kube, namespace: str, ref: Mapping[str, Any] | None, key_field: str,
            field_name: str, outcome: Outcome) -> str | None:
    if not ref:
        return None
    key = ref[key_field]
    try:
        value = kube.secret_value(namespace, ref["name"], key)
    except KubeError as exc:
        outcome.problem("SecretUnreadable", f"cannot read Secret {ref['name']} "
                        f"({field_name}): {exc.message}")
        return None
    if value is None:
        outcome.problem(
            "SecretMissing",
            f"Secret {namespace}/{ref['name']} with key {key!r} ({field_name}) not found; "
            f"create it, e.g. kubectl create secret generic {ref['name']} --from-literal={key}=...",
        )
    return value


def database_url(kube: Kube, namespace: str, spec: Mapping[str, Any],
                 outcome: Outcome) -> str | None:
    """The operator's own DSN: the workers' URL, verified against spec.database.caSecret as
    the workers verify it (DATABASE_CA_FILE), so the operator never migrates over a
    connection they would refuse."""
    database = spec["database"]
    url = _secret(kube, namespace, database["urlSecret"], "key", "spec.database.urlSecret",
                  outcome)
    if url is None:
        return None
    # The pipeline's schema (spec.database.schema), as the workers' DATABASE_SCHEMA sets it:
    # migrations and the status's facts are this pipeline's own.
    url = with_schema(url, database["schema"]) if database.get("schema") else url
    if not database.get("caSecret"):
        return url
    ca = _secret(kube, namespace, database["caSecret"], "key", "spec.database.caSecret",
                 outcome)
    return None if ca is None else with_ca(url, str(ca_file(ca)))


def ca_file(pem: str) -> Path:
    """A file holding `pem` (libpq reads a CA from a file only), named by its digest: one file
    per distinct CA, written once, shared by every pipeline that uses it."""
    path = Path(tempfile.gettempdir()) / "energy-operator-ca" / (
        hashlib.sha256(pem.encode()).hexdigest()[:24] + ".crt")
    if not path.exists():
        path.parent.mkdir(mode=0o700, exist_ok=True)
        partial = path.with_suffix(f".{threading.get_ident()}.tmp")
        partial.write_text(pem)
        partial.replace(path)  # atomic: a concurrent pass never reads half a file
    return path


def kafka_config(kube: Kube, namespace: str, spec: Mapping[str, Any],
                 outcome: Outcome) -> dict[str, str] | None:
    """The operator's own Kafka client settings: the same the workers get."""
    kafka = spec["kafka"]
    sasl = kafka.get("sasl") or {}
    user: str | None = ""
    password: str | None = ""
    if sasl:
        ref = sasl["credentialsSecret"]
        field_name = "spec.kafka.sasl.credentialsSecret"
        user = _secret(kube, namespace, ref, "usernameKey", field_name, outcome)
        password = _secret(kube, namespace, ref, "passwordKey", field_name, outcome)
        if user is None or password is None:
            return None
    # The workers get the CA as a mounted file; the operator reads the same Secret.
    ca_ref = (kafka.get("tls") or {}).get("caSecret")
    ca_pem: str | None = ""
    if ca_ref:
        ca_pem = _secret(kube, namespace, ca_ref, "key", "spec.kafka.tls.caSecret", outcome)
        if ca_pem is None:
            return None
    return {
        **client_config(kafka["bootstrapServers"], kafka["securityProtocol"],
                        sasl_mechanism=sasl.get("mechanism", ""), sasl_username=user,
                        sasl_password=password, ca_pem=ca_pem),
        # An unreachable broker costs one pass seconds, not librdkafka's default 30.
        "socket.connection.setup.timeout.ms": "5000",
    }


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------

def check_mqtt_ca(kube: Kube, namespace: str, spec: Mapping[str, Any],
                  outcome: Outcome) -> None:
    """spec.mqtt.tls.caSecret must exist with its key. The operator never connects to MQTT,
    but the bridge pods mount the Secret and without it wait in ContainerCreating: reported
    here, with the command that makes it, as kafka.tls.caSecret is."""
    _secret(kube, namespace, crd.get_path(spec, ("mqtt", "tls", "caSecret")), "key",
            "spec.mqtt.tls.caSecret", outcome)


def apply_children(kube: Kube, body: Mapping[str, Any], spec: Mapping[str, Any],
                   adopt: Adopt, outcome: Outcome, *, restoring: bool,
                   fresh: frozenset[str] = frozenset()) -> None:
    """Apply every rendered child; delete owned children the spec no longer asks for.

    A missing child is reported as restored (someone deleted it) when `restoring`, unless its
    component is in `fresh`: an optional part (spec.api) enabled since the last pass.
    """
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    served = set(render.PRUNABLE_KINDS) | {k for k in render.OPTIONAL_KINDS if kube.serves(*k)}
    children = render.render_children(
        name, namespace, spec, pod_monitors=(POD_MONITOR_API, POD_MONITOR) in served)
    adopt(children, body)
    existing: dict[tuple[str, str], str] = {}
    # Children of the kinds that come and go with the spec, controlled by this very object.
    prunable: dict[tuple[str, str], tuple[str, str]] = {}
    selector = instance_selector(name)
    kinds = {(c["apiVersion"], c["kind"]) for c in children} | served
    for api_version, kind in sorted(kinds):
        for item in kube.list(api_version, kind, namespace, selector):
            key = (kind, item["metadata"]["name"])
            existing[key] = _version(item)
            if (api_version, kind) in served and _controlled_by(item, meta):
                prunable[key] = (api_version, item["metadata"]["uid"])
    created: list[str] = []
    restored: list[str] = []
    updated: list[str] = []
    deleted: list[str] = []
    for child in children:
        key = (child["kind"], child["metadata"]["name"])
        try:
            applied = kube.apply(child)
        except KubeError as exc:
            outcome.problem("ApplyFailed", f"{key[0]} {key[1]}: {exc.message}")
            continue
        label = f"{key[0]} {key[1]}"
        component = child["metadata"]["labels"].get("app.kubernetes.io/component")
        if key not in existing:
            (restored if restoring and component not in fresh else created).append(label)
        elif _version(applied) != existing[key]:
            updated.append(label)
    desired = {(c["kind"], c["metadata"]["name"]) for c in children}
    for key in sorted(set(prunable) - desired):
        api_version, uid = prunable[key]
        try:
            if kube.delete(api_version, key[0], namespace, key[1], uid=uid):
                deleted.append(f"{key[0]} {key[1]}")
        except KubeError as exc:
            # The data still flows; what is left over only costs resources.
            outcome.problem("DeleteFailed", f"{key[0]} {key[1]} is no longer in the spec but "
                            f"could not be deleted: {exc.message}", blocking=False)
    if created:
        outcome.did("Created", "created " + ", ".join(created), "created " + ", ".join(created))
    if restored:
        outcome.did("Restored", "recreated missing " + ", ".join(restored),
                    "recreated " + ", ".join(restored), "Warning")
    if updated:
        outcome.did("Updated", "updated " + ", ".join(updated), "updated " + ", ".join(updated))
    if deleted:
        outcome.did("Deleted", "deleted " + ", ".join(deleted)
                    + " (no longer asked for by the spec)", "deleted " + ", ".join(deleted))


def reconcile_certificates(kube: Kube, body: Mapping[str, Any], spec: Mapping[str, Any],
                           adopt: Adopt, outcome: Outcome, now: datetime) -> None:
    """The gRPC CA (created once, never regenerated) and the server and client certificates
    (issued when missing, renewed when due: `certificates.reissue_reason`)."""
    if not render.grpc_tls(spec):
        return
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    ca_name = certificates.ca_secret_name(name, spec)
    try:
        found = kube.get("v1", "Secret", namespace, ca_name)
        if found is None and certificates.operator_owns_ca(spec):
            manifest = certificates.ca_secret(
                name, namespace, spec, certificates.new_ca(f"{namespace}/{name} gRPC CA", now))
            adopt([manifest], body)
            try:
                found = kube.create(manifest)
                outcome.did("CertificateAuthorityCreated", f"created the gRPC CA {ca_name}",
                            f"created Secret {ca_name}")
            except KubeError as exc:
                if exc.status != 409:
                    raise
                found = kube.get("v1", "Secret", namespace, ca_name)  # created meanwhile
        if found is None:
            outcome.problem("SecretMissing", f"Secret {namespace}/{ca_name} "
                            "(spec.inference.tls.caSecret) not found; create it with the CA's "
                            f"tls.crt and tls.key, e.g. kubectl create secret tls {ca_name} "
                            "--cert=ca.crt --key=ca.key")
            return
        try:
            ca = certificates.read_ca(certificates.secret_data(found))
        except ValueError as exc:
            outcome.problem("CertificateAuthorityInvalid", f"Secret {namespace}/{ca_name}: {exc}")
            return
        for side in certificates.managed_sides(spec):
            secret = certificates.secret_name(name, spec, side)
            existing = kube.get("v1", "Secret", namespace, secret)
            reason = certificates.reissue_reason(
                certificates.secret_data(existing), ca,
                certificates.expected_names(name, namespace, side), now)
            if reason is None:
                continue
            manifest = certificates.issue_for(name, namespace, spec, side, ca, now)
            adopt([manifest], body)
            if existing is None:
                kube.create(manifest)
            else:  # optimistic: a concurrent writer makes this fail (409), the next pass retries
                manifest["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                kube.replace(manifest)
            verb = "issued" if existing is None else "renewed"
            outcome.did(f"Certificate{verb.capitalize()}", f"{verb} the gRPC {side} "
                        f"certificate in Secret {secret} ({reason})", f"{verb} Secret {secret}")
    except KubeError as exc:
        outcome.problem("CertificatesFailed", f"gRPC certificates (Secret {ca_name} and the "
                        f"ones issued from it): {exc.message}")


def _controlled_by(obj: Mapping[str, Any], owner_meta: Mapping[str, Any]) -> bool:
    """Whether `owner_meta`'s object is the controller of `obj` (what kopf.adopt sets)."""
    return any(
        ref.get("controller") and ref.get("uid") == owner_meta["uid"]
        for ref in obj["metadata"].get("ownerReferences") or ()
    )


def _version(obj: Mapping[str, Any]) -> str:
    """What changes when the spec does: the generation where the kind has one.

    A status update (a PodDisruptionBudget counting pods) is not a change the operator made.
    """
    meta = obj["metadata"]
    return f"g{meta['generation']}" if "generation" in meta else str(meta["resourceVersion"])


def ensure_api_tokens(kube: Kube, body: Mapping[str, Any], spec: Mapping[str, Any],
                      adopt: Adopt, change: bool, outcome: Outcome) -> dict[str, str] | None:
    """The read API's tokens Secret, while spec.api.enabled: the one spec.api.tokensSecret
    names must exist; without one, Secret <name>-api-tokens is created with a random token
    when absent, and never touched again (rotating is the user's edit, not a new pass).

    What status.apiTokens reports, or None without an API.
    """
    if not spec["api"]["enabled"]:
        return None
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    ref = render.api_tokens_ref(name, spec)
    ours = not spec["api"].get("tokensSecret")
    report = {"secret": ref["name"]}
    if ours:
        report["read"] = render.read_token_command(name, namespace)
    try:
        found = kube.get("v1", "Secret", namespace, ref["name"])
        if found is None and ours and change:
            secret = render.api_tokens_secret(name, namespace, new_token())
            adopt([secret], body)  # deleted with the pipeline, like every child
            try:
                kube.create(secret)
            except KubeError as exc:
                if exc.status != 409:  # 409: another pass or replica made it first: keep that
                    raise
            else:
                outcome.did("ApiTokenCreated",
                            f"created Secret {ref['name']} with a token for client "
                            f"{render.DEFAULT_API_CLIENT} of the read API; print it with: "
                            f"{report['read']}",
                            f"created Secret {ref['name']}")
            return report
    except KubeError as exc:
        outcome.problem("ApiTokensUnavailable",
                        f"Secret {ref['name']} (spec.api.tokensSecret): {exc.message}",
                        blocking=False)
        return report
    if found is None or ref["key"] not in (found.get("data") or {}):
        outcome.problem(
            "SecretMissing",
            f"Secret {namespace}/{ref['name']} with key {ref['key']!r} (spec.api.tokensSecret) "
            f"not found, so the read API pods cannot start; create it: energy-pipeline "
            f"api-token <client> --file tokens && kubectl -n {namespace} create secret generic "
            f"{ref['name']} --from-file={ref['key']}=tokens",
            blocking=False,
        )
    return report


def topic_specs(spec: Mapping[str, Any]) -> list[TopicSpec]:
    kafka = spec["kafka"]
    config = {"min.insync.replicas": str(kafka["minInSyncReplicas"])}
    return [
        TopicSpec(name, kafka["partitions"], kafka["replicationFactor"], config)
        for name in render.topic_names(spec)
    ]


def reconcile_topic_configs(admin: AdminClient, config: Mapping[str, str], names: list[str],
                            outcome: Outcome) -> None:
    """Keep the spec's topic settings (min.insync.replicas) on topics that already exist: a
    topic made by an earlier release, or by hand, converges to the spec."""
    if not names:  # (the admin client refuses an empty question)
        return
    for key, want in config.items():
        try:
            drift = config_drift(topic_config(admin, names, key, timeout=KAFKA_TIMEOUT), want)
            if drift:
                set_topic_config(admin, list(drift), key, want)
        except KafkaException as exc:
            outcome.problem(
                "TopicConfigUnknown",
                f"{key} of the topics could not be read or set ({describe(exc)}); the "
                "operator's Kafka user needs DescribeConfigs and AlterConfigs on them (the "
                "kafka chart grants both)",
                blocking=False,
            )
            return
        if drift:
            before = ", ".join(f"{n} {v}" for n, v in drift.items())
            outcome.did("TopicConfigUpdated", f"set {key}={want} on {before} (before)",
                        f"set {key}={want} on {len(drift)} topic(s)")


def reconcile_topics(admin: AdminClient | None, spec: Mapping[str, Any], change: bool,
                     outcome: Outcome) -> None:
    """Create missing topics and grow partitions; `outcome.topics` is what Kafka now has."""
    specs = topic_specs(spec)
    names = tuple(s.name for s in specs)
    bootstrap = spec["kafka"]["bootstrapServers"]
    outcome.topics = TopicsObserved(names, "Unknown")  # until Kafka answers
    if admin is None:
        return
    try:
        current = describe_topics(admin, list(names), timeout=KAFKA_TIMEOUT)
        plans = [plan_topic(s, current.get(s.name)) for s in specs]
        if change:
            to_create = [p for p in plans if p.action == "create"]
            brokers = broker_count(admin, KAFKA_TIMEOUT) if to_create else 0
            rf = spec["kafka"]["replicationFactor"]
            if to_create and rf > brokers:
                outcome.problem(
                    "ReplicationFactorTooHigh",
                    f"spec.kafka.replicationFactor is {rf} but the cluster at {bootstrap} has "
                    f"{brokers} broker(s); lower it or add brokers",
                )
                to_create = []
            for plan in to_create:
                create_topic(admin, plan.spec, timeout=30)
            if to_create:
                created = ", ".join(p.spec.name for p in to_create)
                outcome.did(
                    "TopicsCreated",
                    f"created {created} ({specs[0].partitions} partitions, replication factor "
                    f"{specs[0].replication_factor})",
                    f"created topics {created}",
                )
            grown = [p for p in plans if p.action == "grow"]
            for plan in grown:
                grow_partitions(admin, plan.spec.name, plan.spec.partitions, timeout=30)
            if grown:
                detail = ", ".join(f"{p.spec.name} {p.current.partitions}->{p.spec.partitions}"
                                   for p in grown if p.current)
                outcome.did("PartitionsIncreased", f"grew {detail}",
                            f"grew partitions of {detail}")
            if to_create or grown:
                current = describe_topics(admin, list(names), timeout=KAFKA_TIMEOUT)
                plans = [plan_topic(s, current.get(s.name)) for s in specs]
            # Topics made just now carry the spec's config already, and describing their
            # configs at once can fail while their metadata spreads (a needless Degraded).
            made = {p.spec.name for p in to_create}
            reconcile_topic_configs(
                admin, specs[0].config, [n for n in names if n in current and n not in made],
                outcome)
    except (KafkaException, TimeoutError, RuntimeError) as exc:
        outcome.problem(
            "KafkaUnreachable",
            f"Kafka at {bootstrap} (spec.kafka.bootstrapServers): {exc}; check the address "
            "and that the brokers are up",
        )
        return
    shrink = [p for p in plans if p.action == "shrink_refused" and p.current]
    if shrink:
        most = max(p.current.partitions for p in shrink if p.current)
        outcome.problem(
            "PartitionShrinkRefused",
            describe_problems(shrink)[0] + f"; set spec.kafka.partitions to at least {most}",
            blocking=False,
        )
    differs = [p for p in plans if p.action == "replication_differs"]
    if differs:
        outcome.problem("ReplicationFactorDiffers", describe_problems(differs)[0],
                        blocking=False)
    missing = [p.spec.name for p in plans if p.current is None]
    existing = [p.current for p in plans if p.current is not None]
    state = "Pending" if missing else ("Degraded" if shrink or differs else "Ready")
    outcome.topics = TopicsObserved(
        names, state,
        partitions=min((t.partitions for t in existing), default=None),
        replication_factor=min((t.replication_factor for t in existing), default=None),
    )


def reconcile_schema(url: str | None, change: bool, outcome: Outcome,
                     history_days: int | None = None) -> None:
    """Migrate when behind; `outcome.database` is what the status reports of the database.

    With `history_days`, also how much training history is stored while no model is promoted.
    """
    if url is None:
        return
    try:  # db.connect bounds every connect: an unreachable database costs a pass seconds
        version = schema_version(url)
        latest = latest_version()
        if change and version < latest:
            new = migrate(url)
            outcome.did("Migrated", f"database schema migrated from version {version} to {new}",
                        f"migrated schema {version}->{new}")
            version = new
        elif version > latest:
            outcome.problem(
                "SchemaNewer",
                f"database schema version {version} is newer than this release knows "
                f"({latest}); use the image of a matching release",
            )
        facts = registry_facts(
            url, history_days if version >= FORECASTING_SCHEMA_VERSION else None,
            inputs=version >= INPUTS_SCHEMA_VERSION,
        ) if version >= 1 else DatabaseFacts()
        facts.schema_version = version
    except MigrationError as exc:
        outcome.problem("MigrationFailed", f"database migration failed: {exc}")
        return
    except psycopg2.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # db.connect's own fix names the workers' variables; the operator's are spec fields.
        where = "spec.database.urlSecret"
        if isinstance(exc, DatabaseUnreachable):
            first_line = exc.message
            if "DATABASE_CA_FILE" in exc.fix:
                where = "spec.database.urlSecret, spec.database.caSecret"
        outcome.problem(
            "DatabaseUnreachable",
            f"PostgreSQL ({where}): {first_line}; check the URL in the Secret "
            + ("and the CA certificate in spec.database.caSecret"
               if "caSecret" in where else "and that the server is up"),
        )
        return
    outcome.database = facts


# Per site, the closed hours with a consumption value in the window `train` would read: the
# bounds of energy_pipeline.forecasting.hourly_db (up to the forecasting watermark's last
# closed hour when ingest keeps one, else all but the newest hour; `days` back from there),
# counted as the default model counts known hours. The site with the most, over the primary
# key (site_id, hour); it runs only while no model is promoted.
_HISTORY_SQL = """
WITH bounds AS (
    SELECT h.site_id, coalesce(f.closed_through + interval '1 hour', max(h.hour)) AS until
    FROM hourly_features h LEFT JOIN forecast_sites f ON f.site_id = h.site_id
    GROUP BY h.site_id, f.closed_through
)
SELECT b.site_id, count(h.hour) FILTER (WHERE h.n_energyconsumption > 0) AS hours
FROM bounds b JOIN hourly_features h ON h.site_id = b.site_id
 AND h.hour < b.until AND h.hour >= b.until - %(days)s * interval '1 day'
GROUP BY b.site_id
ORDER BY hours DESC, b.site_id
LIMIT 1
"""


# Per input, the sites whose newest forecast lacked it (forecast_sites.missing_inputs).
_MISSING_INPUTS_SQL = """
SELECT i.input, array_agg(s.site_id ORDER BY s.site_id)
FROM forecast_sites s CROSS JOIN unnest(s.missing_inputs) AS i(input)
GROUP BY i.input ORDER BY i.input
"""


def registry_facts(dsn: str, history_days: int | None = None,
                   inputs: bool = False) -> DatabaseFacts:
    """The newest forecast and how many models are promoted (inference serves only those);
    with `history_days` and no model promoted, the training history stored (`_HISTORY_SQL`);
    with `inputs`, the sites whose newest forecast lacked a model input."""
    conn = connect(dsn, application_name=worker_name("operator"), readonly=True)
    history: tuple[str | None, int] | None = None
    missing: dict[str, list[str]] = {}
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT max(issued_at) FROM forecasts")
            last = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM models WHERE promoted")
            promoted = int(cur.fetchone()[0])
            if promoted == 0 and history_days is not None:
                cur.execute(_HISTORY_SQL, {"days": history_days})
                row = cur.fetchone()
                history = (row[0], int(row[1])) if row else (None, 0)
            if inputs:
                cur.execute(_MISSING_INPUTS_SQL)
                missing = {name: list(sites) for name, sites in cur.fetchall()}
    finally:
        conn.close()
    return DatabaseFacts(None, last.astimezone(UTC) if last is not None else None, promoted,
                         history, missing)


def observe_training_jobs(kube: Kube, name: str, namespace: str) -> list[TrainingJob]:
    """The pipeline's training Jobs: its first-training Job and those of its CronJob."""
    selector = f"{instance_selector(name)},app.kubernetes.io/component=train"
    return [training_job_from(job) for job in kube.list("batch/v1", "Job", namespace, selector)]


def start_first_training(kube: Kube, body: Mapping[str, Any], spec: Mapping[str, Any],
                         plan: FirstTraining, jobs: list[TrainingJob], adopt: Adopt,
                         outcome: Outcome) -> bool:
    """Create Job <name>-train-first as `plan` says, replacing a failed one for a retry.

    False when that failed (a non-blocking problem says why; the next pass tries again).
    """
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    job = render.first_training_job(name, namespace, spec, plan.attempt)
    adopt([job], body)
    try:
        if plan.action == "retry":
            failed = next(j for j in jobs if j.name == job["metadata"]["name"])
            # Only that very Job (a precondition), in the background: its pods go with it.
            kube.delete("batch/v1", "Job", namespace, failed.name, uid=failed.uid or None)
        kube.create(job)
    except KubeError as exc:
        if exc.status == 409:  # already there (another pass or replica): the next pass sees it
            return True
        outcome.problem("FirstTrainingNotStarted",
                        f"could not create Job {job['metadata']['name']}: {exc.message}",
                        blocking=False)
        return False
    history = plan.history
    have = (f": {history.site} has {history.hours} of {history.needed} hours of history"
            if history is not None and history.site is not None else "")
    again = f" again (attempt {plan.attempt})" if plan.attempt > 1 else ""
    outcome.did("FirstTrainingStarted",
                f"started Job {job['metadata']['name']}{again} to train the first model{have}; "
                f"follow it with kubectl logs -f job/{job['metadata']['name']}",
                f"started Job {job['metadata']['name']}{again}")
    return True


def observe_workloads(kube: Kube, name: str, namespace: str,
                      spec: Mapping[str, Any]) -> dict[str, Workload]:
    """Every Deployment the spec asks for (the read API only while spec.api.enabled)."""
    desired = render.desired_replicas(spec)
    names = ChildNames(name)
    found = {
        d["metadata"]["name"]: d
        for d in kube.list("apps/v1", "Deployment", namespace, instance_selector(name))
    }
    return {
        w: workload_from_deployment(found.get(names.deployment(w)), replicas)
        for w, replicas in desired.items()
    }


# ---------------------------------------------------------------------------------------------
# The whole pass
# ---------------------------------------------------------------------------------------------

_locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
_locks_guard = threading.Lock()


def _lock_for(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks[key]


def reconcile(kube: Kube, namespace: str, name: str, adopt: Adopt,
              now: Callable[[], datetime] = lambda: datetime.now(UTC),
              scope: Sequence[str] = ()) -> Outcome:
    """Bring one EnergyPipeline's children, topics and schema to its spec; write its status.

    `scope`: the namespaces the operator watches (empty: all), where the pipelines it could
    clash with live. Serialised per object: an event handler and the periodic pass never
    overlap on it.
    """
    with _lock_for(f"{namespace}/{name}"):
        return _reconcile(kube, namespace, name, adopt, now, scope)


def clashes(kube: Kube, body: Mapping[str, Any], scope: Sequence[str],
            outcome: Outcome) -> bool:
    """Whether an earlier pipeline in `scope` holds a topic, group or schema this one claims
    (each clash becomes a Problem naming it and the fix). The list comes from the API
    server on every pass: a clash ends as soon as the other pipeline is changed or deleted."""
    try:
        bodies = [b for namespace in (scope or [None])
                  for b in kube.list(crd.API_VERSION, crd.KIND, namespace)]
    except KubeError as exc:
        outcome.problem("PipelinesUnlisted", "cannot list the other EnergyPipelines to check "
                        f"that none uses this one's topics or schema: {exc.message}",
                        blocking=False)
        return False
    others = [isolation.from_body(b) for b in bodies
              if not b["metadata"].get("deletionTimestamp")]
    found = isolation.conflicts(isolation.from_body(body), others)
    outcome.problems.extend(found)
    return bool(found)


def _reconcile(kube: Kube, namespace: str, name: str, adopt: Adopt,
               now: Callable[[], datetime], scope: Sequence[str]) -> Outcome:
    body = kube.get(crd.API_VERSION, crd.KIND, namespace, name)
    if body is None:
        return Outcome(skipped="deleted")
    if body["metadata"].get("deletionTimestamp"):
        # Being deleted: recreating children now would only feed the garbage collector.
        return Outcome(skipped="deleting")
    spec = crd.with_defaults(body.get("spec") or {}, name)
    previous = body.get("status") or {}
    paused = bool(spec["paused"])
    outcome = Outcome()
    # A pipeline refused for a clash is observed, never acted on: its children, topics and
    # schema stay as they are (none, for a new one) while the status says why.
    change = not paused and not clashes(kube, body, scope, outcome)

    db_url = database_url(kube, namespace, spec, outcome)
    kafka = kafka_config(kube, namespace, spec, outcome)
    check_mqtt_ca(kube, namespace, spec, outcome)

    # Before the API's Deployment, so its pods find the Secret they mount.
    api_tokens = ensure_api_tokens(kube, body, spec, adopt, change, outcome)
    if change:
        restoring = "observedGeneration" in previous
        # Optional workers the last status did not report were just enabled: created, not
        # restored.
        fresh = frozenset(w for w in OPTIONAL_WORKERS
                          if w not in (previous.get("workloads") or {}))
        # Before the Deployments: their pods mount these Secrets.
        reconcile_certificates(kube, body, spec, adopt, outcome, now())
        apply_children(kube, body, spec, adopt, outcome, restoring=restoring, fresh=fresh)

    admin = ADMIN_CLIENTS.get(kafka) if kafka is not None else None
    reconcile_topics(admin, spec, change, outcome)
    if admin is not None and kafka is not None:
        admin.poll(0)  # hands librdkafka's queued log lines to the `librdkafka` logger
        if outcome.topics.state == "Unknown":
            ADMIN_CLIENTS.discard(kafka)

    # The training Jobs before the registry: a Job seen finished has its model counted.
    jobs = observe_training_jobs(kube, name, namespace)
    needed = render.first_training_hours(spec)
    reconcile_schema(db_url, change, outcome,
                     history_days=int(spec["forecast"]["trainHistoryDays"]))

    database = outcome.database
    history = (History(database.history[0], database.history[1], needed)
               if database.history is not None else None)
    at = now()
    first = plan_first_training(name, database.promoted_models, history, jobs, paused, at)
    if first is not None and first.action and change and not start_first_training(
            kube, body, spec, first, jobs, adopt, outcome):
        first = dataclasses.replace(first, state="NotStarted", action="",
                                    message=f"Job {first.job} could not be created (see Degraded)")
    if first is not None and first.problem is not None:
        outcome.problems.append(first.problem)
    observed = Observed(
        generation=int(body["metadata"].get("generation", 0)),
        paused=paused,
        workloads=observe_workloads(kube, name, namespace, spec),
        topics=outcome.topics,
        schema_version=database.schema_version,
        schema_latest=latest_version(),
        last_forecast=database.last_forecast,
        promoted_models=database.promoted_models,
        missing_inputs=database.missing_inputs if database.schema_version is not None else None,
        first_training=first,
        problems=outcome.problems,
        changes=outcome.changes,
        api_tokens=api_tokens,
    )
    outcome.status = build_status(observed, name, previous, at)

    # Warn once per new problem, not on every pass while it lasts.
    for problem in outcome.problems:
        if not _already_reported(problem, previous):
            outcome.event(problem.reason, problem.message, "Warning")
    for reason, message in first_training_events(first, database.promoted_models, previous):
        outcome.event(reason, message)
    if paused and not previous.get("paused"):
        outcome.event("Paused", "spec.paused is true: children are left untouched")
    if not paused and previous.get("paused"):
        outcome.event("Resumed", "spec.paused is false: reconciling again")

    # Events first: whoever sees the new status can also find what led to it.
    for event in outcome.events:
        try:
            kube.post_event(body, event.reason, event.message, event.type)
        except KubeError as exc:
            log.warning("could not post event", extra={"reason": event.reason,
                                                       "error": exc.message})
    if outcome.status != previous:
        try:
            kube.merge_patch(crd.API_VERSION, crd.KIND, namespace, name,
                             {"status": status_patch(outcome.status, previous)},
                             subresource="status")
        except KubeError as exc:
            if exc.status != 404:
                raise
    if outcome.changes or outcome.problems:
        log.info("reconciled", extra={"pipeline": f"{namespace}/{name}",
                                      "changes": outcome.changes,
                                      "problems": [p.reason for p in outcome.problems]})
    return outcome


def _already_reported(problem: Problem, previous: Mapping[str, Any]) -> bool:
    """The last status's Degraded condition names the first problem and lists every message."""
    for condition in previous.get("conditions", []):
        if condition.get("type") == "Degraded" and condition.get("status") == "True":
            return (problem.reason == condition.get("reason")
                    or problem.message in condition.get("message", ""))
    return False


def delete_pipeline_topics(kube: Kube, body: Mapping[str, Any],
                           scope: Sequence[str] = ()) -> list[str]:
    """The finalizer's work: delete the topics (only when spec.kafka.deleteTopicsOnDelete),
    unless the pipeline was refused for a clash: its topics are then another's."""
    meta = body["metadata"]
    spec = crd.with_defaults(body.get("spec") or {}, meta["name"])
    outcome = Outcome()
    if clashes(kube, body, scope, outcome):
        kube.post_event(dict(body), "TopicsKept", "topics not deleted: " + "; ".join(
            p.message for p in outcome.problems))
        return []
    if outcome.problems:  # the other pipelines could not be listed: delete nothing yet
        raise RuntimeError("; ".join(p.message for p in outcome.problems))
    config = kafka_config(kube, meta["namespace"], spec, outcome)
    if config is None:
        raise RuntimeError("; ".join(p.message for p in outcome.problems))
    deleted = delete_topics(ADMIN_CLIENTS.get(config), render.topic_names(spec), timeout=30)
    if deleted:
        kube.post_event(dict(body), "TopicsDeleted", "deleted " + ", ".join(deleted) +
                        " (spec.kafka.deleteTopicsOnDelete)")
    return deleted
