"""The EnergyPipeline CRD, built from one annotated schema.

Every spec field that reaches a worker carries its environment variable here (`Env`), so the
CRD's documentation, its defaults, the ConfigMap keys and the containers' environment all
come from this one table and cannot drift apart. The CRD YAML in `manifests/crd/` and its
copy in the chart are generated from it (`python -m energy_harness.generate`, which writes
`to_yaml(crd_manifest())`) and a unit test keeps both in step.

Pure data and functions only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from energy_pipeline.core.contracts import SCHEMA_NAME, SENSOR_NAMES, TOPIC_ROOT
from energy_pipeline.forecasting.kinds import DEFAULT_KIND, SERVED_MODELS

GROUP = "energy.pipeline.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "EnergyPipeline"
PLURAL = "energypipelines"
SINGULAR = "energypipeline"
# `ep` is the agreed short name, but kubectl resolves it to the built-in Endpoints first;
# `epipe` always reaches EnergyPipelines.
SHORT_NAMES = ("ep", "epipe")
CATEGORIES = ("all",)
CRD_NAME = f"{PLURAL}.{GROUP}"

DEFAULT_IMAGE = "ghcr.io/energy-pipeline/energy-pipeline:0.1.0"
# Child names append at most "-inference" (10 characters); a CronJob's name may have at most
# 52 (its Jobs add 11), so 40 leaves room and keeps every derived name a valid DNS label.
MAX_NAME_LENGTH = 40

WORKERS = ("bridge", "ingest", "inference", "train", "api")

# Numeric fields of energy_pipeline.forecasting.models.DefaultParams (a unit test keeps this
# list equal to them; importing the model here would pull LightGBM into the operator).
MODEL_PARAMETERS = (
    "num_boost_round", "early_stopping_rounds", "learning_rate", "num_leaves",
    "min_data_in_leaf", "feature_fraction", "bagging_fraction", "lambda_l2", "anchor_hours",
    "max_rows", "holdout_hours", "min_train_hours", "min_window_hours", "num_threads", "seed",
    "issued_dropout",
)

# Internal marker on schema nodes; stripped from the published CRD.
_ENV = "x-energy-env"


@dataclass(frozen=True)
class Env:
    """The environment variable a spec field becomes, and which workers read it."""

    name: str
    workers: tuple[str, ...]


@dataclass(frozen=True)
class Setting:
    """One spec field bound to an environment variable (a row of the README's reference)."""

    path: tuple[str, ...]
    env: str
    workers: tuple[str, ...]
    schema: Mapping[str, Any]

    @property
    def field(self) -> str:
        return "spec." + ".".join(self.path)

    @property
    def default(self) -> Any:
        return self.schema.get("default")

    def render(self, value: Any) -> str:
        """The value as the workers' settings parser reads it (energy_pipeline.core.settings)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            # JSON has one number type: the API server returns 10.0 as 10; so do we.
            return str(int(value))
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        if isinstance(value, dict):
            return json.dumps(value, sort_keys=True, separators=(",", ":"))
        return str(value)


@dataclass(frozen=True)
class SecretSetting:
    """An environment variable taken from a Secret the spec references (never inline)."""

    env: str
    workers: tuple[str, ...]
    ref: tuple[str, ...]  # path of the secret reference in the spec
    key_field: str  # field of that reference naming the key
    # (worker, path): a reference of the same shape that, when the spec sets it, this worker
    # reads instead of `ref` (the read API's own, read-only, database URL).
    overrides: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def field(self) -> str:
        return "spec." + ".".join(self.ref)

    def ref_for(self, worker: str, spec: Mapping[str, Any]) -> Any:
        """The secret reference `worker` reads in `spec` (None when the spec has none)."""
        for who, path in self.overrides:
            override = get_path(spec, path) if who == worker else None
            if override:
                return override
        return get_path(spec, self.ref)


# One Kafka principal per role: a worker's own credentials, when the spec names them, instead
# of kafka.sasl.credentialsSecret (which stays the operator's own).
KAFKA_ROLE_SECRETS = (
    ("bridge", ("kafka", "sasl", "bridgeCredentialsSecret")),
    ("ingest", ("kafka", "sasl", "ingestCredentialsSecret")),
)
# Where the bridge and ingest pods find spec.kafka.tls.caSecret (KAFKA_CA_FILE).
KAFKA_CA_DIR = "/etc/energy-pipeline/kafka-ca"
KAFKA_CA_FILE = f"{KAFKA_CA_DIR}/ca.crt"
# Where the bridge pods find spec.mqtt.tls.caSecret (MQTT_CA_FILE).
MQTT_CA_DIR = "/etc/energy-pipeline/mqtt-ca"
MQTT_CA_FILE = f"{MQTT_CA_DIR}/ca.crt"

SECRET_SETTINGS = (
    SecretSetting("MQTT_USERNAME", ("bridge",), ("mqtt", "credentialsSecret"), "usernameKey"),
    SecretSetting("MQTT_PASSWORD", ("bridge",), ("mqtt", "credentialsSecret"), "passwordKey"),
    SecretSetting("KAFKA_SASL_USERNAME", ("bridge", "ingest"),
                  ("kafka", "sasl", "credentialsSecret"), "usernameKey",
                  overrides=KAFKA_ROLE_SECRETS),
    SecretSetting("KAFKA_SASL_PASSWORD", ("bridge", "ingest"),
                  ("kafka", "sasl", "credentialsSecret"), "passwordKey",
                  overrides=KAFKA_ROLE_SECRETS),
    SecretSetting("DATABASE_URL", ("ingest", "inference", "train", "api"),
                  ("database", "urlSecret"), "key",
                  overrides=(("api", ("api", "databaseUrlSecret")),)),
)


# ---------------------------------------------------------------------------------------------
# Schema helpers: small constructors so the tree below reads like documentation.
# ---------------------------------------------------------------------------------------------

def _node(kind: str, doc: str, env: Env | None, **schema: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"type": kind, "description": doc, **schema}
    if env is not None:
        node[_ENV] = env
        node["description"] = f"{doc} Sets {env.name} ({', '.join(env.workers)})."
    return node


def integer(doc: str, *, env: Env | None = None, **schema: Any) -> dict[str, Any]:
    return _node("integer", doc, env, **schema)


def number(doc: str, *, env: Env | None = None, **schema: Any) -> dict[str, Any]:
    return _node("number", doc, env, **schema)


def string(doc: str, *, env: Env | None = None, **schema: Any) -> dict[str, Any]:
    return _node("string", doc, env, **schema)


def boolean(doc: str, *, env: Env | None = None, **schema: Any) -> dict[str, Any]:
    return _node("boolean", doc, env, **schema)


def obj(
    doc: str,
    properties: Mapping[str, Any],
    *,
    required: tuple[str, ...] = (),
    rules: tuple[Mapping[str, str], ...] = (),
    **schema: Any,
) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "object", "description": doc, "properties": dict(properties)}
    if required:
        node["required"] = list(required)
    if rules:
        node["x-kubernetes-validations"] = [dict(r) for r in rules]
    node.update(schema)
    return node


def rule(expression: str, message: str, field_path: str | None = None) -> dict[str, str]:
    out = {"rule": expression, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
# Five cron fields, or one of the macros CronJobs accept.
CRON = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"


def secret_ref(doc: str, keys: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """A reference to a Secret: its name and, per credential, the key holding it."""
    props: dict[str, Any] = {
        "name": string(
            "Name of the Secret, in the EnergyPipeline's namespace.",
            minLength=1, maxLength=253, pattern=DNS_SUBDOMAIN,
        )
    }
    for field_name, (default, what) in keys.items():
        props[field_name] = string(
            f"Key in the Secret that holds {what}.", default=default,
            minLength=1, maxLength=253, pattern=SECRET_KEY,
        )
    return obj(doc, props, required=("name",))


_QUANTITY = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
    "maxLength": 32,
    # The API server's own quantity syntax (as in the built-in ResourceRequirements schema).
    "pattern": (
        r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
        r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
    ),
}


def resources(doc: str, requests: Mapping[str, str], limits: Mapping[str, str]) -> dict[str, Any]:
    def quantities(what: str) -> dict[str, Any]:
        return {
            "type": "object",
            "description": f"{what}, for example cpu: 100m, memory: 256Mi.",
            "additionalProperties": dict(_QUANTITY),
            # Bounds the cost of the CEL rule below (the API server rejects unbounded maps).
            "maxProperties": 8,
        }

    return obj(
        f"{doc} Kubernetes resource requests and limits of each container.",
        {"requests": quantities("Minimum resources"), "limits": quantities("Maximum resources")},
        default={"requests": dict(requests), "limits": dict(limits)},
        rules=tuple(
            rule(
                f"!has(self.requests) || !has(self.limits) || !('{r}' in self.requests) || "
                f"!('{r}' in self.limits) || !isQuantity(string(self.requests['{r}'])) || "
                f"!isQuantity(string(self.limits['{r}'])) || "
                f"quantity(string(self.requests['{r}'])).compareTo("
                f"quantity(string(self.limits['{r}']))) <= 0",
                f"requests.{r} must not exceed limits.{r}",
            )
            # Named resources only: a rule over all keys costs too much for the API server.
            for r in ("cpu", "memory")
        ),
    )


def replicas(doc: str, default: int) -> dict[str, Any]:
    return integer(doc, default=default, minimum=0, maximum=100)


def image_override(doc: str) -> dict[str, Any]:
    return string(
        f"{doc} Empty: spec.image.", default="", maxLength=512, pattern=r"^\S*$",
    )


# ---------------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------------

# Which workers read a setting.
B, IN, F, T, A = ("bridge",), ("ingest",), ("inference",), ("train",), ("api",)
BI = ("bridge", "ingest")


def spec_schema() -> dict[str, Any]:
    mqtt = obj(
        "The MQTT broker the bridge subscribes to (HiveMQ, or any MQTT 5 broker).",
        {
            "host": string(
                "Broker host name or address, as the bridge pods reach it.",
                env=Env("MQTT_HOST", B), minLength=1, maxLength=253,
            ),
            "port": integer(
                "Broker port.", env=Env("MQTT_PORT", B), default=1883, minimum=1, maximum=65535,
            ),
            "topicRoot": string(
                "Topic root of this pipeline's readings: devices publish to "
                "<topicRoot>/<site>/<sensor>/<device>, and the bridge rejects (and counts) a "
                "topic outside it. Unset: the pipeline's name, so that pipelines sharing a "
                "broker do not read each other's devices.",
                env=Env("MQTT_TOPIC_ROOT", B), minLength=1, maxLength=512,
                pattern=f"^{TOPIC_ROOT.pattern}$",
            ),
            "topicFilter": string(
                "MQTT topic filter to bridge. Unset: <topicRoot>/#.",
                env=Env("MQTT_TOPIC_FILTER", B), minLength=1, maxLength=1024,
            ),
            "sharedGroup": string(
                "Shared-subscription group, so that the bridge replicas share the stream "
                "($share/<group>/<filter>). Unset: the pipeline's name. Empty: a plain "
                "subscription (every replica gets every message).",
                env=Env("MQTT_SHARED_GROUP", B), maxLength=128, pattern=r"^[^/+#]*$",
            ),
            "sessionExpirySeconds": integer(
                "How long the broker keeps a disconnected bridge's session and its "
                "unacknowledged messages.",
                env=Env("MQTT_SESSION_EXPIRY_S", B), default=86400, minimum=0,
            ),
            "credentialsSecret": secret_ref(
                "Secret with the MQTT user name and password (sets MQTT_USERNAME and "
                "MQTT_PASSWORD of the bridge). Absent: anonymous.",
                {"usernameKey": ("username", "the user name"),
                 "passwordKey": ("password", "the password")},
            ),
            "tls": obj(
                "TLS towards the broker (set port to its TLS listener, 8883 in the hivemq "
                "chart). The bridge always verifies the broker's certificate and host name.",
                {
                    "enabled": boolean(
                        "Connect with TLS, verifying the broker against the system's CAs (a "
                        "broker whose certificate a public CA signed). Not needed with "
                        "caSecret, which turns TLS on by itself.",
                        env=Env("MQTT_TLS", B),
                    ),
                    "caSecret": secret_ref(
                        "Secret holding the PEM certificate of the CA that signed the broker's "
                        "certificate (with the hivemq chart: its tls.secretName, key ca.crt): "
                        f"mounted into the bridge pods at {MQTT_CA_DIR}, which verify the "
                        "broker against it (sets MQTT_CA_FILE, which turns TLS on). Unset: the "
                        "system's CAs, with enabled.",
                        {"key": ("ca.crt", "the CA certificate")},
                    ),
                },
                # MQTT_CA_FILE turns TLS on whatever MQTT_TLS says: refuse the contradiction
                # rather than render a ConfigMap that claims plaintext.
                rules=(rule("!has(self.caSecret) || !has(self.enabled) || self.enabled",
                            "caSecret turns TLS on: remove enabled: false or the caSecret",
                            ".enabled"),),
            ),
        },
        required=("host",),
    )

    kafka = obj(
        "The Kafka cluster, and the topics the operator creates in it.",
        {
            "bootstrapServers": string(
                "Comma-separated host:port list of Kafka brokers, as the pods (and the "
                "operator) reach them.",
                env=Env("KAFKA_BOOTSTRAP_SERVERS", BI), minLength=1, maxLength=2048,
            ),
            "topicPrefix": string(
                "Topics are <prefix>.<sensor> (temperature, humidity, squarefootage, "
                "renewableenergy, energyconsumption), <prefix>.weather_forecast and "
                "<prefix>.deadletter. Unset: the pipeline's name.",
                env=Env("KAFKA_TOPIC_PREFIX", BI), minLength=1, maxLength=200,
                pattern=r"^[a-zA-Z0-9_-][a-zA-Z0-9._-]*$",
            ),
            "partitions": integer(
                "Partitions per topic (KAFKA_PARTITIONS in the ConfigMap). The operator grows "
                "existing topics when this grows; Kafka cannot remove partitions, so a value "
                "below the topics' current count is refused and reported as Degraded.",
                default=4, minimum=1, maximum=1000,
            ),
            "replicationFactor": integer(
                "Replicas per partition of newly created topics (KAFKA_REPLICATION_FACTOR in "
                "the ConfigMap). Existing topics keep theirs; a difference is reported as "
                "Degraded.",
                default=2, minimum=1, maximum=10,
            ),
            "minInSyncReplicas": integer(
                "min.insync.replicas of newly created topics. With the default 2 and "
                "replication factor 2 a reading is acknowledged only once both replicas hold "
                "it, so losing any one broker's disk loses nothing acknowledged; the cost: "
                "while a broker is down, writes to the partitions it holds stall (the bridge "
                "waits and MQTT keeps the readings) until it is back. 1 keeps writing through "
                "a broker outage, but a reading then acknowledged by one broker alone is lost "
                "with that broker's disk.",
                default=2, minimum=1, maximum=10,
            ),
            "brokers": integer(
                "Number of brokers, when known; replicationFactor is then checked against it "
                "at admission. The operator also checks the live broker count.",
                minimum=1, maximum=1000,
            ),
            "securityProtocol": string(
                "Protocol towards the brokers.",
                env=Env("KAFKA_SECURITY_PROTOCOL", BI), default="PLAINTEXT",
                enum=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
            ),
            "sasl": obj(
                "SASL authentication (requires securityProtocol SASL_PLAINTEXT or SASL_SSL).",
                {
                    "mechanism": string(
                        "SASL mechanism.", env=Env("KAFKA_SASL_MECHANISM", BI),
                        default="SCRAM-SHA-512",
                        enum=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
                    ),
                    "credentialsSecret": secret_ref(
                        "Secret with the SASL user name and password of the operator (topics), "
                        "and of the bridge and ingest workers unless their own are set (sets "
                        "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD).",
                        {"usernameKey": ("username", "the user name"),
                         "passwordKey": ("password", "the password")},
                    ),
                    "bridgeCredentialsSecret": secret_ref(
                        "The bridge's own SASL user (write to the topics), instead of "
                        "credentialsSecret.",
                        {"usernameKey": ("username", "the user name"),
                         "passwordKey": ("password", "the password")},
                    ),
                    "ingestCredentialsSecret": secret_ref(
                        "The ingest workers' own SASL user (read the topics, commit the "
                        "consumer group), instead of credentialsSecret.",
                        {"usernameKey": ("username", "the user name"),
                         "passwordKey": ("password", "the password")},
                    ),
                },
                required=("credentialsSecret",),
            ),
            "tls": obj(
                "TLS towards the brokers (securityProtocol SSL or SASL_SSL).",
                {
                    "caSecret": secret_ref(
                        "Secret holding the PEM certificate of the CA that signed the brokers' "
                        f"certificates: mounted into the bridge and ingest pods at {KAFKA_CA_DIR} "
                        "(sets KAFKA_CA_FILE) and read by the operator for its own connection. "
                        "Unset: the system's CAs.",
                        {"key": ("ca.crt", "the CA certificate")},
                    ),
                },
            ),
            "consumerGroup": string(
                "Consumer group of the ingest workers. Unset: <pipeline name>-ingest.",
                env=Env("KAFKA_CONSUMER_GROUP", IN), minLength=1, maxLength=249,
            ),
            "deleteTopicsOnDelete": boolean(
                "Delete the topics (and their data) when the EnergyPipeline is deleted. The "
                "operator then holds a finalizer on the resource until the topics are gone. "
                "Default: topics and data survive the resource.",
                default=False,
            ),
        },
        required=("bootstrapServers",),
        rules=(
            rule("!has(self.brokers) || self.replicationFactor <= self.brokers",
                 "replicationFactor must not exceed brokers", ".replicationFactor"),
            rule("self.minInSyncReplicas <= self.replicationFactor",
                 "minInSyncReplicas must not exceed replicationFactor", ".minInSyncReplicas"),
            rule("!has(self.sasl) || self.securityProtocol.startsWith('SASL_')",
                 "sasl needs securityProtocol SASL_PLAINTEXT or SASL_SSL", ".securityProtocol"),
            rule("!has(self.tls) || self.securityProtocol.endsWith('SSL')",
                 "tls needs securityProtocol SSL or SASL_SSL", ".securityProtocol"),
        ),
    )

    database = obj(
        "The PostgreSQL database. The operator applies the schema migrations itself.",
        {
            "urlSecret": secret_ref(
                "Secret holding the connection URL postgresql://user:password@host:5432/db "
                "(sets DATABASE_URL of ingest, inference and train, and of the read API unless "
                "api.databaseUrlSecret is set; the operator uses it for migrations).",
                {"key": ("url", "the URL")},
            ),
            "caSecret": secret_ref(
                "Secret holding the PEM certificate of the CA that signed the PostgreSQL "
                "server's certificate (the postgres chart's <release>-postgres-tls, key "
                "ca.crt). Mounted into the ingest, inference, train and api pods, which then "
                "connect with sslmode=verify-full (sets DATABASE_CA_FILE); the operator "
                "verifies its own connections with it too. An sslmode in the URL wins. "
                "Absent: libpq's default (sslmode=prefer, unverified).",
                {"key": ("ca.crt", "the CA certificate")},
            ),
            "schema": string(
                "PostgreSQL schema holding this pipeline's tables (set as search_path of "
                "every connection; the operator creates it when it migrates). Unset: the "
                "pipeline's name with '-' as '_'. public: the database's default schema.",
                env=Env("DATABASE_SCHEMA", ("ingest", "inference", "train", "api")),
                minLength=1, maxLength=63, pattern=f"^{SCHEMA_NAME.pattern}$",
            ),
        },
        required=("urlSecret",),
    )

    bridge = obj(
        "The bridge workers: MQTT shared subscription to Kafka.",
        {
            "replicas": replicas("Bridge pods.", 2),
            # CPU requests of every worker are what it uses at rest on the test node: with
            # them the default platform (3 brokers, a training Job) fits a 2-CPU kind node.
            "resources": resources("Bridge pods.", {"cpu": "50m", "memory": "128Mi"},
                                   {"memory": "256Mi"}),
            "receiveMaximum": integer(
                "Unacknowledged MQTT messages in flight per bridge.",
                env=Env("BRIDGE_RECEIVE_MAXIMUM", B), default=2000, minimum=1, maximum=65535,
            ),
            "lingerMs": integer(
                "Kafka producer batching delay.",
                env=Env("BRIDGE_LINGER_MS", B), default=1, minimum=0, maximum=10000,
            ),
            "connections": integer(
                "MQTT connections per bridge pod. HiveMQ CE hands a connection at most 50 "
                "unacknowledged messages at a time, so one connection carries about 1-2k msg/s; "
                "more than 1 splits mqtt.topicFilter (which must then be <root>/#) into one "
                "shared subscription per sensor type, <root>/+/<sensor>/#, each with a queue of "
                "its own, dealt over the connections. A topic naming no known sensor then "
                "matches no subscription: the broker answers PUBACK 0x10 (no matching "
                "subscribers) instead of the bridge dead-lettering it.",
                env=Env("BRIDGE_CONNECTIONS", B), default=1, minimum=1,
                maximum=len(SENSOR_NAMES),
            ),
        },
        default={},
    )

    ingestion = obj(
        "Ingestion: the bridge (MQTT to Kafka) and the ingest workers (Kafka to PostgreSQL).",
        {
            "replicas": replicas(
                "Ingest pods; at most spec.kafka.partitions (more would sit idle).", 2,
            ),
            "image": image_override("Image of the bridge and ingest containers."),
            "resources": resources("Ingest pods.", {"cpu": "100m", "memory": "256Mi"},
                                   {"memory": "512Mi"}),
            "batchSize": integer(
                "Most records written per database transaction.",
                env=Env("INGEST_BATCH_SIZE", IN), default=20000, minimum=1, maximum=100000,
            ),
            "batchMaxWaitMs": integer(
                "Longest wait to fill a batch.",
                env=Env("INGEST_BATCH_MAX_WAIT_MS", IN), default=250, minimum=1, maximum=60000,
            ),
            "sessionTimeoutMs": integer(
                "A silent ingest worker's partitions move to the others after this.",
                env=Env("KAFKA_SESSION_TIMEOUT_MS", IN), default=45000, minimum=1000,
                maximum=3600000,
            ),
            "dbRetryMaxSeconds": number(
                "Longest pause between database retries.",
                env=Env("DB_RETRY_MAX_S", IN), default=10.0, minimum=0.1, maximum=3600,
            ),
            "maxPayloadBytes": integer(
                "Larger messages are rejected to the dead-letter topic.",
                env=Env("MAX_PAYLOAD_BYTES", BI), default=4096, minimum=64, maximum=1048576,
            ),
            "maxFutureSeconds": integer(
                "Readings further ahead of the clock are rejected.",
                env=Env("MAX_FUTURE_S", BI), default=300, minimum=0,
            ),
            "bridge": bridge,
        },
        default={},
    )

    inference = obj(
        "The inference workers: LightGBM forecasts over gRPC, behind a headless Service.",
        {
            "replicas": replicas("Inference pods.", 2),
            "image": image_override("Image of the inference container."),
            "resources": resources("Inference pods.", {"cpu": "100m", "memory": "512Mi"},
                                   {"memory": "1Gi"}),
            "modelRefreshSeconds": integer(
                "How often the model registry is checked for a newly promoted model.",
                env=Env("MODEL_REFRESH_S", F), default=30, minimum=1, maximum=86400,
            ),
            "grpcMaxWorkers": integer(
                "Threads handling Forecast calls in each inference pod.",
                env=Env("GRPC_MAX_WORKERS", F), default=4, minimum=1, maximum=64,
            ),
            "tls": obj(
                "Mutual TLS between ingest (client) and inference (server). The operator "
                "issues both certificates from the CA, stores them in the Secrets "
                "<name>-inference-tls and <name>-ingest-tls (tls.crt, tls.key, ca.crt) mounted "
                "at /etc/energy-pipeline/grpc-tls, and issues them again after two thirds of "
                "their lifetime; the workers reload them without a restart.",
                {
                    "enabled": boolean(
                        "Require client certificates on the Forecaster service (the default). "
                        "false: plaintext gRPC, knowingly (the workers log a warning).",
                        env=Env("GRPC_TLS", ("ingest", "inference")), default=True,
                    ),
                    "caSecret": secret_ref(
                        "Your CA (tls.crt, tls.key) to issue from. Absent: the operator "
                        "creates <name>-grpc-ca once and never regenerates it.", {},
                    ),
                    "serverSecret": secret_ref(
                        "A Secret with the inference server certificate made by someone else "
                        "(e.g. a cert-manager Certificate: tls.crt, tls.key, ca.crt; DNS name "
                        "<name>-inference.<namespace>.svc.cluster.local). The operator then "
                        "issues none for the server.", {},
                    ),
                    "clientSecret": secret_ref(
                        "Likewise for ingest's client certificate.", {},
                    ),
                    "certificateLifetimeHours": integer(
                        "Lifetime of the certificates the operator issues; they are issued "
                        "again after two thirds of it.",
                        default=2160, minimum=1, maximum=87600,
                    ),
                },
                default={},
            ),
        },
        default={},
    )

    api = obj(
        "The read API (energy-pipeline api): readings, hourly features and forecasts from "
        "PostgreSQL as JSON or CSV under /api/v1, behind the Service <name>-api (ports api "
        "8000 and http 8080).",
        {
            "enabled": boolean(
                "Deploy the read API: Deployment, Service and PodDisruptionBudget <name>-api. "
                "Setting it back to false deletes them.",
                default=False,
            ),
            "replicas": replicas("API pods.", 1),
            "image": image_override("Image of the API container."),
            "resources": resources("API pods.", {"cpu": "100m", "memory": "128Mi"},
                                   {"memory": "256Mi"}),
            "databaseUrlSecret": secret_ref(
                "Secret holding the API's own connection URL, ideally of a read-only role "
                "(the postgres chart's <release>-postgres-reader, key DATABASE_URL). Absent: "
                "spec.database.urlSecret. "
                "Sets DATABASE_URL (api).",
                {"key": ("url", "the URL")},
            ),
            "tokensSecret": secret_ref(
                "Secret holding the API's tokens file: the clients that may read, one "
                "<client>:<sha256 hex of its token> per line (energy-pipeline api-token makes "
                "them), mounted into the API pods (API_TOKENS_FILE) and re-read when it "
                "changes. Absent: the operator creates Secret <name>-api-tokens once, with one "
                "random token for client default (key token; status.apiTokens.read says how "
                "to read it) and its entry (key tokens), and never changes it.",
                {"key": ("tokens", "the tokens file")},
            ),
            "rateLimit": number(
                "Requests per second each client may make on average (a token bucket per "
                "client; beyond it 429 with Retry-After); 0: no limit.",
                env=Env("API_RATE_LIMIT", A), default=10.0, minimum=0, maximum=100000,
            ),
            "rateBurst": integer(
                "Requests a client may make at once before rateLimit applies.",
                env=Env("API_RATE_BURST", A), default=20, minimum=1, maximum=100000,
            ),
            "defaultPageSize": integer(
                "Rows per page when a request gives no limit.",
                env=Env("API_DEFAULT_PAGE_SIZE", A), default=1000, minimum=1, maximum=100000,
            ),
            "maxPageSize": integer(
                "Largest limit a request may ask for (larger ones get a 400).",
                env=Env("API_MAX_PAGE_SIZE", A), default=10000, minimum=1, maximum=100000,
            ),
            "statementTimeoutMs": integer(
                "Longest a request may spend in the database; longer ones are cancelled "
                "(503).",
                env=Env("API_STATEMENT_TIMEOUT_MS", A), default=5000, minimum=10,
                maximum=600000,
            ),
            "dbPoolSize": integer(
                "Database connections (and query threads) per API pod.",
                env=Env("API_DB_POOL_SIZE", A), default=4, minimum=1, maximum=64,
            ),
        },
        default={},
        rules=(
            # has(): the API server also checks the rule against the section's default, {}.
            rule("!has(self.defaultPageSize) || !has(self.maxPageSize) || "
                 "self.defaultPageSize <= self.maxPageSize",
                 "defaultPageSize must not exceed maxPageSize", ".defaultPageSize"),
        ),
    )

    forecast = obj(
        "Forecasts: what ingest asks inference for, and how the model is retrained.",
        {
            "enabled": boolean(
                "Ask the inference service for forecasts as hours close (INFERENCE_TARGET of "
                "ingest is the headless Service; false leaves it empty, which turns forecasting "
                "off).",
                default=True,
            ),
            "horizons": integer(
                "Hours ahead forecast when a site's hour closes: every hour 1..horizons "
                "(168 = the next 7 days, hourly).",
                env=Env("FORECAST_HORIZONS", IN), default=168, minimum=1, maximum=168,
            ),
            "historyHours": integer(
                "Hours of hourly features sent with each forecast request.",
                env=Env("FORECAST_HISTORY_HOURS", IN), default=336, minimum=24, maximum=8760,
            ),
            "latenessSeconds": integer(
                "How long after an hour ends it is considered closed (late readings allowed).",
                env=Env("FORECAST_LATENESS_S", IN), default=120, minimum=0, maximum=86400,
            ),
            "deadlineMs": integer(
                "Deadline of one Forecast call.",
                env=Env("FORECAST_DEADLINE_MS", IN), default=2000, minimum=10, maximum=600000,
            ),
            "streamIdleSeconds": integer(
                "A device stream silent this long stops holding its site's hour open.",
                env=Env("FORECAST_STREAM_IDLE_S", IN), default=300, minimum=1, maximum=86400,
            ),
            "retrainSchedule": string(
                "Cron schedule of the training CronJob (five fields, or @daily and the like).",
                default="0 3 * * *", pattern=CRON, maxLength=128,
            ),
            "model": string(
                "The kind of model trained and served: default (LightGBM quantile boosters, "
                "P10/P50/P90) or seed (the original report's recipe: Savitzky-Golay "
                "smoothing, windows of 7 hours, seven per-step LightGBM models, P10 = P50 = "
                "P90). Training promotes only models of this kind; after a change the next "
                "training run's model replaces the promoted one of the other kind, which "
                "inference serves until then.",
                env=Env("FORECAST_MODEL", ("inference", "train")), default=DEFAULT_KIND,
                enum=list(SERVED_MODELS),
            ),
            "trainHistoryDays": integer(
                "Days of hourly features a training run learns from.",
                env=Env("TRAIN_HISTORY_DAYS", T), default=90, minimum=1, maximum=3650,
            ),
            "backtestDays": integer(
                "Latest days held out to backtest a new model; it is promoted only if it is "
                "not worse than the current one.",
                env=Env("TRAIN_BACKTEST_DAYS", T), default=14, minimum=1, maximum=365,
            ),
            "modelParameters": {
                "type": "object",
                "description": (
                    "Numeric hyper-parameters overriding the default model's, for example "
                    "learning_rate: 0.05, num_leaves: 15 (seed models keep the report's). Sets "
                    "TRAIN_MODEL_PARAMS (train) as JSON."
                ),
                "additionalProperties": {"type": "number"},
                "maxProperties": len(MODEL_PARAMETERS),
                "default": {},
                "x-kubernetes-validations": [rule(
                    "self.all(k, k in " + json.dumps(list(MODEL_PARAMETERS)).replace('"', "'")
                    + ")",
                    "unknown model parameter; known: " + ", ".join(MODEL_PARAMETERS),
                )],
                _ENV: Env("TRAIN_MODEL_PARAMS", T),
            },
            "trainingResources": resources(
                "Training Job pods.", {"cpu": "250m", "memory": "1Gi"}, {"memory": "2Gi"},
            ),
        },
        default={},
    )

    def peers(doc: str, default: list[dict[str, Any]]) -> dict[str, Any]:
        selector = {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                    "description": "A label selector (matchLabels, matchExpressions)."}
        return {
            "type": "array", "description": doc, "maxItems": 32, "default": default,
            "items": obj(
                "A NetworkPolicyPeer: podSelector and/or namespaceSelector, or ipBlock.",
                {"podSelector": selector, "namespaceSelector": selector,
                 "ipBlock": obj("Addresses (CIDR), minus `except`.",
                                {"cidr": string("CIDR.", minLength=1, maxLength=64),
                                 "except": {"type": "array", "maxItems": 32,
                                            "description": "CIDRs left out.",
                                            "items": {"type": "string", "maxLength": 64}}},
                                required=("cidr",))},
                minProperties=1,
            ),
        }

    network_policy = obj(
        "NetworkPolicies <name>-<worker> admitting only each worker's clients: gRPC (50051) "
        "of inference from this pipeline's ingest, the read API (8000) from apiFrom, /metrics "
        "(8080) from metricsFrom, nothing else (the kubelet's probes always pass). Ingress "
        "only; enforced only where a NetworkPolicy controller runs.",
        {
            "enabled": boolean(
                "Create the NetworkPolicies; false deletes them.", default=True),
            "apiFrom": peers(
                "Who may call the read API: the ingress controller (default: every pod in "
                "namespace ingress-nginx).",
                [{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": "ingress-nginx"}}}]),
            "metricsFrom": peers(
                "Who may scrape the workers' /metrics (port http, 8080). Empty: no one.", []),
        },
        default={},
    )

    monitoring = obj(
        "How a Prometheus finds the workers' /metrics (port http, 8080; a scraper must also be "
        "admitted by networkPolicy.metricsFrom).",
        {
            "scrapeAnnotations": boolean(
                "Annotate the worker pods prometheus.io/scrape, prometheus.io/port and "
                "prometheus.io/path, the convention of Prometheus' own Kubernetes example "
                "configuration.",
                default=True,
            ),
            "podMonitor": obj(
                "A PodMonitor <name> (monitoring.coreos.com/v1) selecting this pipeline's "
                "worker pods, created only while the Prometheus Operator's CRDs are in the "
                "cluster (the operator looks on every pass, so installing them later works).",
                {
                    "enabled": boolean(
                        "Create the PodMonitor when its CRD exists; false deletes it.",
                        default=True,
                    ),
                    "labels": {
                        "type": "object",
                        "description": "Labels of the PodMonitor, for the podMonitorSelector "
                                       "of your Prometheus resource (e.g. release: "
                                       "kube-prometheus-stack).",
                        "additionalProperties": {"type": "string", "maxLength": 63},
                        "maxProperties": 16,
                        "default": {},
                    },
                    "interval": string(
                        "Scrape interval.", default="30s", maxLength=16,
                        # The PodMonitor CRD's own duration pattern.
                        pattern=r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
                    ),
                },
                default={},
            ),
        },
        default={},
    )

    return obj(
        "Desired state of one energy pipeline: MQTT -> bridge -> Kafka -> ingest -> "
        "PostgreSQL, with LightGBM forecasts served over gRPC.",
        {
            "paused": boolean(
                "Leave every child (Deployments, CronJob, ConfigMap, topics, schema) untouched; "
                "status still reports what it observes. Set back to false to resume.",
                default=False,
            ),
            "image": string(
                "Container image of every worker (command energy-pipeline <worker>).",
                default=DEFAULT_IMAGE, minLength=1, maxLength=512, pattern=r"^\S+$",
            ),
            "imagePullPolicy": string(
                "Image pull policy of every container.", default="IfNotPresent",
                enum=["Always", "IfNotPresent", "Never"],
            ),
            "imagePullSecrets": {
                "type": "array",
                "description": "Secrets for pulling the image from a private registry.",
                "maxItems": 16,
                "items": obj(
                    "A Secret of type kubernetes.io/dockerconfigjson.",
                    {"name": string("Secret name.", minLength=1, maxLength=253,
                                    pattern=DNS_SUBDOMAIN)},
                    required=("name",),
                ),
            },
            "logLevel": string(
                "Log level of every worker.", env=Env("LOG_LEVEL", WORKERS), default="INFO",
                enum=["DEBUG", "INFO", "WARNING", "ERROR"],
            ),
            "mqtt": mqtt,
            "kafka": kafka,
            "database": database,
            "ingestion": ingestion,
            "inference": inference,
            "forecast": forecast,
            "api": api,
            "networkPolicy": network_policy,
            "monitoring": monitoring,
        },
        required=("mqtt", "kafka", "database"),
        rules=(
            rule("self.ingestion.replicas <= self.kafka.partitions",
                 "ingestion.replicas must not exceed kafka.partitions: a partition is read by "
                 "one ingest worker, extra workers would sit idle", ".ingestion.replicas"),
            rule("self.ingestion.bridge.connections == 1 || !has(self.mqtt.topicFilter) || "
                 "self.mqtt.topicFilter.matches('^[^+#]+/#$')",
                 "ingestion.bridge.connections above 1 splits mqtt.topicFilter by sensor type: "
                 "it must be <root>/# with no wildcard in <root>",
                 ".ingestion.bridge.connections"),
        ),
    )


# ---------------------------------------------------------------------------------------------
# The status
# ---------------------------------------------------------------------------------------------

CONDITION_TYPES = ("Ready", "Progressing", "Degraded")


def status_schema() -> dict[str, Any]:
    workload = obj(
        "Replica counts of one Deployment.",
        {
            "desired": integer("Replicas asked for."),
            "ready": integer("Pods passing their readiness probe."),
            "updated": integer("Pods running the current template."),
        },
    )
    condition = obj(
        "One aspect of the pipeline's state.",
        {
            "type": string("Ready, Progressing or Degraded."),
            "status": string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": string("CamelCase reason, for tools."),
            "message": string("What it means and what to do, for people."),
            "lastTransitionTime": string("When status last changed.", format="date-time"),
            "observedGeneration": integer("metadata.generation this condition describes."),
        },
        required=("type", "status"),
    )
    return obj(
        "Observed state, written by the operator.",
        {
            "observedGeneration": integer(
                "The metadata.generation the operator last reconciled."),
            "conditions": {
                "type": "array",
                "description": "Ready, Progressing and Degraded, each with reason and message.",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "paused": boolean("True while spec.paused holds the operator off."),
            "ingestion": string("Ready/desired pods of bridge plus ingest, e.g. 4/4."),
            "inference": string("Ready/desired inference pods, e.g. 2/2."),
            "api": string("Ready/desired read API pods, e.g. 1/1; absent while spec.api.enabled "
                          "is false."),
            "workloads": obj(
                "Replica counts per Deployment.",
                {"bridge": workload, "ingest": workload, "inference": workload,
                 "api": workload},
            ),
            "topics": obj(
                "The Kafka topics as last observed.",
                {
                    "names": {"type": "array", "description": "Topic names.",
                              "items": {"type": "string"}},
                    "partitions": integer("Smallest partition count among the topics."),
                    "replicationFactor": integer("Smallest replication factor among them."),
                    "state": string("Ready, Pending, Degraded or Unknown."),
                },
            ),
            "schemaVersion": integer("Database schema version in place."),
            "promotedModels": integer(
                "Promoted forecasting models in the registry; inference pods turn ready once "
                "there is one."),
            "firstTraining": obj(
                "While no model is promoted: the first training, which the operator starts as "
                "Job <name>-train-first once a site has enough history stored.",
                {
                    "state": string("WaitingForHistory, Running, Failed (tried again after "
                                    "retryAt), NoModel (the Job succeeded but promoted "
                                    "nothing), NotStarted or Paused."),
                    "job": string("The training Job, when there is one."),
                    "attempt": integer("The operator's try of Job <name>-train-first."),
                    "site": string("The site with the most history."),
                    "historyHours": integer(
                        "Closed hours with a consumption value of that site in the window a "
                        "training run reads (spec.forecast.trainHistoryDays)."),
                    "neededHours": integer(
                        "Hours the first training waits for: what the default model needs to "
                        "fit rather than fall back to seasonal naive (min_train_hours), at most "
                        "trainHistoryDays x 24."),
                    "retryAt": string("After a failure: when the next try starts.",
                                      format="date-time"),
                },
            ),
            "lastForecastTime": string("When the newest forecast was issued.", format="date-time"),
            "missingInputs": {
                "type": "array",
                "description": "Model inputs that sites' newest forecasts were made without "
                               "(absent when none): e.g. weather_forecast while no weather "
                               "forecast for the hours ahead has arrived on "
                               "<spec.mqtt.topicRoot>/<site>/weather_forecast/<source>; such "
                               "forecasts are those of the model as trained without it.",
                "items": obj(
                    "One input and the sites lacking it.",
                    {
                        "input": string("The input, e.g. weather_forecast."),
                        "sites": integer("How many sites' newest forecast lacked it."),
                        "siteNames": {"type": "array", "items": {"type": "string"},
                                      "description": "The first ten of them by name."},
                    },
                ),
            },
            "apiTokens": obj(
                "While spec.api.enabled: the Secret with the read API's tokens file.",
                {
                    "secret": string("Its name (spec.api.tokensSecret, or <name>-api-tokens "
                                     "made by the operator)."),
                    "read": string("For a Secret the operator made: the command that prints "
                                   "its token."),
                },
            ),
        },
    )


# ---------------------------------------------------------------------------------------------
# The CRD
# ---------------------------------------------------------------------------------------------

PRINTER_COLUMNS = (
    {"name": "Ready", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
     "description": "All children exist and their pods are ready"},
    {"name": "Reason", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].reason', "priority": 1,
     "description": "Why Ready has its status"},
    {"name": "Ingestion", "type": "string", "jsonPath": ".status.ingestion",
     "description": "Ready/desired bridge plus ingest pods"},
    {"name": "Inference", "type": "string", "jsonPath": ".status.inference",
     "description": "Ready/desired inference pods"},
    {"name": "Last forecast", "type": "date", "jsonPath": ".status.lastForecastTime",
     "description": "When the newest forecast was issued"},
    {"name": "API", "type": "string", "jsonPath": ".status.api", "priority": 1,
     "description": "Ready/desired read API pods (when spec.api.enabled)"},
    {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused", "priority": 1,
     "description": "The operator leaves the children untouched"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != _ENV}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def crd_manifest() -> dict[str, Any]:
    root = {
        "type": "object",
        "description": (
            "An energy pipeline: IoT building sensors over MQTT, through Kafka into "
            "PostgreSQL, with hourly LightGBM forecasts. The operator creates and keeps its "
            "Deployments, Services, CronJob, ConfigMap, PodDisruptionBudgets, ServiceAccount, "
            "Kafka topics and database schema."
        ),
        "properties": {
            "apiVersion": {"type": "string", "description": "API version of this object."},
            "kind": {"type": "string", "description": "EnergyPipeline."},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "required": ["spec"],
        "x-kubernetes-validations": [
            rule(f"self.metadata.name.size() <= {MAX_NAME_LENGTH} && "
                 "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                 f"metadata.name must be a DNS label of at most {MAX_NAME_LENGTH} characters "
                 "starting with a letter: child names (Service <name>-inference, CronJob "
                 "<name>-train) are derived from it"),
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "energy-operator",
                       "app.kubernetes.io/part-of": "energy-pipeline"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS],
                "schema": {"openAPIV3Schema": _strip(root)},
            }],
        },
    }


# ---------------------------------------------------------------------------------------------
# Views of the annotated schema
# ---------------------------------------------------------------------------------------------

def _walk(
    node: Mapping[str, Any], path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, (*path, name))


def settings() -> list[Setting]:
    """Every spec field that becomes an environment variable, in schema order."""
    out = []
    for path, node in _walk(spec_schema(), ()):
        env = node.get(_ENV)
        if env is not None:
            out.append(Setting(path, env.name, env.workers, _strip(node)))
    return out


def with_defaults(spec: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """`spec` with the CRD's defaults filled in, as the API server would store it, and with
    `name` (the pipeline's) also the defaults derived from it (`derived_defaults`).

    The API server already defaults what it stores; this makes rendering total for specs
    written before a field existed and for unit tests with minimal specs.
    """
    value = _default(spec_schema(), copy.deepcopy(dict(spec)))
    if name is not None:
        for path, derived in derived_defaults(name, value).items():
            if get_path(value, path) is None:
                value.setdefault(path[0], {})[path[1]] = derived
    return value


def derived_defaults(name: str, spec: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """What the fields that isolate pipelines from each other default to for pipeline `name`:
    its own MQTT topics and shared group, Kafka topics and consumer group, database schema.

    No static CRD default can depend on the object's name, so the operator fills these in;
    two pipelines that leave them unset never share a stream or a table. A value the spec
    sets wins (the filter follows the spec's topicRoot).
    """
    root = get_path(spec, ("mqtt", "topicRoot")) or name
    return {
        ("mqtt", "topicRoot"): name,
        ("mqtt", "topicFilter"): f"{root}/#",
        ("mqtt", "sharedGroup"): name,
        ("kafka", "topicPrefix"): name,
        ("kafka", "consumerGroup"): f"{name}-ingest",
        ("database", "schema"): name.replace("-", "_"),
    }


def _default(node: Mapping[str, Any], value: Any) -> Any:
    if not isinstance(value, dict) or node.get("type") != "object":
        return value
    for name, child in node.get("properties", {}).items():
        if name not in value and "default" in child:
            value[name] = copy.deepcopy(child["default"])
        if name in value:
            value[name] = _default(child, value[name])
    return value


def get_path(spec: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = spec
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def to_yaml(manifest: Mapping[str, Any]) -> str:
    header = (
        "# Generated by `python -m energy_harness.generate`"
        " from operator/energy_operator/crd.py.\n"
        "# Do not edit by hand; manifests/crd/ and charts/energy-operator/crds/ hold the same"
        " file.\n"
    )
    return header + yaml.safe_dump(dict(manifest), sort_keys=False, width=100)

