"""The charts as `helm lint` and `helm template` see them: pure checks of the rendered YAML.

Marked `cluster`: the helm binary comes from the cached Kubernetes tools build (no API
server is started here).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from energy_harness.localstack.kafka import role_acls
from energy_harness.localstack.kube_install import ensure_kube_tools

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
CHART_NAMES = ("kafka", "hivemq", "postgres", "grafana", "energy-operator", "energy-platform")

# What a production install would set: persistence on, SASL/SCRAM and TLS on Kafka, HiveMQ
# with another security extension than the default one, Prometheus, an Ingress host with TLS.
PRODUCTION_VALUES = {
    "kafka": {
        "persistence": {"enabled": True, "storageClass": "fast-ssd", "size": "100Gi"},
        "auth": {"sasl": {"enabled": True}, "tls": {"enabled": True, "secretName": "kafka-tls"}},
        "podAntiAffinity": "hard",
    },
    # HiveMQ's own File RBAC extension instead of ours (the default secure mode), over TLS.
    "hivemq": {
        "secure": False,
        "tls": {"enabled": True},
        "auth": {
            "allowAllClients": False,
            "fileRbac": {"enabled": True, "image": "registry.example/hivemq-file-rbac:4.6.6",
                         "credentialsSecret": "mqtt-credentials"},
        },
    },
    "postgres": {"persistence": {"enabled": True, "size": "50Gi"}},
    "grafana": {
        "prometheus": {"enabled": True, "url": "http://prometheus.monitoring.svc:9090"},
        "ingress": {"host": "grafana.energy.example", "tlsSecret": "grafana-tls"},
        "persistence": {"enabled": True},
        "alerts": {"forecastConsumption": {"threshold": 420.5}, "staleData": {"afterSeconds": 600},
                   "readingsLost": {"withinHours": 48, "moreThan": 5}},
    },
    "simulator": {"enabled": False},
}


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_kube_tools().helm


def run_helm(helm: Path, *args: str) -> str:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def platform_chart(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the charts with the umbrella's dependencies built (nothing written in-tree)."""
    copy = tmp_path_factory.mktemp("charts") / "charts"
    shutil.copytree(CHARTS, copy, ignore=shutil.ignore_patterns("charts", "__pycache__"))
    run_helm(helm, "dependency", "build", str(copy / "energy-platform"))
    return copy / "energy-platform"


def render(helm: Path, chart: Path, values: dict[str, Any] | None = None,
           tmp: Path | None = None) -> list[dict[str, Any]]:
    args = ["template", "energy", str(chart), "--namespace", "energy"]
    if values is not None:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    return [d for d in yaml.safe_load_all(run_helm(helm, *args)) if d]


@pytest.fixture(scope="module")
def default_docs(helm: Path, platform_chart: Path) -> list[dict[str, Any]]:
    return render(helm, platform_chart)


@pytest.fixture(scope="module")
def production_docs(helm: Path, platform_chart: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(helm, platform_chart, PRODUCTION_VALUES, tmp_path_factory.mktemp("prod"))


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CHART_NAMES)
def test_helm_lint_passes(helm: Path, platform_chart: Path, name: str) -> None:
    chart = platform_chart.parent / name
    out = run_helm(helm, "lint", "--strict", str(chart))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_umbrella_lint_passes_with_production_values(
    helm: Path, platform_chart: Path, tmp_path: Path
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(PRODUCTION_VALUES))
    run_helm(helm, "lint", "--strict", str(platform_chart), "--values", str(path))


@pytest.mark.parametrize("name", CHART_NAMES[:-1])
def test_each_chart_renders_alone_with_defaults(
    helm: Path, platform_chart: Path, name: str
) -> None:
    docs = render(helm, platform_chart.parent / name)
    assert docs


def test_values_schema_rejects_bad_values(helm: Path, platform_chart: Path) -> None:
    result = subprocess.run(
        [str(helm), "template", "x", str(platform_chart), "--set", "kafka.replicaCount=0",
         "--set", "grafana.alerts.staleData.for=soon"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "replicaCount" in result.stderr and "for" in result.stderr


@pytest.mark.parametrize("docs_fixture", ["default_docs", "production_docs"])
def test_workloads_run_as_non_root_with_resources_and_probes(
    request: pytest.FixtureRequest, docs_fixture: str
) -> None:
    docs = request.getfixturevalue(docs_fixture)
    specs = dict(pod_specs(docs))
    assert specs
    for name, spec in specs.items():
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, name
        assert pod_sc.get("runAsUser", 0) != 0, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert sc.get("runAsUser", pod_sc["runAsUser"]) != 0, where
            resources = container.get("resources", {})
            assert resources.get("requests", {}).get("cpu"), where
            assert resources.get("requests", {}).get("memory"), where
            assert resources.get("limits", {}).get("memory"), where
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                # Kubernetes' default of 1 s fails a probe whenever the node is busy for a
                # second (an exec probe starts a process): seen killing the simulator and
                # failing Kafka's users container on the node right after an install.
                if kind in container:
                    assert container[kind].get("timeoutSeconds", 1) >= 5, f"{where} {kind}"
        if name.startswith("Job/"):
            # One-shot (the chart's hook): bounded by a deadline instead of probed.
            doc = next(d for d in docs
                       if d["kind"] == "Job" and f"Job/{d['metadata']['name']}" == name)
            assert doc["spec"]["activeDeadlineSeconds"] > 0, name
            continue
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            assert "livenessProbe" in container, where
            # The simulator has no endpoint to be ready on; every service has one.
            if container["name"] != "simulator":
                assert "readinessProbe" in container, where


# The charts' own Secrets, generated at render time with Helm's `lookup` (each chart's
# alternative to the platform hook, which makes them by default).
CHART_SECRETS = {"postgres": {"auth": {"createSecrets": True}},
                 "grafana": {"admin": {"createSecret": True}},
                 "kafka": {"auth": {"sasl": {"createSecret": True}}}}


@pytest.fixture(scope="module")
def chart_secret_docs(helm: Path, platform_chart: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        return {**base, **{k: merged(base.get(k, {}), v) if isinstance(v, dict) else v
                           for k, v in extra.items()}}

    values = merged(PRODUCTION_VALUES, CHART_SECRETS)
    return render(helm, platform_chart, values, tmp_path_factory.mktemp("chart-secrets"))


def test_the_default_render_holds_no_password(default_docs: list[dict[str, Any]]) -> None:
    """Nothing secret is generated at render time: `helm template`, --dry-run and GitOps tools
    render the same manifests every time; the hook Job makes every credential once, in the
    cluster (test_platform_secrets)."""
    assert [d["metadata"]["name"] for d in default_docs if d["kind"] == "Secret"] == []
    args = by_kind(default_docs, "Job")["energy-platform-secrets"]["spec"]["template"][
        "spec"]["containers"][0]["args"]
    at = "energy-postgres.energy.svc:5432/energy"
    assert [a for a in args if a.startswith("--login=")] == [
        "--login=energy-postgres-superuser=postgres",
        f"--login=energy-postgres-app=energy;url={at}",
        f"--login=energy-postgres-reader=grafana_reader;url={at}",
        "--login=energy-grafana-admin=admin;keys=admin-user,admin-password",
    ]


def test_the_hooks_role_secrets_have_the_postgres_charts_layout(
    default_docs: list[dict[str, Any]], chart_secret_docs: list[dict[str, Any]],
) -> None:
    """What the workers, Grafana and the server read is the same whoever made the Secret."""
    from energy_operator import platform_secrets

    args = by_kind(default_docs, "Job")["energy-platform-secrets"]["spec"]["template"][
        "spec"]["containers"][0]["args"]
    for arg in (a.removeprefix("--login=") for a in args if a.startswith("--login=")):
        made = platform_secrets.plan_login(None, platform_secrets.parse_login(arg), "energy",
                                           "energy")
        assert isinstance(made, platform_secrets.Write)
        hook = {k: base64.b64decode(v).decode() for k, v in made.manifest["data"].items()}
        chart = {k: base64.b64decode(v).decode()
                 for k, v in by_kind(chart_secret_docs, "Secret")[made.name]["data"].items()}
        assert set(hook) == set(chart), made.name
        for key in hook:
            assert hook[key].replace(hook.get("password", hook.get("admin-password")), "PW") == (
                chart[key].replace(chart.get("password", chart.get("admin-password")), "PW")), (
                made.name, key)


def test_no_secret_value_outside_its_secret(chart_secret_docs: list[dict[str, Any]]) -> None:
    docs = chart_secret_docs
    secrets = [d for d in docs if d["kind"] == "Secret"]
    assert secrets
    values = set()
    for secret in secrets:
        for key, encoded in secret.get("data", {}).items():
            value = base64.b64decode(encoded).decode()
            if key in {"admin-user", "client-username", "username"} or key.endswith("-username"):
                continue  # names, not secrets
            values.add(value)
            # Passwords in URLs: the password itself must not leak either.
            values.update(re.findall(r"//[^:]+:([^@]+)@", value))
    others = [d for d in docs if d["kind"] != "Secret"]
    text = yaml.safe_dump_all(others)
    for value in values:
        assert len(value) >= 16
        assert value not in text
    # And no ConfigMap holds anything that looks like a credential assignment.
    for cm in by_kind(docs, "ConfigMap").values():
        for key, body in cm.get("data", {}).items():
            assert not re.search(r"password\s*[=:]\s*['\"]?[A-Za-z0-9]{8,}", body, re.I), (
                f"{cm['metadata']['name']}/{key}"
            )


def test_generated_passwords_differ_between_renders(helm: Path, platform_chart: Path,
                                                   tmp_path: Path) -> None:
    """The charts' own (kept by lookup across upgrades): never a constant in the chart."""
    first, second = (
        {d["metadata"]["name"]: d["data"] for d in render(helm, platform_chart, CHART_SECRETS,
                                                            tmp)
         if d["kind"] == "Secret"}
        for tmp in (tmp_path, tmp_path)
    )
    for role in ("superuser", "app", "reader"):
        name = f"energy-postgres-{role}"
        assert first[name]["password"] != second[name]["password"]
    assert first["energy-grafana-admin"]["admin-password"] != (
        second["energy-grafana-admin"]["admin-password"]
    )


def test_kafka_statefulset(default_docs: list[dict[str, Any]]) -> None:
    sts = by_kind(default_docs, "StatefulSet")["energy-kafka"]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    pod = sts["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"].startswith("apache/kafka:4.")
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    # An empty volume is checked against the running cluster before it is formatted.
    assert env["KAFKA_EMPTY_VOLUME_GUARD"]["value"] == "true"
    assert env["KAFKA_EMPTY_VOLUME_CONTACT_S"]["value"] == "20"
    scripts = by_kind(default_docs, "ConfigMap")["energy-kafka-config"]["data"]
    chart_files = Path(__file__).parents[2] / "charts" / "kafka" / "files"
    for script in ("start.sh", "empty-volume.sh", "admin-client.sh"):
        assert scripts[script] == (chart_files / script).read_text()
    assert "empty-volume.sh" in scripts["start.sh"]
    headless = by_kind(default_docs, "Service")["energy-kafka-headless"]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"]
    pdb = by_kind(default_docs, "PodDisruptionBudget")["energy-kafka"]
    assert pdb["spec"]["maxUnavailable"] == 1
    props = dict(
        line.split("=", 1)
        for line in by_kind(default_docs, "ConfigMap")["energy-kafka-config"]["data"][
            "server.properties"
        ].splitlines()
        if "=" in line
    )
    assert props["controller.quorum.voters"] == ",".join(
        f"{i + 1}@energy-kafka-{i}.energy-kafka-headless.energy.svc.cluster.local:9093"
        for i in range(3)
    )
    assert props["num.partitions"] == "4"
    assert props["default.replication.factor"] == "2"
    assert props["min.insync.replicas"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["auto.create.topics.enable"] == "false"
    cluster_id = by_kind(default_docs, "ConfigMap")["energy-kafka-cluster-id"]["data"]["cluster-id"]
    assert re.fullmatch(r"[A-Za-z0-9]{21}[AQgw]", cluster_id)


def test_kafka_production_values_secure_the_listeners(
    production_docs: list[dict[str, Any]],
) -> None:
    config = by_kind(production_docs, "ConfigMap")["energy-kafka-config"]
    props = dict(
        line.strip().split("=", 1) for line in config["data"]["server.properties"].splitlines()
        if line.strip() and not line.strip().startswith("#")
    )
    assert props["listeners"] == "CLIENT://:9092,INTERNAL://:9094,CONTROLLER://:9093"
    assert props["listener.security.protocol.map"] == "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL"
    assert props["inter.broker.listener.name"] == "INTERNAL"
    assert props["listener.name.internal.ssl.client.auth"] == "required"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer")
    assert props["super.users"] == "User:kafka-broker"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    # No password in the ConfigMap, none formatted into the metadata log either.
    assert "password" not in config["data"]["server.properties"]
    assert "--add-scram" not in config["data"]["start.sh"]
    sts = by_kind(production_docs, "StatefulSet")["energy-kafka"]
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast-ssd"
    assert claim["resources"]["requests"]["storage"] == "100Gi"
    pod = sts["spec"]["template"]["spec"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    # The users container upserts the users from the Secret on every start.
    kafka, users = pod["containers"]
    assert users["command"] == ["/bin/sh", "/etc/kafka-base/users.sh"]
    users_env = {e["name"]: e.get("value") for e in users["env"]}
    assert users_env["KAFKA_USERS"] == "bridge ingest operator"
    assert users_env["KAFKA_INTERNAL_PORT"] == "9094"
    mounts = {m["name"]: m["mountPath"] for m in users["volumeMounts"]}
    assert mounts["users"] == "/etc/kafka/users" and mounts["tls"] == "/etc/kafka/tls"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["users"]["secret"]["secretName"] == "energy-kafka-sasl"
    assert volumes["tls"]["secret"]["secretName"] == "kafka-tls"
    assert not [e for e in kafka["env"] if "PASSWORD" in e["name"]]
    assert {p["name"]: p["containerPort"] for p in kafka["ports"]}["internal"] == 9094
    # The users' passwords: made in the cluster by the platform's hook Job, never rendered
    # (a render would make new ones); the brokers' certificate is the user's here (kafka-tls).
    assert "energy-kafka-sasl" not in by_kind(production_docs, "Secret")
    args = by_kind(production_docs, "Job")["energy-platform-secrets"]["spec"]["template"][
        "spec"]["containers"][0]["args"]
    assert "--passwords=energy-kafka-sasl=bridge,ingest,operator" in args
    assert not [a for a in args if a.startswith("--certificate=energy-kafka-tls")]
    example = by_kind(production_docs, "EnergyPipeline")["energy"]["spec"]["kafka"]
    assert example["securityProtocol"] == "SASL_SSL"
    assert example["tls"] == {"caSecret": {"name": "kafka-tls", "key": "ca.crt"}}
    for role, field in (("operator", "credentialsSecret"), ("bridge", "bridgeCredentialsSecret"),
                        ("ingest", "ingestCredentialsSecret")):
        assert example["sasl"][field] == {"name": "energy-kafka-sasl",
                                          "usernameKey": f"{role}-username",
                                          "passwordKey": f"{role}-password"}


def test_kafka_is_sasl_ssl_by_default_with_the_hooks_certificate_and_passwords(
    default_docs: list[dict[str, Any]],
) -> None:
    config = by_kind(default_docs, "ConfigMap")["energy-kafka-config"]["data"]
    props = dict(line.strip().split("=", 1) for line in config["server.properties"].splitlines()
                 if line.strip() and not line.strip().startswith("#"))
    assert props["listener.security.protocol.map"] == "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL"
    assert props["super.users"] == "User:kafka-broker"
    pod = by_kind(default_docs, "StatefulSet")["energy-kafka"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "energy-kafka-tls"
    assert volumes["users"]["secret"]["secretName"] == "energy-kafka-sasl"
    assert "energy-kafka-sasl" not in by_kind(default_docs, "Secret")
    args = by_kind(default_docs, "Job")["energy-platform-secrets"]["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert ("--certificate=energy-kafka-tls=*.energy-kafka-headless.energy.svc.cluster.local,"
            "energy-kafka.energy.svc,energy-kafka.energy.svc.cluster.local;cn=kafka-broker;peer"
            ) in args
    assert "--passwords=energy-kafka-sasl=bridge,ingest,operator" in args
    example = by_kind(default_docs, "EnergyPipeline")["energy"]["spec"]["kafka"]
    assert example["securityProtocol"] == "SASL_SSL"
    assert example["tls"] == {"caSecret": {"name": "energy-kafka-tls", "key": "ca.crt"}}
    assert example["sasl"]["ingestCredentialsSecret"] == {
        "name": "energy-kafka-sasl", "usernameKey": "ingest-username",
        "passwordKey": "ingest-password"}


def test_the_kafka_chart_alone_makes_its_users_secret_and_names_its_tls_secret(
    helm: Path, platform_chart: Path, tmp_path: Path,
) -> None:
    docs = render(helm, platform_chart.parent / "kafka",
                  {"auth": {"tls": {"enabled": True}, "sasl": {"enabled": True}}}, tmp_path)
    secret = by_kind(docs, "Secret")["energy-kafka-sasl"]
    assert set(secret["data"]) == {f"{u}-{k}" for u in ("bridge", "ingest", "operator")
                                   for k in ("username", "password")}
    assert base64.b64decode(secret["data"]["ingest-username"]).decode() == "ingest"
    pod = by_kind(docs, "StatefulSet")["energy-kafka"]["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["tls"]["secret"]["secretName"] == (
        "energy-kafka-tls")


def test_kafka_acls_are_the_roles_of_the_local_secured_cluster(
    production_docs: list[dict[str, Any]],
) -> None:
    """The chart's acls.txt and the harness's role_acls (what the integration tests prove
    against real brokers) grant exactly the same."""
    config = by_kind(production_docs, "ConfigMap")["energy-kafka-config"]
    rendered = set()
    for line in config["data"]["acls.txt"].splitlines():
        if line.strip():
            # <principal> <Op,Op...> --<resource> <name> [--<resource> <name>...]
            principal, operations, *resources = line.split()
            for flag, name in zip(resources[::2], resources[1::2], strict=True):
                rendered |= {(principal, op, flag, name) for op in operations.split(",")}
    def camel(operation: str) -> str:  # DESCRIBE_CONFIGS -> kafka-acls.sh's DescribeConfigs
        return "".join(word.capitalize() for word in operation.split("_"))

    expected = {(f"User:{a.principal}", camel(a.operation), f"--{a.resource}", a.name)
                for a in role_acls("energy", "energy-ingest")}
    assert rendered == expected


def test_kafka_sasl_without_tls_is_refused(helm: Path, platform_chart: Path,
                                          tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"auth": {"sasl": {"enabled": True}}}))
    result = subprocess.run(
        [str(helm), "template", "energy", str(platform_chart.parent / "kafka"),
         "--values", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "auth.sasl.enabled needs auth.tls.enabled" in result.stderr


def test_postgres(
    default_docs: list[dict[str, Any]], chart_secret_docs: list[dict[str, Any]]
) -> None:
    sts = by_kind(default_docs, "StatefulSet")["energy-postgres"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(container["readinessProbe"]["exec"]["command"])
    for role in ("superuser", "app", "reader"):
        # Kept by `helm uninstall` when the data outlives the release (persistence on).
        annotations = by_kind(chart_secret_docs, "Secret")[f"energy-postgres-{role}"][
            "metadata"]["annotations"]
        assert annotations["helm.sh/resource-policy"] == "keep"
    secret = by_kind(chart_secret_docs, "Secret")["energy-postgres-app"]
    url = base64.b64decode(secret["data"]["DATABASE_URL"]).decode()
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert url == f"postgresql://energy:{password}@energy-postgres.energy.svc:5432/energy"
    example = by_kind(default_docs, "EnergyPipeline")["energy"]["spec"]
    assert example["database"]["urlSecret"] == {
        "name": "energy-postgres-app", "key": "DATABASE_URL"}


def test_hivemq(default_docs: list[dict[str, Any]], production_docs: list[dict[str, Any]]) -> None:
    def env(docs: list[dict[str, Any]]) -> dict[str, str]:
        sts = by_kind(docs, "StatefulSet")["energy-hivemq"]
        container = sts["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    # Secure by default: no allow-all, MQTT over TLS only (test_charts_mqtt_tls has the rest).
    assert env(default_docs)["HIVEMQ_ALLOW_ALL_CLIENTS"] == "false"
    assert env(production_docs)["HIVEMQ_ALLOW_ALL_CLIENTS"] == "false"
    config = by_kind(default_docs, "ConfigMap")["energy-hivemq-config"]["data"]["config.xml"]
    assert "<tcp-listener>" not in config and "<port>8883</port>" in config
    assert "<mode>file</mode>" in config
    svc = by_kind(default_docs, "Service")["energy-hivemq"]
    assert [p["port"] for p in svc["spec"]["ports"]] == [8883]


def grafana_provisioning(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(
        by_kind(docs, "ConfigMap")["energy-grafana-provisioning"]["data"]["datasources.yaml"]
    )


@pytest.mark.parametrize("docs_fixture", ["default_docs", "production_docs"])
def test_every_datasource_a_panel_uses_is_provisioned(
    request: pytest.FixtureRequest, docs_fixture: str
) -> None:
    docs = request.getfixturevalue(docs_fixture)
    provisioned = {d["uid"]: d["type"] for d in grafana_provisioning(docs)["datasources"]}
    dashboards = by_kind(docs, "ConfigMap")["energy-grafana-dashboards"]["data"]
    assert set(dashboards) == {"energy-overview.json", "pipeline-health.json"}
    used = set()
    for body in dashboards.values():
        dashboard = json.loads(body)
        for item in dashboard["panels"] + dashboard["templating"]["list"]:
            refs = [item["datasource"]] + [t["datasource"] for t in item.get("targets", [])]
            for ref in refs:
                assert provisioned.get(ref["uid"]) == ref["type"], ref
                used.add(ref["uid"])
    rules = yaml.safe_load(
        by_kind(docs, "ConfigMap")["energy-grafana-provisioning"]["data"]["alert-rules.yaml"]
    )
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        for step in rule["data"]:
            assert step["datasourceUid"] in set(provisioned) | {"__expr__"}
    with_prometheus = docs_fixture == "production_docs"
    assert ("energy-prometheus" in used) is with_prometheus


@pytest.mark.parametrize(("prometheus", "provisioned"), [
    ({"url": "http://prometheus.monitoring.svc:9090"}, True),  # a URL is enough
    ({"enabled": False, "url": "http://prometheus.monitoring.svc:9090"}, False),
    ({}, False),
])
def test_the_prometheus_panels_follow_the_prometheus_datasource(
    helm: Path, platform_chart: Path, tmp_path: Path, prometheus: dict[str, Any],
    provisioned: bool,
) -> None:
    docs = render(helm, platform_chart, {"grafana": {"prometheus": prometheus}}, tmp_path)
    uids = {d["uid"] for d in grafana_provisioning(docs)["datasources"]}
    assert ("energy-prometheus" in uids) is provisioned
    health = json.loads(
        by_kind(docs, "ConfigMap")["energy-grafana-dashboards"]["data"]["pipeline-health.json"])
    prometheus_panels = [p["title"] for p in health["panels"]
                         if p["datasource"]["uid"] == "energy-prometheus"]
    assert (len(prometheus_panels) >= 4) is provisioned, prometheus_panels
    assert bool(prometheus_panels) is provisioned


def test_grafana_datasource_credentials_come_from_the_secret(
    default_docs: list[dict[str, Any]],
) -> None:
    source = grafana_provisioning(default_docs)["datasources"][0]
    assert source["secureJsonData"]["password"] == "$ENERGY_DB_PASSWORD"
    assert source["url"] == "energy-postgres:5432" and source["user"] == "grafana_reader"
    deploy = by_kind(default_docs, "Deployment")["energy-grafana"]
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ENERGY_DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "energy-postgres-reader", "key": "password",
    }
    assert env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
        "energy-grafana-admin"
    )


def test_alert_rules_carry_the_configured_levels(production_docs: list[dict[str, Any]]) -> None:
    rules = yaml.safe_load(
        by_kind(production_docs, "ConfigMap")["energy-grafana-provisioning"]["data"][
            "alert-rules.yaml"
        ]
    )
    levels = {
        r["uid"]: {d["refId"]: d for d in r["data"]}[r["condition"]]["model"]["conditions"][0][
            "evaluator"]["params"][0]
        for g in rules["groups"] for r in g["rules"]
    }
    # One copy per pipeline; the default pipeline is the platform's example, `energy`.
    assert levels == {
        "energy-stale-data-energy": 600,
        "energy-forecast-consumption-high-energy": 420.5,
        "energy-forecast-error-high-energy": 30,
        "energy-readings-lost-energy": 5,
    }
    by_uid = {r["uid"]: r for g in rules["groups"] for r in g["rules"]}
    lost = by_uid["energy-readings-lost-energy"]
    assert "interval '48 hours'" in lost["data"][0]["model"]["rawSql"]


def dashboards_sql_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "dashboards_sql", ROOT / "tests" / "integration" / "test_dashboards_sql.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_alert_placeholders_match_the_sql_test(
    helm: Path, platform_chart: Path, tmp_path: Path, default_docs: list[dict[str, Any]],
) -> None:
    """tests/integration/test_dashboards_sql.py makes the rule file itself (placeholders,
    a copy per pipeline, the uids): the same as the chart, for the default and for two
    pipelines, one with a schema name too long to fit a uid whole."""
    module = dashboards_sql_module()
    pipelines = ["other", "energy", "a_pipeline_schema_name_too_long_for_a_uid"]
    docs = render(helm, platform_chart, {"grafana": {"pipelines": pipelines}}, tmp_path)
    for rendered_docs, expected in ((default_docs, ["energy"]), (docs, pipelines)):
        rendered = by_kind(rendered_docs, "ConfigMap")["energy-grafana-provisioning"]["data"][
            "alert-rules.yaml"
        ]
        assert yaml.safe_load(rendered) == module.chart_alert_rules(expected)
    assert module.chart_default_values()["pipelines"] == ["energy"]


def pipeline_variables(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    dashboards = by_kind(docs, "ConfigMap")["energy-grafana-dashboards"]["data"]
    return {name: next(v for v in json.loads(body)["templating"]["list"]
                       if v["name"] == "pipeline")
            for name, body in dashboards.items()}


def test_the_dashboards_open_on_the_first_pipeline(
    helm: Path, platform_chart: Path, tmp_path: Path, default_docs: list[dict[str, Any]],
) -> None:
    """Every dashboard has the `pipeline` variable, its current value the first of
    grafana.pipelines; every panel query reads the tables of the selected pipeline."""
    docs = render(helm, platform_chart, {"grafana": {"pipelines": ["other", "energy"]}},
                  tmp_path)
    for rendered, first in ((default_docs, "energy"), (docs, "other")):
        variables = pipeline_variables(rendered)
        assert set(variables) == {"energy-overview.json", "pipeline-health.json"}
        for variable in variables.values():
            assert variable["current"] == {"selected": True, "text": first, "value": first}
            assert (variable["type"], variable["multi"], variable["includeAll"]) == (
                "query", False, False)
    for body in by_kind(docs, "ConfigMap")["energy-grafana-dashboards"]["data"].values():
        dashboard = json.loads(body)
        queries = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]
                   if "rawSql" in t]
        queries += [v["query"] for v in dashboard["templating"]["list"] if v["name"] != "pipeline"]
        for sql in queries:
            assert '"${pipeline}".' in sql, sql


def test_ingress(default_docs: list[dict[str, Any]], production_docs: list[dict[str, Any]]) -> None:
    default = by_kind(default_docs, "Ingress")["energy-grafana"]["spec"]
    assert default["ingressClassName"] == "nginx"
    assert "host" not in default["rules"][0]
    prod = by_kind(production_docs, "Ingress")["energy-grafana"]["spec"]
    assert prod["rules"][0]["host"] == "grafana.energy.example"
    assert prod["tls"] == [{"hosts": ["grafana.energy.example"], "secretName": "grafana-tls"}]


def test_operator(default_docs: list[dict[str, Any]]) -> None:
    deploy = by_kind(default_docs, "Deployment")["energy-operator"]
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/energy-pipeline/energy-pipeline:0.1.0"
    assert container["args"] == ["operator"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HTTP_PORT"] == "8080"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod["serviceAccountName"] == "energy-operator"
    binding = by_kind(default_docs, "ClusterRoleBinding")["energy-operator"]
    assert binding["subjects"][0] == {
        "kind": "ServiceAccount", "name": "energy-operator", "namespace": "energy",
    }


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def test_operator_chart_grants_exactly_the_manifest_rbac(
    default_docs: list[dict[str, Any]],
) -> None:
    """The rendered chart's Roles grant what manifests/rbac.yaml grants (the operator's own,
    tested statement of what it needs), no permission less and none more: both are generated
    from energy_operator.rbac."""
    manifest = ROOT / "manifests" / "rbac.yaml"
    wanted: dict[str, list[dict[str, Any]]] = {}
    for doc in yaml.safe_load_all(manifest.read_text()):
        if doc and doc["kind"] in {"ClusterRole", "Role"}:
            wanted.setdefault(doc["kind"], []).extend(doc["rules"])
    assert set(wanted) == {"ClusterRole", "Role"}
    for kind, rules in wanted.items():
        # The operator's only: the certificate hook's Role is its own (test_charts_postgres_tls).
        rendered = [r for d in by_kind(default_docs, kind).values() for r in d["rules"]
                    if d["metadata"]["labels"].get("app.kubernetes.io/component")
                    != "platform-secrets"]
        grants, chart = _grants(rules), _grants(rendered)
        assert grants <= chart, f"{kind}: missing {sorted(grants - chart)}"
        assert chart <= grants, f"{kind}: more than the operator needs {sorted(chart - grants)}"
        assert rendered == rules, kind  # resourceNames too


# ---- the read API: the example pipeline's spec.api and the Ingress to its Service ----------

API_VALUES = {"example": {"api": {"enabled": True}}, "api": {"ingress": {"enabled": True}}}


@pytest.fixture(scope="module")
def api_docs(helm: Path, platform_chart: Path,
             tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(helm, platform_chart, API_VALUES, tmp_path_factory.mktemp("api"))


def test_api_is_off_by_default(default_docs: list[dict[str, Any]]) -> None:
    assert "energy-api" not in by_kind(default_docs, "Ingress")
    assert "api" not in by_kind(default_docs, "EnergyPipeline")["energy"]["spec"]


def test_example_api_connects_as_the_read_only_role(api_docs: list[dict[str, Any]]) -> None:
    from energy_operator import crd

    spec = by_kind(api_docs, "EnergyPipeline")["energy"]["spec"]
    assert spec["api"] == {
        "enabled": True, "replicas": 1,
        "databaseUrlSecret": {"name": "energy-postgres-reader", "key": "DATABASE_URL"},
    }
    assert set(spec["api"]) <= set(crd.spec_schema()["properties"]["api"]["properties"])
    # The hook Job makes that Secret with the reader's DATABASE_URL.
    args = by_kind(api_docs, "Job")["energy-platform-secrets"]["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert ("--login=energy-postgres-reader=grafana_reader;"
            "url=energy-postgres.energy.svc:5432/energy") in args


def test_api_ingress_routes_the_prefix_to_the_operator_created_service(
    api_docs: list[dict[str, Any]],
) -> None:
    ingress = by_kind(api_docs, "Ingress")["energy-api"]
    # No rewrite (the API serves /api/v1); plain HTTP is redirected to HTTPS.
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/ssl-redirect": "true",
        "nginx.ingress.kubernetes.io/force-ssl-redirect": "true"}
    spec = ingress["spec"]
    # TLS by default; without a Secret, the controller's default (self-signed) certificate.
    assert spec["ingressClassName"] == "nginx" and spec["tls"] == [{}]
    (rule,) = spec["rules"]
    assert "host" not in rule
    assert rule["http"]["paths"] == [{
        "path": "/api/v1", "pathType": "Prefix",
        # The name the operator gives the Service of spec.api: <pipeline>-api, port `api`.
        "backend": {"service": {"name": "energy-api", "port": {"name": "api"}}},
    }]
    # Grafana keeps its own Ingress at /.
    assert by_kind(api_docs, "Ingress")["energy-grafana"]["spec"]["rules"][0]["http"][
        "paths"][0]["path"] == "/"


def test_api_ingress_operator_naming_agrees() -> None:
    from energy_operator import render as operator_render

    service = operator_render.api_service("energy", "energy")
    assert service["metadata"]["name"] == "energy-api"
    assert "api" in {p["name"] for p in service["spec"]["ports"]}


def test_api_ingress_for_another_pipeline_with_host_and_tls(
    helm: Path, platform_chart: Path, tmp_path: Path
) -> None:
    values = {"example": {"enabled": False}, "simulator": {"enabled": False},
              "api": {"ingress": {"enabled": True, "pipeline": "campus", "host": "api.example",
                                  "tlsSecret": "api-tls", "path": "/api/v1",
                                  "annotations": {"a.example/b": "c"}}}}
    docs = render(helm, platform_chart, values, tmp_path)
    spec = by_kind(docs, "Ingress")["energy-api"]["spec"]
    assert spec["rules"][0]["host"] == "api.example"
    assert spec["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "campus-api"
    assert spec["tls"] == [{"hosts": ["api.example"], "secretName": "api-tls"}]
    assert by_kind(docs, "Ingress")["energy-api"]["metadata"]["annotations"] == {
        "a.example/b": "c", "nginx.ingress.kubernetes.io/ssl-redirect": "true",
        "nginx.ingress.kubernetes.io/force-ssl-redirect": "true"}
    path = tmp_path / "lint.yaml"
    path.write_text(yaml.safe_dump(values))
    run_helm(helm, "lint", "--strict", str(platform_chart), "--values", str(path))


def test_api_ingress_with_a_host_but_no_certificate_falls_back_to_the_default_one(
    helm: Path, platform_chart: Path, tmp_path: Path
) -> None:
    values = {**API_VALUES, "api": {"ingress": {"enabled": True, "host": "api.example"}}}
    spec = by_kind(render(helm, platform_chart, values, tmp_path), "Ingress")["energy-api"]["spec"]
    # The host is TLS-served (so ingress-nginx redirects it), with no secretName.
    assert spec["tls"] == [{"hosts": ["api.example"]}]


def test_api_ingress_plain_http_only_when_asked(
    helm: Path, platform_chart: Path, tmp_path: Path
) -> None:
    values = {**API_VALUES, "api": {"ingress": {
        "enabled": True, "tls": False,
        "annotations": {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}}}}
    ingress = by_kind(render(helm, platform_chart, values, tmp_path), "Ingress")["energy-api"]
    assert "tls" not in ingress["spec"]
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/ssl-redirect": "false"}
    # The user's annotation wins over the default redirect.
    values["api"]["ingress"]["tls"] = True
    ingress = by_kind(render(helm, platform_chart, values, tmp_path), "Ingress")["energy-api"]
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/ssl-redirect": "false",
        "nginx.ingress.kubernetes.io/force-ssl-redirect": "true"}


def test_api_values_lint_strict(helm: Path, platform_chart: Path, tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(API_VALUES))
    out = run_helm(helm, "lint", "--strict", str(platform_chart), "--values", str(path))
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(("values", "message"), [
    # The Ingress would point at a Service nobody creates.
    ({"api": {"ingress": {"enabled": True}}}, "example.api.enabled"),
    ({**API_VALUES, "api": {"ingress": {"enabled": True, "path": "api"}}}, "path"),
    ({"example": {"api": {"enabled": True, "replicas": -1}}}, "replicas"),
    ({**API_VALUES, "api": {"ingress": {"enabled": True, "tls": "yes"}}}, "tls"),
])
def test_bad_api_values_are_refused(
    helm: Path, platform_chart: Path, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [str(helm), "template", "x", str(platform_chart), "--values", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
