"""Rendering of an EnergyPipeline's children: pure functions, no cluster."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from energy_operator import crd, render
from energy_operator.naming import API_PORT, CONFIG_HASH_ANNOTATION, GRPC_PORT, HTTP_PORT

pytestmark = pytest.mark.unit

SPEC: dict[str, Any] = {
    "mqtt": {"host": "hivemq.energy.svc", "credentialsSecret": {"name": "mqtt-cred"}},
    "kafka": {"bootstrapServers": "kafka:9092", "topicPrefix": "site1"},
    "database": {"urlSecret": {"name": "pg", "key": "DATABASE_URL"}},
}


def children(spec: dict[str, Any] | None = None, name: str = "demo") -> dict[tuple[str, str], Any]:
    return {(c["kind"], c["metadata"]["name"]): c
            for c in render.render_children(name, "energy", spec or SPEC)}


def container(objs: dict[tuple[str, str], Any], worker: str) -> dict[str, Any]:
    if worker == "train":
        pod = objs[("CronJob", "demo-train")]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        pod = objs[("Deployment", f"demo-{worker}")]["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    return only


def env_names(c: dict[str, Any]) -> set[str]:
    return {e["name"] for e in c["env"]}


def with_changes(**sections: Any) -> dict[str, Any]:
    """SPEC with top-level values replaced, or sections (dicts) merged one level deep."""
    spec = copy.deepcopy(SPEC)
    for key, value in sections.items():
        if isinstance(value, dict):
            spec.setdefault(key, {}).update(value)
        else:
            spec[key] = value
    return spec


def test_children_and_their_names() -> None:
    assert sorted(children()) == sorted([
        ("ServiceAccount", "demo-workers"),
        ("ConfigMap", "demo-config"),
        ("Deployment", "demo-bridge"),
        ("Deployment", "demo-ingest"),
        ("Deployment", "demo-inference"),
        ("Service", "demo-inference"),
        ("CronJob", "demo-train"),
        ("PodDisruptionBudget", "demo-bridge"),
        ("PodDisruptionBudget", "demo-ingest"),
        ("PodDisruptionBudget", "demo-inference"),
        ("NetworkPolicy", "demo-bridge"),
        ("NetworkPolicy", "demo-ingest"),
        ("NetworkPolicy", "demo-inference"),
        ("NetworkPolicy", "demo-train"),
    ])
    for obj in children().values():
        assert obj["metadata"]["namespace"] == "energy"
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "energy-operator"


def test_config_map_holds_every_non_secret_setting_by_env_name() -> None:
    data = children()[("ConfigMap", "demo-config")]["data"]
    assert data["MQTT_HOST"] == "hivemq.energy.svc"
    assert data["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert data["KAFKA_TOPIC_PREFIX"] == "site1"
    assert data["KAFKA_PARTITIONS"] == "4" and data["KAFKA_REPLICATION_FACTOR"] == "2"
    assert data["PIPELINE_NAME"] == "demo"
    assert data["HTTP_PORT"] == str(HTTP_PORT) and data["GRPC_PORT"] == str(GRPC_PORT)
    assert data["INFERENCE_TARGET"] == (
        f"dns:///demo-inference.energy.svc.cluster.local:{GRPC_PORT}"
    )
    assert data["FORECAST_HORIZONS"] == "168"
    assert data["TRAIN_MODEL_PARAMS"] == "{}"
    # SASL is not configured: its mechanism is left to the workers' default.
    assert "KAFKA_SASL_MECHANISM" not in data
    # Credentials never land in a ConfigMap.
    assert not {"DATABASE_URL", "MQTT_PASSWORD", "MQTT_USERNAME",
                "KAFKA_SASL_PASSWORD"} & set(data)
    assert all(isinstance(v, str) for v in data.values())


def test_forecasting_off_leaves_the_inference_target_empty() -> None:
    data = render.config_data("demo", "energy",
                              crd.with_defaults(with_changes(forecast={"enabled": False})))
    assert data["INFERENCE_TARGET"] == ""


# Mutual TLS between ingest and inference is the default: both read all four.
GRPC_TLS = ("GRPC_TLS", "GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CA_FILE")


def test_each_worker_reads_exactly_its_settings() -> None:
    objs = children()
    bridge, ingest = container(objs, "bridge"), container(objs, "ingest")
    inference, train = container(objs, "inference"), container(objs, "train")
    common = {"PIPELINE_NAME", "LOG_LEVEL", "HTTP_PORT"}
    assert env_names(bridge) == common | {
        "MQTT_HOST", "MQTT_PORT", "MQTT_TOPIC_ROOT", "MQTT_TOPIC_FILTER", "MQTT_SHARED_GROUP",
        "MQTT_SESSION_EXPIRY_S", "MQTT_USERNAME", "MQTT_PASSWORD",
        "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC_PREFIX", "KAFKA_SECURITY_PROTOCOL",
        "BRIDGE_RECEIVE_MAXIMUM", "BRIDGE_LINGER_MS", "BRIDGE_CONNECTIONS", "MAX_PAYLOAD_BYTES",
        "MAX_FUTURE_S",
    }
    assert env_names(ingest) == common | {
        "DATABASE_URL", "DATABASE_SCHEMA", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC_PREFIX",
        "KAFKA_SECURITY_PROTOCOL", "KAFKA_CONSUMER_GROUP", "KAFKA_SESSION_TIMEOUT_MS",
        "INGEST_BATCH_SIZE", "INGEST_BATCH_MAX_WAIT_MS", "DB_RETRY_MAX_S", "MAX_PAYLOAD_BYTES",
        "MAX_FUTURE_S", "INFERENCE_TARGET", "FORECAST_HORIZONS", "FORECAST_LATENESS_S",
        "FORECAST_HISTORY_HOURS", "FORECAST_DEADLINE_MS", "FORECAST_STREAM_IDLE_S", *GRPC_TLS,
    }
    assert env_names(inference) == common | {
        "DATABASE_URL", "DATABASE_SCHEMA", "GRPC_PORT", "MODEL_REFRESH_S", "GRPC_MAX_WORKERS",
        "FORECAST_MODEL", *GRPC_TLS}
    # A Job serves no probes: no HTTP_PORT.
    assert env_names(train) == common - {"HTTP_PORT"} | {
        "DATABASE_URL", "DATABASE_SCHEMA", "TRAIN_HISTORY_DAYS", "TRAIN_BACKTEST_DAYS",
        "TRAIN_MODEL_PARAMS", "FORECAST_MODEL"}


def test_credentials_come_from_the_referenced_secrets() -> None:
    objs = children(with_changes(kafka={
        "securityProtocol": "SASL_SSL",
        "sasl": {"credentialsSecret": {"name": "kafka-user", "usernameKey": "u",
                                       "passwordKey": "p"}},
    }))
    env = {e["name"]: e for e in container(objs, "ingest")["env"]}
    assert env["DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "pg", "key": "DATABASE_URL"}}
    assert env["KAFKA_SASL_USERNAME"]["valueFrom"] == {
        "secretKeyRef": {"name": "kafka-user", "key": "u"}}
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "kafka-user", "key": "p"}}
    assert env["KAFKA_SASL_MECHANISM"]["valueFrom"]["configMapKeyRef"]["name"] == "demo-config"
    bridge = {e["name"]: e for e in container(objs, "bridge")["env"]}
    assert bridge["MQTT_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "mqtt-cred", "key": "password"}}
    # No client id from the operator: the bridge's default is `<MQTT user>-<pod name>`, the
    # only ids our HiveMQ extension admits for that user.
    assert "MQTT_CLIENT_ID" not in bridge
    for e in container(objs, "bridge")["env"] + container(objs, "ingest")["env"]:
        assert "value" not in e, f"{e['name']} must come from the ConfigMap or a Secret"


def test_without_mqtt_credentials_the_bridge_connects_anonymously() -> None:
    spec = with_changes()
    del spec["mqtt"]["credentialsSecret"]
    assert not {"MQTT_USERNAME", "MQTT_PASSWORD"} & env_names(container(children(spec), "bridge"))


def test_deployments_follow_the_spec() -> None:
    objs = children(with_changes(
        image="registry.example/energy:1.2.3",
        ingestion={"replicas": 3, "bridge": {"replicas": 1}},
        inference={"replicas": 4, "image": "registry.example/infer:9"},
    ))
    assert objs[("Deployment", "demo-ingest")]["spec"]["replicas"] == 3
    assert objs[("Deployment", "demo-bridge")]["spec"]["replicas"] == 1
    assert objs[("Deployment", "demo-inference")]["spec"]["replicas"] == 4
    assert container(objs, "ingest")["image"] == "registry.example/energy:1.2.3"
    assert container(objs, "bridge")["image"] == "registry.example/energy:1.2.3"
    assert container(objs, "inference")["image"] == "registry.example/infer:9"
    assert container(objs, "train")["image"] == "registry.example/energy:1.2.3"
    for worker in ("bridge", "ingest", "inference", "train"):
        assert container(objs, worker)["command"] == ["energy-pipeline", worker]


def test_default_image_and_resources() -> None:
    objs = children()
    assert container(objs, "ingest")["image"] == crd.DEFAULT_IMAGE
    assert container(objs, "ingest")["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    assert container(objs, "bridge")["resources"]["requests"]["cpu"] == "50m"
    assert container(objs, "train")["resources"]["limits"]["memory"] == "2Gi"


def test_probes_and_ports_on_the_health_endpoints() -> None:
    objs = children()
    for worker in ("bridge", "ingest", "inference"):
        c = container(objs, worker)
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"} in c["ports"]
    assert {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"} in container(
        objs, "inference")["ports"]
    assert "livenessProbe" not in container(objs, "train")


def test_pods_run_as_non_root_without_api_access() -> None:
    objs = children()
    for key in (("Deployment", "demo-bridge"), ("Deployment", "demo-ingest"),
                ("Deployment", "demo-inference")):
        pod = objs[key]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == "demo-workers"
        sc = pod["containers"][0]["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
    assert objs[("ServiceAccount", "demo-workers")]["automountServiceAccountToken"] is False


def test_selectors_match_pod_labels() -> None:
    objs = children()
    for worker in ("bridge", "ingest", "inference"):
        deployment = objs[("Deployment", f"demo-{worker}")]["spec"]
        selector = deployment["selector"]["matchLabels"]
        assert selector.items() <= deployment["template"]["metadata"]["labels"].items()
        assert objs[("PodDisruptionBudget", f"demo-{worker}")]["spec"] == {
            "maxUnavailable": 1, "selector": {"matchLabels": selector}}
    service = objs[("Service", "demo-inference")]["spec"]
    assert service["selector"] == objs[("Deployment", "demo-inference")]["spec"]["selector"][
        "matchLabels"]


def test_inference_service_is_headless_grpc() -> None:
    service = children()[("Service", "demo-inference")]["spec"]
    assert service["clusterIP"] == "None"
    # Clients health-check each pod, so they must know the pods that have no model yet.
    assert service["publishNotReadyAddresses"] is True
    assert service["ports"] == [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc",
                                 "protocol": "TCP", "appProtocol": "grpc"}]


def test_training_cronjob() -> None:
    cron = children(with_changes(forecast={"retrainSchedule": "@daily"}))[
        ("CronJob", "demo-train")]["spec"]
    assert cron["schedule"] == "@daily"
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def _hashes(spec: dict[str, Any]) -> dict[str, str]:
    objs = children(spec)
    return {w: objs[("Deployment", f"demo-{w}")]["spec"]["template"]["metadata"]["annotations"][
        CONFIG_HASH_ANNOTATION] for w in ("bridge", "ingest", "inference")}


def test_config_hash_rolls_exactly_the_workers_whose_settings_changed() -> None:
    before = _hashes(SPEC)
    assert _hashes(copy.deepcopy(SPEC)) == before  # deterministic
    horizons = _hashes(with_changes(forecast={"horizons": 24}))
    assert horizons["ingest"] != before["ingest"]
    assert horizons["bridge"] == before["bridge"]
    assert horizons["inference"] == before["inference"]
    kafka = _hashes(with_changes(kafka={"bootstrapServers": "other:9092"}))
    assert kafka["bridge"] != before["bridge"] and kafka["ingest"] != before["ingest"]
    assert kafka["inference"] == before["inference"]
    secret = _hashes(with_changes(database={"urlSecret": {"name": "pg2", "key": "url"}}))
    assert secret["inference"] != before["inference"] and secret["bridge"] == before["bridge"]
    # Replicas are not configuration: scaling never restarts pods.
    assert _hashes(with_changes(ingestion={"replicas": 1})) == before


def test_image_pull_secrets() -> None:
    objs = children(with_changes(imagePullSecrets=[{"name": "regcred"}]))
    pod = objs[("Deployment", "demo-ingest")]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_topic_names_and_desired_replicas() -> None:
    assert render.topic_names(SPEC) == [
        "site1.temperature", "site1.humidity", "site1.squarefootage", "site1.renewableenergy",
        "site1.energyconsumption", "site1.weather_forecast", "site1.deadletter"]
    assert render.desired_replicas(SPEC) == {"bridge": 2, "ingest": 2, "inference": 2}


# ---------------------------------------------------------------------------------------------
# The read API (spec.api)
# ---------------------------------------------------------------------------------------------

API_CHILDREN = {("Deployment", "demo-api"), ("Service", "demo-api"),
                ("PodDisruptionBudget", "demo-api"), ("NetworkPolicy", "demo-api")}


def test_api_children_exist_only_when_enabled() -> None:
    assert not API_CHILDREN & set(children())
    assert not API_CHILDREN & set(children(with_changes(api={"enabled": False})))
    enabled = children(with_changes(api={"enabled": True}))
    assert set(enabled) >= API_CHILDREN
    assert set(enabled) - API_CHILDREN == set(children())
    # What comes and goes with the spec is of a kind the reconciler prunes.
    kinds = {(o["apiVersion"], o["kind"]) for k, o in enabled.items() if k in API_CHILDREN}
    assert kinds <= set(render.PRUNABLE_KINDS)
    assert render.desired_replicas(with_changes(api={"enabled": True, "replicas": 3})) == {
        "bridge": 2, "ingest": 2, "inference": 2, "api": 3}


def test_api_deployment() -> None:
    objs = children(with_changes(api={"enabled": True, "replicas": 2}))
    deployment = objs[("Deployment", "demo-api")]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    c = container(objs, "api")
    assert c["command"] == ["energy-pipeline", "api"]
    assert c["image"] == crd.DEFAULT_IMAGE
    assert c["ports"] == [
        {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
        {"name": "api", "containerPort": API_PORT, "protocol": "TCP"},
    ]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Routed away first (preStop), then SIGTERM: the server drains for up to 15 s.
    assert c["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "5"]}}
    assert pod["terminationGracePeriodSeconds"] >= 5 + 15
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                              "limits": {"memory": "256Mi"}}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert env_names(c) == {"PIPELINE_NAME", "LOG_LEVEL", "HTTP_PORT", "DATABASE_URL",
                            "DATABASE_SCHEMA",
                            "API_PORT", "API_DEFAULT_PAGE_SIZE", "API_MAX_PAGE_SIZE",
                            "API_STATEMENT_TIMEOUT_MS", "API_DB_POOL_SIZE", "API_TOKENS_FILE",
                            "API_RATE_LIMIT", "API_RATE_BURST"}
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "api"
    assert objs[("PodDisruptionBudget", "demo-api")]["spec"] == {
        "maxUnavailable": 1, "selector": {"matchLabels": selector}}
    # The other workers stay exactly as they are without the API.
    without = children()
    for worker in ("bridge", "ingest", "inference"):
        key = ("Deployment", f"demo-{worker}")
        assert objs[key] == without[key]


def test_api_settings_come_from_the_config_map() -> None:
    spec = with_changes(api={"enabled": True, "defaultPageSize": 50, "maxPageSize": 500,
                             "statementTimeoutMs": 2500, "dbPoolSize": 8,
                             "image": "registry.example/api:2"})
    objs = children(spec)
    data = objs[("ConfigMap", "demo-config")]["data"]
    assert (data["API_PORT"], data["API_DEFAULT_PAGE_SIZE"], data["API_MAX_PAGE_SIZE"]) == (
        str(API_PORT), "50", "500")
    assert (data["API_STATEMENT_TIMEOUT_MS"], data["API_DB_POOL_SIZE"]) == ("2500", "8")
    c = container(objs, "api")
    assert c["image"] == "registry.example/api:2"
    for e in c["env"]:
        if e["name"] != "DATABASE_URL":
            assert e["valueFrom"]["configMapKeyRef"] == {"name": "demo-config", "key": e["name"]}


def test_api_database_url_prefers_its_own_secret() -> None:
    def url_ref(spec: dict[str, Any]) -> dict[str, Any]:
        env = {e["name"]: e for e in container(children(spec), "api")["env"]}
        return env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]

    # Without one: the workers' Secret.
    assert url_ref(with_changes(api={"enabled": True})) == {"name": "pg", "key": "DATABASE_URL"}
    own = with_changes(api={"enabled": True, "databaseUrlSecret": {"name": "energy-postgres",
                                                                  "key": "READER_DATABASE_URL"}})
    assert url_ref(own) == {"name": "energy-postgres", "key": "READER_DATABASE_URL"}
    # Only the API reads it; the workers keep theirs.
    env = {e["name"]: e for e in container(children(own), "ingest")["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "pg", "key": "DATABASE_URL"}
    # The key defaults like every Secret reference.
    assert url_ref(with_changes(api={"enabled": True, "databaseUrlSecret": {"name": "ro"}})) == {
        "name": "ro", "key": "url"}


def test_api_service_targets_the_named_ports() -> None:
    objs = children(with_changes(api={"enabled": True}))
    service = objs[("Service", "demo-api")]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["selector"] == objs[("Deployment", "demo-api")]["spec"]["selector"][
        "matchLabels"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["ports"]] == [
        ("api", API_PORT, "api"), ("http", HTTP_PORT, "http")]


def test_api_settings_roll_only_the_api() -> None:
    def hashes(spec: dict[str, Any]) -> dict[str, str]:
        objs = children(spec)
        return {k[1]: o["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
                for k, o in objs.items() if k[0] == "Deployment"}

    before = hashes(with_changes(api={"enabled": True}))
    after = hashes(with_changes(api={"enabled": True, "maxPageSize": 20000}))
    assert after["demo-api"] != before["demo-api"]
    assert {k: v for k, v in after.items() if k != "demo-api"} == {
        k: v for k, v in before.items() if k != "demo-api"}
    # Enabling the API changes nothing for the other workers either.
    assert {k: v for k, v in before.items() if k != "demo-api"} == hashes(SPEC)
    assert hashes(with_changes(api={"enabled": True, "replicas": 3})) == before


def test_database_ca_is_mounted_where_database_ca_file_points_in_every_database_worker() -> None:
    spec = with_changes(database={"caSecret": {"name": "energy-postgres-tls"}},
                        api={"enabled": True})
    objs = children(spec)
    assert objs[("ConfigMap", "demo-config")]["data"]["DATABASE_CA_FILE"] == (
        "/etc/energy-pipeline/database-ca/ca.crt")
    for worker in ("ingest", "inference", "train", "api"):
        c = container(objs, worker)
        env = {e["name"]: e for e in c["env"]}
        assert env["DATABASE_CA_FILE"]["valueFrom"] == {"configMapKeyRef": {
            "name": "demo-config", "key": "DATABASE_CA_FILE"}}, worker
        assert {"name": "database-ca", "mountPath": "/etc/energy-pipeline/database-ca",
                "readOnly": True} in c["volumeMounts"], worker
        pod = (objs[("CronJob", "demo-train")]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
               if worker == "train" else
               objs[("Deployment", f"demo-{worker}")]["spec"]["template"]["spec"])
        # Only the CA of the Secret (it may hold the server's key too), at a fixed name.
        assert {"name": "database-ca", "secret": {
            "secretName": "energy-postgres-tls",
            "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in pod["volumes"], worker
    # The bridge never connects to PostgreSQL.
    bridge = container(objs, "bridge")
    assert "DATABASE_CA_FILE" not in env_names(bridge)
    assert [m["name"] for m in bridge["volumeMounts"]] == ["tmp"]
    # The first-training Job is the CronJob's template, CA included.
    job = render.first_training_job("demo", "energy", spec)
    assert "DATABASE_CA_FILE" in env_names(job["spec"]["template"]["spec"]["containers"][0])
    # A CA newly referenced rolls the database workers, not the bridge.
    before, after = children(), objs
    for worker, rolled in (("bridge", False), ("ingest", True), ("inference", True)):
        hashes = [o[("Deployment", f"demo-{worker}")]["spec"]["template"]["metadata"][
            "annotations"][CONFIG_HASH_ANNOTATION] for o in (before, after)]
        assert (hashes[0] != hashes[1]) is rolled, worker


def test_without_a_database_ca_nothing_is_mounted() -> None:
    objs = children()
    assert "DATABASE_CA_FILE" not in objs[("ConfigMap", "demo-config")]["data"]
    for worker in ("ingest", "inference", "train"):
        c = container(objs, worker)
        assert "DATABASE_CA_FILE" not in env_names(c)
        # The gRPC certificates (mutual TLS by default) are ingest's and inference's only.
        grpc = ["grpc-tls"] if worker in ("ingest", "inference") else []
        assert [m["name"] for m in c["volumeMounts"]] == ["tmp", *grpc]
def test_api_pods_mount_the_tokens_secret_the_operator_makes_by_default() -> None:
    objs = children(with_changes(api={"enabled": True}))
    pod = objs[("Deployment", "demo-api")]["spec"]["template"]["spec"]
    c = container(objs, "api")
    data = objs[("ConfigMap", "demo-config")]["data"]
    assert data["API_TOKENS_FILE"] == "/var/run/secrets/energy-pipeline/api-tokens/tokens"
    assert (data["API_RATE_LIMIT"], data["API_RATE_BURST"]) == ("10", "20")
    # A directory mount (no subPath), so the kubelet swaps in a changed Secret.
    assert {"name": "api-tokens", "mountPath": "/var/run/secrets/energy-pipeline/api-tokens",
            "readOnly": True} in c["volumeMounts"]
    assert all("subPath" not in m for m in c["volumeMounts"])
    assert {"name": "api-tokens", "secret": {
        "secretName": "demo-api-tokens", "items": [{"key": "tokens", "path": "tokens"}],
        "defaultMode": 0o440}} in pod["volumes"]
    # Only the API mounts it, and the operator's Secret is not a rendered (applied) child.
    for worker in ("bridge", "ingest", "inference", "train"):
        assert all(v["name"] != "api-tokens" for v in (
            objs[("CronJob", "demo-train")]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            if worker == "train" else
            objs[("Deployment", f"demo-{worker}")]["spec"]["template"]["spec"])["volumes"])
    assert not [k for k in objs if k[0] == "Secret"]


def test_api_pods_mount_the_named_tokens_secret() -> None:
    spec = with_changes(api={"enabled": True, "rateLimit": 2.5, "rateBurst": 5,
                             "tokensSecret": {"name": "readers", "key": "clients"}})
    objs = children(spec)
    pod = objs[("Deployment", "demo-api")]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-tokens"]
    assert volume["secret"]["secretName"] == "readers"
    assert volume["secret"]["items"] == [{"key": "clients", "path": "tokens"}]
    data = objs[("ConfigMap", "demo-config")]["data"]
    assert (data["API_RATE_LIMIT"], data["API_RATE_BURST"]) == ("2.5", "5")
    assert render.api_tokens_ref("demo", crd.with_defaults(with_changes(
        api={"enabled": True, "tokensSecret": {"name": "readers"}})))["key"] == "tokens"


def test_the_operator_made_tokens_secret() -> None:
    from energy_pipeline.api.auth import parse_tokens

    secret = render.api_tokens_secret("demo", "energy", "the-token")
    assert secret["metadata"]["name"] == "demo-api-tokens"
    assert secret["metadata"]["namespace"] == "energy"
    assert secret["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
    assert secret["type"] == "Opaque"
    assert set(secret["stringData"]) == {"token", "tokens"}
    assert secret["stringData"]["token"] == "the-token"
    # The mounted key is a valid tokens file with the token's client.
    assert list(parse_tokens(secret["stringData"]["tokens"], "x")) == ["default"]
    assert render.read_token_command("demo", "energy") == (
        "kubectl -n energy get secret demo-api-tokens -o jsonpath='{.data.token}' | base64 -d")
    # Pure: the same token gives the same Secret.
    assert secret == render.api_tokens_secret("demo", "energy", "the-token")
def test_each_kafka_role_logs_in_as_itself_and_trusts_the_ca() -> None:
    user = {"usernameKey": "u", "passwordKey": "p"}
    objs = children(with_changes(kafka={
        "securityProtocol": "SASL_SSL",
        "sasl": {"credentialsSecret": {"name": "operator-user", **user},
                 "bridgeCredentialsSecret": {"name": "bridge-user", **user},
                 "ingestCredentialsSecret": {"name": "ingest-user", **user}},
        "tls": {"caSecret": {"name": "kafka-tls", "key": "ca.crt"}},
    }))
    for worker in ("bridge", "ingest"):
        c = container(objs, worker)
        env = {e["name"]: e for e in c["env"]}
        assert env["KAFKA_SASL_USERNAME"]["valueFrom"] == {
            "secretKeyRef": {"name": f"{worker}-user", "key": "u"}}
        assert env["KAFKA_SASL_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": f"{worker}-user", "key": "p"}}
        assert env["KAFKA_CA_FILE"]["valueFrom"] == {
            "configMapKeyRef": {"name": "demo-config", "key": "KAFKA_CA_FILE"}}
        assert {"name": "kafka-ca", "mountPath": "/etc/energy-pipeline/kafka-ca",
                "readOnly": True} in c["volumeMounts"]
        pod = objs[("Deployment", f"demo-{worker}")]["spec"]["template"]["spec"]
        assert {"name": "kafka-ca", "secret": {
            "secretName": "kafka-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in \
            pod["volumes"]
    assert objs[("ConfigMap", "demo-config")]["data"]["KAFKA_CA_FILE"] == (
        "/etc/energy-pipeline/kafka-ca/ca.crt")
    # Workers that never talk to Kafka get neither.
    inference = container(objs, "inference")
    assert "KAFKA_CA_FILE" not in env_names(inference)
    assert [m["name"] for m in inference["volumeMounts"]] == ["tmp", "grpc-tls"]


def pod_template(objs: dict[tuple[str, str], Any], worker: str) -> dict[str, Any]:
    if worker == "train":
        return objs[("CronJob", "demo-train")]["spec"]["jobTemplate"]["spec"]["template"]
    return objs[("Deployment", f"demo-{worker}")]["spec"]["template"]


def test_the_bridge_verifies_the_mqtt_broker_against_the_ca_secret() -> None:
    plain = with_changes(api={"enabled": True})
    tls = with_changes(api={"enabled": True}, mqtt={
        "port": 8883, "tls": {"caSecret": {"name": "energy-hivemq-tls"}}})
    before, objs = children(plain), children(tls)
    assert objs[("ConfigMap", "demo-config")]["data"]["MQTT_CA_FILE"] == (
        "/etc/energy-pipeline/mqtt-ca/ca.crt")
    bridge = container(objs, "bridge")
    env = {e["name"]: e for e in bridge["env"]}
    assert env["MQTT_CA_FILE"]["valueFrom"] == {
        "configMapKeyRef": {"name": "demo-config", "key": "MQTT_CA_FILE"}}
    # The CA file alone turns TLS on in the bridge; MQTT_TLS stays unset.
    assert "MQTT_TLS" not in env
    assert {"name": "mqtt-ca", "mountPath": "/etc/energy-pipeline/mqtt-ca",
            "readOnly": True} in bridge["volumeMounts"]
    # Only the CA (the default key ca.crt), never the broker's key of the same Secret.
    assert {"name": "mqtt-ca", "secret": {
        "secretName": "energy-hivemq-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in \
        pod_template(objs, "bridge")["spec"]["volumes"]
    # A CA newly referenced rolls the bridge...
    hashes = [pod_template(o, "bridge")["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
              for o in (before, objs)]
    assert hashes[0] != hashes[1]
    # ... and no other worker: their pods are exactly what they were.
    for worker in ("ingest", "inference", "api", "train"):
        assert pod_template(objs, worker) == pod_template(before, worker), worker
        assert "MQTT_CA_FILE" not in env_names(container(objs, worker)), worker
    # Another key of the Secret is mounted under the same file name.
    other = children(with_changes(mqtt={"tls": {"caSecret": {"name": "corp", "key": "ca.pem"}}}))
    (volume,) = [v for v in pod_template(other, "bridge")["spec"]["volumes"]
                 if v["name"] == "mqtt-ca"]
    assert volume["secret"] == {"secretName": "corp",
                                "items": [{"key": "ca.pem", "path": "ca.crt"}]}


def test_mqtt_tls_with_the_system_cas_and_without_tls() -> None:
    objs = children(with_changes(mqtt={"tls": {"enabled": True}}))
    data = objs[("ConfigMap", "demo-config")]["data"]
    assert data["MQTT_TLS"] == "true" and "MQTT_CA_FILE" not in data
    bridge = container(objs, "bridge")
    assert "MQTT_TLS" in env_names(bridge) and "MQTT_CA_FILE" not in env_names(bridge)
    assert [m["name"] for m in bridge["volumeMounts"]] == ["tmp"]
    assert [v["name"] for v in pod_template(objs, "bridge")["spec"]["volumes"]] == ["tmp"]
    # No spec.mqtt.tls: neither key, so the bridge's defaults (plain MQTT) hold.
    default = children()[("ConfigMap", "demo-config")]["data"]
    assert not {"MQTT_TLS", "MQTT_CA_FILE"} & set(default)


def _matches(selector: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions with In) against a pod's labels."""
    if any(pod_labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        if pod_labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_worker_pods_carry_the_prometheus_scrape_annotations_unless_turned_off() -> None:
    spec = with_changes(api={"enabled": True})
    for worker in ("bridge", "ingest", "inference", "api"):
        template = children(spec)[("Deployment", f"demo-{worker}")]["spec"]["template"]
        port = str(HTTP_PORT)
        assert {k: v for k, v in template["metadata"]["annotations"].items()
                if k.startswith("prometheus.io/")} == {
            "prometheus.io/scrape": "true", "prometheus.io/port": port,
            "prometheus.io/path": "/metrics"}
        # The annotated port is the one the container serves /metrics on.
        (only,) = template["spec"]["containers"]
        assert {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"} in only["ports"]
    off = with_changes(monitoring={"scrapeAnnotations": False})
    template = children(off)[("Deployment", "demo-bridge")]["spec"]["template"]
    assert not any(k.startswith("prometheus.io/") for k in template["metadata"]["annotations"])


def test_a_pod_monitor_selects_every_worker_pod_of_its_pipeline_only_where_served() -> None:
    spec = with_changes(api={"enabled": True},
                        monitoring={"podMonitor": {"labels": {"release": "prom"},
                                                   "interval": "15s"}})
    assert ("PodMonitor", "demo") not in children(spec)  # the kind is not served
    objs = {(c["kind"], c["metadata"]["name"]): c
            for c in render.render_children("demo", "energy", spec, pod_monitors=True)}
    monitor = objs[("PodMonitor", "demo")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "http", "path": "/metrics", "scheme": "http", "interval": "15s"}]
    selector = monitor["spec"]["selector"]
    pods = {name: obj["spec"]["template"]["metadata"]["labels"]
            for (kind, name), obj in objs.items() if kind == "Deployment"}
    assert set(pods) == {"demo-bridge", "demo-ingest", "demo-inference", "demo-api"}
    assert all(_matches(selector, labels) for labels in pods.values())
    # Not the training Job's pods (no /metrics) nor another pipeline's workers.
    train = objs[("CronJob", "demo-train")]["spec"]["jobTemplate"]["spec"]["template"]
    assert not _matches(selector, train["metadata"]["labels"])
    other = children(name="other")[("Deployment", "other-bridge")]
    assert not _matches(selector, other["spec"]["template"]["metadata"]["labels"])
    disabled = with_changes(monitoring={"podMonitor": {"enabled": False}})
    assert not [c for c in render.render_children("demo", "energy", disabled, pod_monitors=True)
                if c["kind"] == "PodMonitor"]
