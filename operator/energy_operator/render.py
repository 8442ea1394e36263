"""Desired children of an EnergyPipeline, as plain manifests.

Pure functions: a defaulted spec in, dicts out. The handlers adopt them (owner references),
apply them with server-side apply, and never build objects themselves, so everything a
cluster will see is unit-tested here.

Environment: every non-secret setting is a key of the `<name>-config` ConfigMap (the key is
the environment variable's name); each container lists exactly the keys its worker reads
(configMapKeyRef) plus the credentials it needs (secretKeyRef). The pod template carries a
digest of those values, so a change in what a worker reads rolls that worker and no other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from energy_pipeline.api.auth import entry
from energy_pipeline.core.contracts import MIN_TRAIN_HOURS, all_kafka_topics

from energy_operator import certificates, crd
from energy_operator.naming import (
    API_PORT,
    APP_NAME,
    CLUSTER_DOMAIN,
    CONFIG_HASH_ANNOTATION,
    DEPLOYMENT_WORKERS,
    FIRST_TRAINING_ATTEMPT_ANNOTATION,
    GRPC_PORT,
    HTTP_PORT,
    OPTIONAL_WORKERS,
    POD_MONITOR,
    POD_MONITOR_API,
    ChildNames,
    labels,
    selector_labels,
)
from energy_operator.network_policy import API_VERSION as NETWORK_POLICY_API
from energy_operator.network_policy import KIND as NETWORK_POLICY
from energy_operator.network_policy import network_policies

# A numeric user, so the kubelet can verify runAsNonRoot whatever user the image names.
RUN_AS_USER = 10001
# The read API: after SIGTERM it finishes requests in flight for up to 15 s
# (energy_pipeline.api.server.SHUTDOWN_TIMEOUT_S). Before that, the preStop sleep gives the
# endpoints controller and the proxies time to stop routing new requests to a stopping pod.
API_PRESTOP_SLEEP_S = 5
API_TERMINATION_GRACE_S = 30
# The read API's tokens Secret is mounted as a directory (not subPath): the kubelet then
# swaps in a changed Secret, and the API re-reads the file without a restart.
API_TOKENS_DIR = "/var/run/secrets/energy-pipeline/api-tokens"
API_TOKENS_FILE = f"{API_TOKENS_DIR}/tokens"
# The client of the token the operator makes when spec.api.tokensSecret names no Secret.
DEFAULT_API_CLIENT = "default"

# spec.database.caSecret, mounted where DATABASE_CA_FILE points, in every pod that connects to
# PostgreSQL (the workers of DATABASE_URL).
DATABASE_CA_VOLUME = "database-ca"
DATABASE_CA_DIR = "/etc/energy-pipeline/database-ca"
DATABASE_CA_FILE = f"{DATABASE_CA_DIR}/ca.crt"
DATABASE_WORKERS = next(s.workers for s in crd.SECRET_SETTINGS if s.env == "DATABASE_URL")


@dataclass(frozen=True)
class Derived:
    """A ConfigMap key not copied from a spec field: computed from the pipeline's identity."""

    env: str
    workers: tuple[str, ...]
    doc: str


DERIVED_SETTINGS = (
    Derived("PIPELINE_NAME", crd.WORKERS, "metadata.name of the EnergyPipeline"),
    Derived("HTTP_PORT", ("bridge", "ingest", "inference", "api"),
            f"/metrics, /healthz and /readyz ({HTTP_PORT})"),
    Derived("GRPC_PORT", ("inference",), f"gRPC port of the Forecaster service ({GRPC_PORT})"),
    Derived("API_PORT", ("api",), f"port of the read API, /api/v1/... ({API_PORT})"),
    Derived("API_TOKENS_FILE", ("api",),
            f"the tokens file from spec.api.tokensSecret, mounted ({API_TOKENS_FILE})"),
    Derived("INFERENCE_TARGET", ("ingest",),
            "gRPC target of the headless inference Service, dns:///<name>-inference...:50051"),
    *(Derived(env, ("ingest", "inference"),
              f"{certificates.MOUNT_PATH}/{key} while spec.inference.tls.enabled (each side's "
              "own Secret, mounted there)")
      for env, key in certificates.TLS_FILES.items()),
    Derived("KAFKA_PARTITIONS", (), "spec.kafka.partitions (for `energy-pipeline topics create`)"),
    Derived("KAFKA_REPLICATION_FACTOR", (), "spec.kafka.replicationFactor (idem)"),
    Derived("DATABASE_CA_FILE", DATABASE_WORKERS,
            f"with spec.database.caSecret: where its CA certificate is mounted "
            f"({DATABASE_CA_FILE})"),
    Derived("KAFKA_CA_FILE", ("bridge", "ingest"),
            f"{crd.KAFKA_CA_FILE}, where spec.kafka.tls.caSecret is mounted (when set)"),
    Derived("MQTT_CA_FILE", ("bridge",),
            f"{crd.MQTT_CA_FILE}, where spec.mqtt.tls.caSecret is mounted (when set)"),
)
# No MQTT_CLIENT_ID: the bridge names its persistent session after its pod (HOSTNAME), after
# its MQTT user when it has one (`<user>-<pod>`, the only ids our HiveMQ extension admits for
# that user), which the operator cannot know (the user name is in a Secret).


def inference_target(name: str, namespace: str) -> str:
    """Every inference pod's address via DNS, for gRPC's client-side round robin."""
    host = f"{ChildNames(name).inference_service}.{namespace}.svc.{CLUSTER_DOMAIN}"
    return f"dns:///{host}:{GRPC_PORT}"


def config_data(name: str, namespace: str, spec: Mapping[str, Any]) -> dict[str, str]:
    """The ConfigMap: every non-secret setting, keyed by its environment variable (those
    derived from `name` included)."""
    spec = crd.with_defaults(spec, name)
    data: dict[str, str] = {}
    for setting in crd.settings():
        value = crd.get_path(spec, setting.path)
        if value is not None:
            data[setting.env] = setting.render(value)
    kafka = spec["kafka"]
    data.update({
        "PIPELINE_NAME": name,
        "HTTP_PORT": str(HTTP_PORT),
        "GRPC_PORT": str(GRPC_PORT),
        "API_PORT": str(API_PORT),
        "API_TOKENS_FILE": API_TOKENS_FILE,
        "INFERENCE_TARGET": (
            inference_target(name, namespace) if spec["forecast"]["enabled"] else ""
        ),
        "KAFKA_PARTITIONS": str(kafka["partitions"]),
        "KAFKA_REPLICATION_FACTOR": str(kafka["replicationFactor"]),
    })
    if spec["database"].get("caSecret"):
        data["DATABASE_CA_FILE"] = DATABASE_CA_FILE
    if crd.get_path(spec, ("kafka", "tls", "caSecret")):
        data["KAFKA_CA_FILE"] = crd.KAFKA_CA_FILE
    if crd.get_path(spec, ("mqtt", "tls", "caSecret")):
        data["MQTT_CA_FILE"] = crd.MQTT_CA_FILE
    if grpc_tls(spec):
        data.update(certificates.file_settings())
    return dict(sorted(data.items()))


def grpc_tls(spec: Mapping[str, Any]) -> bool:
    """Whether ingest and inference talk mutual TLS (and mount their certificates)."""
    return bool(spec["inference"]["tls"]["enabled"])


def config_keys(worker: str, data: Mapping[str, str]) -> list[str]:
    """The ConfigMap keys `worker` reads, in a stable order."""
    wanted = {s.env for s in crd.settings() if worker in s.workers}
    wanted |= {d.env for d in DERIVED_SETTINGS if worker in d.workers}
    return sorted(k for k in data if k in wanted)


def secret_env(worker: str, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for setting in crd.SECRET_SETTINGS:
        ref = setting.ref_for(worker, spec)
        if worker not in setting.workers or not ref:
            continue
        out.append({
            "name": setting.env,
            "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref[setting.key_field]}},
        })
    return out


def kafka_ca_secret(worker: str, spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """spec.kafka.tls.caSecret when `worker` talks to Kafka, else None."""
    if worker not in ("bridge", "ingest"):
        return None
    return crd.get_path(spec, ("kafka", "tls", "caSecret")) or None


def kafka_ca_volume(worker: str, spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Kafka CA Secret's one key as the file KAFKA_CA_FILE names (a Secret volume follows
    a renewed CA without a restart; librdkafka reads it when a client is made)."""
    return _ca_volume("kafka-ca", kafka_ca_secret(worker, spec))


def mqtt_ca_secret(worker: str, spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """spec.mqtt.tls.caSecret when `worker` is the bridge (the only MQTT client), else None."""
    if worker != "bridge":
        return None
    return crd.get_path(spec, ("mqtt", "tls", "caSecret")) or None


def mqtt_ca_volume(worker: str, spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The MQTT CA Secret's one key as the file MQTT_CA_FILE names: only the CA, since the
    Secret may be the broker's own, key included (the bridge reads the file when it starts)."""
    return _ca_volume("mqtt-ca", mqtt_ca_secret(worker, spec))


def _ca_volume(volume: str, ref: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A Secret volume holding only `ref`'s key, as the file ca.crt."""
    if ref is None:
        return None
    return {"name": volume, "secret": {
        "secretName": ref["name"], "items": [{"key": ref["key"], "path": "ca.crt"}]}}


def container_env(name: str, worker: str, spec: Mapping[str, Any],
                  data: Mapping[str, str]) -> list[dict[str, Any]]:
    config = ChildNames(name).config
    env: list[dict[str, Any]] = [
        {"name": key, "valueFrom": {"configMapKeyRef": {"name": config, "key": key}}}
        for key in config_keys(worker, data)
    ]
    env += secret_env(worker, spec)
    return sorted(env, key=lambda e: e["name"])


def config_hash(worker: str, env: list[dict[str, Any]], data: Mapping[str, str]) -> str:
    """Digest of what `worker` reads: its ConfigMap values and which secrets it references.

    Secret values are not hashed (the operator would need to read every Secret); pointing at
    another Secret or key does change the digest.
    """
    values = {key: data[key] for key in config_keys(worker, data)}
    doc = json.dumps({"config": values, "env": env}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def database_ca(worker: str, spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """spec.database.caSecret when `worker` connects to PostgreSQL and the spec sets one."""
    return spec["database"].get("caSecret") if worker in DATABASE_WORKERS else None


def _image(spec: Mapping[str, Any], worker: str) -> str:
    section = {"bridge": "ingestion", "ingest": "ingestion", "inference": "inference",
               "api": "api"}.get(worker)
    override = spec.get(section, {}).get("image") if section else ""
    return override or spec["image"]


def _resources(spec: Mapping[str, Any], worker: str) -> dict[str, Any]:
    source = {
        "bridge": spec["ingestion"]["bridge"],
        "ingest": spec["ingestion"],
        "inference": spec["inference"],
        "api": spec["api"],
    }.get(worker)
    found = source.get("resources") if source else spec["forecast"].get("trainingResources")
    return json.loads(json.dumps(found or {}))


def _http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def container(name: str, namespace: str, worker: str, spec: Mapping[str, Any],
              data: Mapping[str, str]) -> dict[str, Any]:
    ports = [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
    if worker == "inference":
        ports.append({"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"})
    if worker == "api":
        ports.append({"name": "api", "containerPort": API_PORT, "protocol": "TCP"})
    out: dict[str, Any] = {
        "name": worker,
        "image": _image(spec, worker),
        "imagePullPolicy": spec["imagePullPolicy"],
        "command": ["energy-pipeline", worker],
        "env": container_env(name, worker, spec, data),
        "ports": ports,
        "resources": _resources(spec, worker),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if database_ca(worker, spec):
        out["volumeMounts"].append(
            {"name": DATABASE_CA_VOLUME, "mountPath": DATABASE_CA_DIR, "readOnly": True})
    if kafka_ca_volume(worker, spec):
        out["volumeMounts"].append(
            {"name": "kafka-ca", "mountPath": crd.KAFKA_CA_DIR, "readOnly": True})
    if mqtt_ca_volume(worker, spec):
        out["volumeMounts"].append(
            {"name": "mqtt-ca", "mountPath": crd.MQTT_CA_DIR, "readOnly": True})
    if worker in certificates.SIDES and grpc_tls(spec):
        out["volumeMounts"].append(certificates.volume_mount())
    if worker != "train":
        # Startup allows a minute (inference loads its model first); then liveness is strict.
        out["startupProbe"] = _http_probe("/healthz", 2, 30)
        out["livenessProbe"] = _http_probe("/healthz", 10, 3)
        out["readinessProbe"] = _http_probe("/readyz", 5, 2)
    if worker == "api":
        out["lifecycle"] = {
            "preStop": {"exec": {"command": ["sleep", str(API_PRESTOP_SLEEP_S)]}}}
        out["volumeMounts"].append(
            {"name": "api-tokens", "mountPath": API_TOKENS_DIR, "readOnly": True})
    return out


def api_tokens_ref(name: str, spec: Mapping[str, Any]) -> dict[str, str]:
    """The Secret and key of the read API's tokens file: spec.api.tokensSecret, else the one
    the operator makes (`api_tokens_secret`)."""
    ref = spec["api"].get("tokensSecret")
    if ref:
        return {"name": ref["name"], "key": ref.get("key", "tokens")}
    return {"name": ChildNames(name).api_tokens, "key": "tokens"}


def api_tokens_secret(name: str, namespace: str, token: str) -> dict[str, Any]:
    """Secret <name>-api-tokens for a pipeline whose spec names none: `token` (made by the
    reconciler, which creates this only when absent) for the user to read, and its entry,
    the only key the API pods mount."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ChildNames(name).api_tokens, "namespace": namespace,
                     "labels": labels(name, "api")},
        "type": "Opaque",
        "stringData": {"token": token, "tokens": entry(DEFAULT_API_CLIENT, token) + "\n"},
    }


def read_token_command(name: str, namespace: str) -> str:
    """What prints the token of the Secret the operator made."""
    return (f"kubectl -n {namespace} get secret {ChildNames(name).api_tokens} "
            "-o jsonpath='{.data.token}' | base64 -d")


def pod_spec(name: str, namespace: str, worker: str, spec: Mapping[str, Any],
             data: Mapping[str, str]) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "serviceAccountName": ChildNames(name).service_account,
        # Workers never call the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container(name, namespace, worker, spec, data)],
        # The root filesystem is read-only; libraries still want a scratch directory.
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    ca = database_ca(worker, spec)
    if ca:
        pod["volumes"].append({"name": DATABASE_CA_VOLUME, "secret": {
            "secretName": ca["name"], "items": [{"key": ca["key"], "path": "ca.crt"}]}})
    if worker == "api":
        tokens = api_tokens_ref(name, spec)
        pod["volumes"].append({"name": "api-tokens", "secret": {
            "secretName": tokens["name"], "items": [{"key": tokens["key"], "path": "tokens"}],
            "defaultMode": 0o440}})
    ca_volume = kafka_ca_volume(worker, spec)
    if ca_volume:
        pod["volumes"].append(ca_volume)
    mqtt_volume = mqtt_ca_volume(worker, spec)
    if mqtt_volume:
        pod["volumes"].append(mqtt_volume)
    if worker in certificates.SIDES and grpc_tls(spec):
        # The kubelet updates the files in place when the Secret is renewed.
        pod["volumes"].append(certificates.volume(name, spec, worker))
    if spec.get("imagePullSecrets"):
        pod["imagePullSecrets"] = [{"name": s["name"]} for s in spec["imagePullSecrets"]]
    return pod


def deployment_replicas(spec: Mapping[str, Any], worker: str) -> int:
    return int({
        "bridge": spec["ingestion"]["bridge"]["replicas"],
        "ingest": spec["ingestion"]["replicas"],
        "inference": spec["inference"]["replicas"],
        "api": spec["api"]["replicas"],
    }[worker])


def deployment_workers(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The workers with a Deployment under this (defaulted) spec: optional ones when enabled."""
    return DEPLOYMENT_WORKERS + tuple(w for w in OPTIONAL_WORKERS if spec[w]["enabled"])


def deployment(name: str, namespace: str, worker: str, spec: Mapping[str, Any],
               data: Mapping[str, str]) -> dict[str, Any]:
    pod = pod_spec(name, namespace, worker, spec, data)
    selector = selector_labels(name, worker)
    pod["topologySpreadConstraints"] = [{
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": dict(selector)},
    }]
    # Graceful stop: the bridge acknowledges in-flight MQTT messages, ingest commits its batch;
    # the API sleeps in preStop, then drains its requests.
    pod["terminationGracePeriodSeconds"] = API_TERMINATION_GRACE_S if worker == "api" else 60
    env = pod["containers"][0]["env"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": ChildNames(name).deployment(worker), "namespace": namespace,
                     "labels": labels(name, worker)},
        "spec": {
            "replicas": deployment_replicas(spec, worker),
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": dict(selector)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels(name, worker),
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash(worker, env, data),
                                    **scrape_annotations(spec)},
                },
                "spec": pod,
            },
        },
    }


def scrape_annotations(spec: Mapping[str, Any]) -> dict[str, str]:
    """The prometheus.io/* convention (Prometheus' example kubernetes_sd configuration reads
    them); every worker with a Deployment serves /metrics on the same port."""
    if not spec["monitoring"]["scrapeAnnotations"]:
        return {}
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(HTTP_PORT),
            "prometheus.io/path": "/metrics"}


def pod_monitor(name: str, namespace: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The Prometheus Operator's scrape target for every worker pod of this pipeline."""
    settings = spec["monitoring"]["podMonitor"]
    return {
        "apiVersion": POD_MONITOR_API,
        "kind": POD_MONITOR,
        "metadata": {"name": ChildNames(name).pod_monitor, "namespace": namespace,
                     # The user's labels first: ours identify the child and must win.
                     "labels": {**settings["labels"], **labels(name, "metrics")}},
        "spec": {
            "selector": {
                "matchLabels": {"app.kubernetes.io/name": APP_NAME,
                                "app.kubernetes.io/instance": name},
                "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                      "values": list(DEPLOYMENT_WORKERS + OPTIONAL_WORKERS)}],
            },
            "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "scheme": "http",
                                     "interval": settings["interval"]}],
        },
    }


def inference_service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": ChildNames(name).inference_service, "namespace": namespace,
                     "labels": labels(name, "inference")},
        "spec": {
            # Headless: DNS returns the pods, and gRPC clients balance over them (a
            # ClusterIP would pin each long-lived HTTP/2 connection to one pod).
            "clusterIP": "None",
            # Every pod, ready or not: the clients check grpc.health.v1 themselves and call
            # only SERVING ones, the moment they turn SERVING. With ready pods only, a client
            # that resolved while one pod had its model and the other not yet would learn of
            # the second only at its next re-resolution (seen: one pod served all calls).
            "publishNotReadyAddresses": True,
            "selector": selector_labels(name, "inference"),
            "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc",
                       "protocol": "TCP", "appProtocol": "grpc"}],
        },
    }


def api_service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": ChildNames(name).api_service, "namespace": namespace,
                     "labels": labels(name, "api")},
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name, "api"),
            # api: /api/v1/... (what an Ingress routes to); http: /metrics and the probes.
            "ports": [
                {"name": "api", "port": API_PORT, "targetPort": "api", "protocol": "TCP",
                 "appProtocol": "http"},
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP",
                 "appProtocol": "http"},
            ],
        },
    }


def train_cronjob(name: str, namespace: str, spec: Mapping[str, Any],
                  data: Mapping[str, str]) -> dict[str, Any]:
    pod = pod_spec(name, namespace, "train", spec, data)
    pod["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": ChildNames(name).train, "namespace": namespace,
                     "labels": labels(name, "train")},
        "spec": {
            "schedule": spec["forecast"]["retrainSchedule"],
            # Two trainings at once would race to promote a model.
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels(name, "train")},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": 6 * 3600,
                    "ttlSecondsAfterFinished": 7 * 86400,
                    "template": {"metadata": {"labels": labels(name, "train")}, "spec": pod},
                },
            },
        },
    }


def first_training_job(name: str, namespace: str, spec: Mapping[str, Any],
                       attempt: int = 1) -> dict[str, Any]:
    """Job `<name>-train-first`: the CronJob's jobTemplate, run once without waiting for the
    schedule (what `kubectl create job --from=cronjob/<name>-train` makes by hand).

    `attempt` counts the operator's tries; a failed one is replaced by the next after a backoff
    (`status.plan_first_training`).
    """
    spec = crd.with_defaults(spec, name)
    template = train_cronjob(name, namespace, spec, config_data(name, namespace, spec))[
        "spec"]["jobTemplate"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": ChildNames(name).first_training,
            "namespace": namespace,
            "labels": labels(name, "train"),
            "annotations": {FIRST_TRAINING_ATTEMPT_ANNOTATION: str(attempt)},
        },
        "spec": template["spec"],
    }


def first_training_hours(spec: Mapping[str, Any]) -> int:
    """Closed hours with a consumption value one site needs before the first training starts.

    What `train`'s default model needs to fit its boosters instead of storing its fallback
    (MIN_TRAIN_HOURS, or spec.forecast.modelParameters.min_train_hours when set), but never
    more than a training run reads (spec.forecast.trainHistoryDays), and at least one hour
    (`train` skips a site without any).
    """
    forecast = crd.with_defaults(spec)["forecast"]
    wanted = forecast["modelParameters"].get("min_train_hours", MIN_TRAIN_HOURS)
    return max(1, min(int(wanted), int(forecast["trainHistoryDays"]) * 24))


def pod_disruption_budget(name: str, namespace: str, worker: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": ChildNames(name).pdb(worker), "namespace": namespace,
                     "labels": labels(name, worker)},
        # One pod at a time: drains proceed, and the stream never loses all its consumers.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(name, worker)}},
    }


def config_map(name: str, namespace: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ChildNames(name).config, "namespace": namespace,
                     "labels": labels(name, "config")},
        "data": dict(data),
    }


def service_account(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": ChildNames(name).service_account, "namespace": namespace,
                     "labels": labels(name, "workers")},
        "automountServiceAccountToken": False,
    }


def render_children(name: str, namespace: str, spec: Mapping[str, Any],
                    pod_monitors: bool = False) -> list[dict[str, Any]]:
    """Every child of one EnergyPipeline, in the order they are applied.

    `spec` may be partial: CRD defaults (and those derived from `name`) are filled in first.
    `pod_monitors`: the cluster serves the PodMonitor kind (the reconciler asks the API
    server's discovery).
    """
    spec = crd.with_defaults(spec, name)
    data = config_data(name, namespace, spec)
    workers = deployment_workers(spec)
    children = [service_account(name, namespace), config_map(name, namespace, data)]
    children += [deployment(name, namespace, w, spec, data) for w in workers]
    children.append(inference_service(name, namespace))
    if "api" in workers:
        children.append(api_service(name, namespace))
    children.append(train_cronjob(name, namespace, spec, data))
    children += [pod_disruption_budget(name, namespace, w) for w in workers]
    children += network_policies(name, namespace, spec, workers)
    if pod_monitors and spec["monitoring"]["podMonitor"]["enabled"]:
        children.append(pod_monitor(name, namespace, spec))
    return children


# Kinds of children that exist only while an optional part of the spec is enabled. A child of
# these kinds that this pipeline owns but no longer renders is deleted by the reconciler.
PRUNABLE_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"),
                  ("policy/v1", "PodDisruptionBudget"), (NETWORK_POLICY_API, NETWORK_POLICY))
# Prunable too, but listed only where the cluster serves the kind (a CRD of another project).
OPTIONAL_KINDS = ((POD_MONITOR_API, POD_MONITOR),)


def topic_names(spec: Mapping[str, Any], name: str | None = None) -> list[str]:
    """The pipeline's Kafka topics; `name` for a spec whose topicPrefix may be derived."""
    return all_kafka_topics(crd.with_defaults(spec, name)["kafka"]["topicPrefix"])


def desired_replicas(spec: Mapping[str, Any]) -> dict[str, int]:
    """Replicas of every Deployment this spec asks for (the optional ones when enabled)."""
    spec = crd.with_defaults(spec)
    return {w: deployment_replicas(spec, w) for w in deployment_workers(spec)}
