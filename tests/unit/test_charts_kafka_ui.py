"""The optional Kafka UI (charts/kafka-ui, `kafkaUi` of the energy-platform chart) as `helm
template` and `helm lint` see it: off by default; on, a read-only kafbat UI behind a login, at
its own path of the ingress, logging in to the brokers as the kafka chart's read-only
`kafka-ui` user with every credential from a Secret, trusting the brokers' CA, and fenced in
by NetworkPolicies. The last test runs the kafka chart's own users container script (the
rendered users.sh) against real brokers secured as the chart runs them: the user exists while
the Secret holds its password, may do what kafbat's read-only mode needs, and nothing more.

Marked `cluster` like test_charts_render.py: helm comes from the cached Kubernetes tools build
(no API server is started here).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from energy_harness.localstack import KafkaCluster
from energy_harness.localstack.install import ensure_kafka, require
from energy_harness.testing import wait_for
from energy_operator import platform_secrets

from unit import test_charts_render as charts
from unit.test_charts_network import admitted, matches
from unit.test_charts_render import PRODUCTION_VALUES, by_kind, render, run_helm

pytestmark = pytest.mark.cluster

# test_charts_render's fixtures, used here under the same names.
helm, platform_chart, default_docs = charts.helm, charts.platform_chart, charts.default_docs

UI = "energy-kafka-ui"
ON = {"kafkaUi": {"enabled": True}}
INGRESS_NGINX = {"namespaceSelector": {"matchLabels": {
    "kubernetes.io/metadata.name": "ingress-nginx"}}}
# kafbat's list for its read-only mode (ui-docs: quick-start/prerequisites/permissions/
# required-acls.md), plus DESCRIBE on topics, which READ implies.
KAFBAT_READ_ONLY_ACLS = [
    "User:kafka-ui Read,Describe,DescribeConfigs --topic *",
    "User:kafka-ui Describe --group *",
    "User:kafka-ui Describe,DescribeConfigs --cluster",
]


@pytest.fixture(scope="module")
def ui_docs(helm: Path, platform_chart: Path,
            tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(helm, platform_chart, ON, tmp_path_factory.mktemp("kafka-ui"))


def ui_container(docs: list[dict[str, Any]], name: str = UI) -> dict[str, Any]:
    (container,) = by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


def values_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def hook_args(docs: list[dict[str, Any]]) -> list[str]:
    return by_kind(docs, "Job")["energy-platform-secrets"]["spec"]["template"]["spec"][
        "containers"][0]["args"]


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in docs if d["kind"] in {"Deployment", "StatefulSet"}}


def refused(helm: Path, chart: Path, values: dict[str, Any], tmp: Path) -> str:
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = subprocess.run([str(helm), "template", "energy", str(chart), "--values", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, "rendered, but should have been refused"
    return result.stderr


# ---- off by default -------------------------------------------------------------------------

def test_off_by_default_renders_nothing(default_docs: list[dict[str, Any]]) -> None:
    names = [f"{d['kind']}/{d['metadata']['name']}" for d in default_docs]
    assert not [n for n in names if "kafka-ui" in n]
    assert not [d for d in default_docs
                if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "kafka-ui"]
    args = hook_args(default_docs)
    assert "--passwords=energy-kafka-sasl=bridge,ingest,operator" in args
    assert not [a for a in args if "kafka-ui" in a]


# ---- on: what a user reaches ----------------------------------------------------------------

def test_deployment_service_and_ingress_at_its_own_path(ui_docs: list[dict[str, Any]]) -> None:
    container = ui_container(ui_docs)
    assert container["image"] == "ghcr.io/kafbat/kafka-ui:v1.5.0"
    env = values_of(container)
    assert env["SERVER_SERVLET_CONTEXT_PATH"] == "/kafka-ui"
    assert env["KAFKA_CLUSTERS_0_NAME"] == "energy"
    assert env["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == "energy-kafka.energy.svc:9092"
    assert env["GITHUB_RELEASE_INFO_ENABLED"] == "false"
    # The actuator lives under the context path, on the container's port.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/kafka-ui/actuator/health",
                                               "port": "http"}, probe
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080}
    service = by_kind(ui_docs, "Service")[UI]["spec"]
    assert service["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
    pod = by_kind(ui_docs, "Deployment")[UI]["spec"]["template"]["metadata"]["labels"]
    assert matches({"matchLabels": service["selector"]}, pod)

    ingresses = by_kind(ui_docs, "Ingress")
    ingress = ingresses[UI]
    (rule,) = ingress["spec"]["rules"]
    assert rule["http"]["paths"] == [{
        "path": "/kafka-ui", "pathType": "Prefix",
        "backend": {"service": {"name": UI, "port": {"name": "http"}}},
    }]
    # Beside Grafana's: the same class and (no) host, Grafana keeping /.
    grafana = ingresses["energy-grafana"]["spec"]
    assert ingress["spec"]["ingressClassName"] == grafana["ingressClassName"] == "nginx"
    assert "host" not in rule and "host" not in grafana["rules"][0]
    assert grafana["rules"][0]["http"]["paths"][0]["path"] == "/"
    # The login's password never crosses the network in the clear: TLS, HTTP redirected.
    assert ingress["spec"]["tls"] == [{}]
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/ssl-redirect": "true",
        "nginx.ingress.kubernetes.io/force-ssl-redirect": "true"}


def test_another_path_and_host_move_everything_together(
    helm: Path, platform_chart: Path, tmp_path: Path
) -> None:
    values = {"kafkaUi": {"enabled": True, "ingress": {
        "path": "/ops/kafka", "host": "energy.example", "tlsSecret": "energy-tls"}}}
    docs = render(helm, platform_chart, values, tmp_path)
    container = ui_container(docs)
    assert values_of(container)["SERVER_SERVLET_CONTEXT_PATH"] == "/ops/kafka"
    assert container["livenessProbe"]["httpGet"]["path"] == "/ops/kafka/actuator/health"
    spec = by_kind(docs, "Ingress")[UI]["spec"]
    assert spec["rules"][0]["host"] == "energy.example"
    assert spec["rules"][0]["http"]["paths"][0]["path"] == "/ops/kafka"
    assert spec["tls"] == [{"hosts": ["energy.example"], "secretName": "energy-tls"}]


def test_read_only_and_behind_a_login_by_default(ui_docs: list[dict[str, Any]]) -> None:
    container = ui_container(ui_docs)
    env = env_of(container)
    assert env["KAFKA_CLUSTERS_0_READONLY"]["value"] == "true"
    assert env["AUTH_TYPE"]["value"] == "LOGIN_FORM"
    assert env["SPRING_SECURITY_USER_NAME"]["valueFrom"]["secretKeyRef"] == {
        "name": "energy-kafka-ui-login", "key": "username"}
    assert env["SPRING_SECURITY_USER_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "energy-kafka-ui-login", "key": "password"}
    assert "DYNAMIC_CONFIG_ENABLED" in env and env["DYNAMIC_CONFIG_ENABLED"]["value"] == "false"


def test_kafka_login_is_assembled_from_the_users_secret(ui_docs: list[dict[str, Any]]) -> None:
    container = ui_container(ui_docs)
    env = env_of(container)
    assert env["KAFKA_CLUSTERS_0_PROPERTIES_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["KAFKA_CLUSTERS_0_PROPERTIES_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    jaas = env["KAFKA_CLUSTERS_0_PROPERTIES_SASL_JAAS_CONFIG"]["value"]
    assert jaas == ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                    'username="$(UI_KAFKA_SASL_USERNAME)" password="$(UI_KAFKA_SASL_PASSWORD)";')
    # The kubelet expands $(NAME) only from variables defined before it in the list.
    order = [e["name"] for e in container["env"]]
    for name, key in (("UI_KAFKA_SASL_USERNAME", "kafka-ui-username"),
                      ("UI_KAFKA_SASL_PASSWORD", "kafka-ui-password")):
        assert order.index(name) < order.index("KAFKA_CLUSTERS_0_PROPERTIES_SASL_JAAS_CONFIG")
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "energy-kafka-sasl",
                                                          "key": key}
    # No credential in any plain value: passwords only by reference.
    for item in container["env"]:
        if "PASSWORD" in item["name"]:
            assert "value" not in item, item["name"]
        if "value" in item:
            assert not re.search(r'password="(?!\$\()', item["value"]), item["name"]
    # The platform renders no Secret and no ConfigMap for the UI: the hook Job makes the
    # login and kafka-ui's Kafka password in the cluster (test_the_hook_makes_...).
    assert not [d for d in ui_docs if d["kind"] in {"Secret", "ConfigMap"}
                and "kafka-ui" in d["metadata"]["name"]]
    for cm in by_kind(ui_docs, "ConfigMap").values():
        for key, body in cm.get("data", {}).items():
            assert not re.search(r"password\s*[=:]\s*['\"]?[A-Za-z0-9]{8,}", body, re.I), (
                f"{cm['metadata']['name']}/{key}")


def test_the_brokers_are_trusted_by_their_ca(ui_docs: list[dict[str, Any]]) -> None:
    deployment = by_kind(ui_docs, "Deployment")[UI]["spec"]["template"]["spec"]
    container = ui_container(ui_docs)
    env = values_of(container)
    assert env["KAFKA_CLUSTERS_0_PROPERTIES_SSL_TRUSTSTORE_TYPE"] == "PEM"
    location = env["KAFKA_CLUSTERS_0_PROPERTIES_SSL_TRUSTSTORE_LOCATION"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert location == f"{mounts['kafka-ca']['mountPath']}/ca.crt"
    assert mounts["kafka-ca"]["readOnly"] is True
    volumes = {v["name"]: v for v in deployment["volumes"]}
    # The CA certificate only, not the brokers' key beside it in that Secret.
    assert volumes["kafka-ca"]["secret"] == {
        "secretName": "energy-kafka-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    # The same Secret the brokers present their certificate from.
    kafka = by_kind(ui_docs, "StatefulSet")["energy-kafka"]["spec"]["template"]["spec"]
    assert {v["name"]: v for v in kafka["volumes"]}["tls"]["secret"]["secretName"] == (
        "energy-kafka-tls")


def test_the_hook_makes_the_login_and_kafka_ui_s_password(
    ui_docs: list[dict[str, Any]], helm: Path, platform_chart: Path, tmp_path: Path
) -> None:
    args = hook_args(ui_docs)
    assert "--passwords=energy-kafka-sasl=bridge,ingest,operator,kafka-ui" in args
    assert "--login=energy-kafka-ui-login=admin" in args
    role = next(d for d in ui_docs if d["kind"] == "Role"
                and d["metadata"]["name"] == "energy-platform-secrets")
    names = {n for rule in role["rules"] for n in rule.get("resourceNames", [])}
    assert {"energy-kafka-sasl", "energy-kafka-ui-login"} <= names
    # What the hook makes has the layout of the kafka-ui chart's own Secret (createSecret).
    made = platform_secrets.plan_login(
        None, platform_secrets.parse_login("energy-kafka-ui-login=admin"), "energy", "energy")
    assert isinstance(made, platform_secrets.Write)
    hook = {k: base64.b64decode(v).decode() for k, v in made.manifest["data"].items()}
    chart_docs = render(helm, platform_chart,
                        {"kafkaUi": {"enabled": True, "auth": {"createSecret": True}}}, tmp_path)
    chart = {k: base64.b64decode(v).decode()
             for k, v in by_kind(chart_docs, "Secret")["energy-kafka-ui-login"]["data"].items()}
    assert set(hook) == set(chart) == {"username", "password"}
    assert hook["username"] == chart["username"] == "admin"
    assert len(chart["password"]) == 24 and chart["password"].isalnum()
    # ... and is then no longer the hook's to make.
    assert not [a for a in hook_args(chart_docs) if "kafka-ui-login" in a]


def test_the_kafka_chart_has_the_read_only_user_the_ui_logs_in_as(
    ui_docs: list[dict[str, Any]],
) -> None:
    config = by_kind(ui_docs, "ConfigMap")["energy-kafka-config"]["data"]
    assert config["optional-acls.txt"].splitlines() == KAFBAT_READ_ONLY_ACLS
    assert "kafka-ui" not in config["acls.txt"]
    pod = by_kind(ui_docs, "StatefulSet")["energy-kafka"]["spec"]["template"]["spec"]
    users = {c["name"]: c for c in pod["containers"]}["users"]
    env = values_of(users)
    assert env["KAFKA_USERS"] == "bridge ingest operator"
    assert env["KAFKA_OPTIONAL_USERS"] == "kafka-ui"
    # The names the UI reads are the optional user's keys in the users Secret.
    ui_env = env_of(ui_container(ui_docs))
    keys = {ui_env[n]["valueFrom"]["secretKeyRef"]["key"]
            for n in ("UI_KAFKA_SASL_USERNAME", "UI_KAFKA_SASL_PASSWORD")}
    assert keys == {f"{env['KAFKA_OPTIONAL_USERS']}-username",
                    f"{env['KAFKA_OPTIONAL_USERS']}-password"}


def test_pod_is_hardened(ui_docs: list[dict[str, Any]]) -> None:
    spec = by_kind(ui_docs, "Deployment")[UI]["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    container = ui_container(ui_docs)
    sc = container["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                  "capabilities": {"drop": ["ALL"]}}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/tmp"]] == {"name": "tmp", "emptyDir": {}}
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_network_policies_fence_the_ui_in(ui_docs: list[dict[str, Any]]) -> None:
    policies = by_kind(ui_docs, "NetworkPolicy")
    pods = pod_labels(ui_docs)
    own = policies[UI]["spec"]
    assert matches(own["podSelector"], pods[UI])
    assert own["policyTypes"] == ["Ingress", "Egress"]
    assert own["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}],
                               "from": [INGRESS_NGINX]}]
    to_kafka, dns = own["egress"]
    assert to_kafka["ports"] == [{"port": 9092, "protocol": "TCP"}]
    (peer,) = to_kafka["to"]
    assert {name for name, labels in pods.items() if matches(peer["podSelector"], labels)} == {
        "energy-kafka"}
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    # The brokers' side: the kafka chart's own policy as without the UI, and one more that
    # admits the UI's pods (and no other) on the client port only.
    extra = policies["energy-kafka-from-kafka-ui"]
    assert extra["spec"]["policyTypes"] == ["Ingress"]
    assert {n for n, labels in pods.items() if matches(extra["spec"]["podSelector"], labels)} == {
        "energy-kafka"}
    assert {n for n, labels in pods.items() if admitted(extra, labels, 9092)} == {UI}
    for port in (9093, 9094):
        assert not admitted(extra, pods[UI], port)
        assert not admitted(policies["energy-kafka"], pods[UI], port)
    assert not admitted(policies["energy-kafka"], pods[UI], 9092)


def test_default_platform_policies_are_unchanged(
    default_docs: list[dict[str, Any]], ui_docs: list[dict[str, Any]]
) -> None:
    before, after = by_kind(default_docs, "NetworkPolicy"), by_kind(ui_docs, "NetworkPolicy")
    assert set(after) - set(before) == {UI, "energy-kafka-from-kafka-ui"}
    for name, policy in before.items():
        assert after[name]["spec"] == policy["spec"], name


# ---- lint -----------------------------------------------------------------------------------

@pytest.mark.parametrize("production", [False, True])
def test_umbrella_lint_passes_with_the_ui(
    helm: Path, platform_chart: Path, tmp_path: Path, production: bool
) -> None:
    values = {**(PRODUCTION_VALUES if production else {}), **ON}
    if production:  # the brokers' certificate is the user's there: the UI trusts its CA
        values["kafkaUi"] = {"enabled": True, "kafka": {"tls": {"caSecret": "kafka-tls"}}}
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    out = run_helm(helm, "lint", "--strict", str(platform_chart), "--values", str(path))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_chart_lints_alone(helm: Path, platform_chart: Path) -> None:
    out = run_helm(helm, "lint", "--strict", str(platform_chart.parent / "kafka-ui"))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


# ---- the chart alone ------------------------------------------------------------------------

def test_chart_alone_generates_its_login_and_connects_plainly_when_told(
    helm: Path, platform_chart: Path, tmp_path: Path
) -> None:
    chart = platform_chart.parent / "kafka-ui"
    docs = render(helm, chart, None)
    login = by_kind(docs, "Secret")["energy-kafka-ui-login"]["data"]
    assert base64.b64decode(login["username"]).decode() == "admin"
    again = by_kind(render(helm, chart, None), "Secret")["energy-kafka-ui-login"]["data"]
    assert again["password"] != login["password"]  # never a constant of the chart

    values = {"kafka": {"securityProtocol": "PLAINTEXT",
                        "bootstrapServers": "kafka-0.kafka:9092,kafka-1.kafka:19092"},
              "auth": {"existingSecret": "ui-login"}, "readOnly": False,
              "ingress": {"enabled": False}, "networkPolicy": {"kafkaPeers": [
                  {"podSelector": {"matchLabels": {"app": "kafka"}}}]}}
    docs = render(helm, chart, values, tmp_path)
    assert "Secret" not in {d["kind"] for d in docs} and "Ingress" not in {
        d["kind"] for d in docs}
    container = ui_container(docs)
    env = env_of(container)
    assert not [n for n in env if "SASL" in n or "TRUSTSTORE" in n]
    assert [m["name"] for m in container["volumeMounts"]] == ["tmp"]
    assert env["KAFKA_CLUSTERS_0_READONLY"]["value"] == "false"
    assert env["KAFKA_CLUSTERS_0_PROPERTIES_SECURITY_PROTOCOL"]["value"] == "PLAINTEXT"
    assert env["SPRING_SECURITY_USER_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
        "ui-login")
    # Reached by port-forward then, still under its context path.
    assert env["SERVER_SERVLET_CONTEXT_PATH"]["value"] == "/kafka-ui"
    (to_kafka, _dns) = by_kind(docs, "NetworkPolicy")[UI]["spec"]["egress"]
    assert to_kafka["ports"] == [{"port": 9092, "protocol": "TCP"},
                                 {"port": 19092, "protocol": "TCP"}]
    assert to_kafka["to"] == [{"podSelector": {"matchLabels": {"app": "kafka"}}}]


# ---- refused values -------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    # The UI must speak what kafka.auth makes the brokers' client listener speak.
    ({"kafkaUi": {"enabled": True}, "kafka": {"auth": {"sasl": {"enabled": False}}}},
     "set kafkaUi.kafka.securityProtocol=SSL"),
    ({"kafkaUi": {"enabled": True},
      "kafka": {"auth": {"sasl": {"enabled": False}, "tls": {"enabled": False}}}},
     "set kafkaUi.kafka.securityProtocol=PLAINTEXT"),
    ({"kafkaUi": {"enabled": True}, "kafka": {"auth": {"sasl": {"mechanism": "SCRAM-SHA-256"}}}},
     "kafka.auth.sasl.mechanism"),
    # A users Secret of the user's: the UI's key must be named there.
    ({"kafkaUi": {"enabled": True}, "kafka": {"auth": {"sasl": {"existingSecret": "mine"}}}},
     "kafkaUi.kafka.sasl.credentialsSecret"),
    ({"kafkaUi": {"enabled": True}, "kafka": {"auth": {"tls": {"secretName": "kafka-tls"}}}},
     "kafkaUi.kafka.tls.caSecret"),
    # The path is the application's context path too: a sub-path, no trailing slash.
    ({"kafkaUi": {"enabled": True, "ingress": {"path": "/kafka-ui/"}}}, "path"),
    ({"kafkaUi": {"enabled": True, "kafka": {"securityProtocol": "SASL"}}}, "securityProtocol"),
])
def test_values_that_would_not_work_are_refused(
    helm: Path, platform_chart: Path, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    assert message in refused(helm, platform_chart, values, tmp_path)


def test_chart_alone_refuses_a_path_that_is_no_context_path(
    helm: Path, platform_chart: Path, tmp_path: Path
) -> None:
    stderr = refused(helm, platform_chart.parent / "kafka-ui", {"ingress": {"path": "/"}},
                     tmp_path)
    assert "ingress.path must be a sub-path" in stderr


# ---- the kafka-ui user on real brokers ------------------------------------------------------

class UsersContainer:
    """The rendered users.sh of a Kafka pod, run as its container runs it (its environment from
    the rendered StatefulSet, the rendered ConfigMap files, a directory standing for the
    mounted users Secret) against the secured test cluster, through a node's mutual-TLS
    listener as the super user."""

    def __init__(self, docs: list[dict[str, Any]], cluster: KafkaCluster, base: Path) -> None:
        assert cluster.security is not None
        self.cluster, self.base = cluster, base
        files = by_kind(docs, "ConfigMap")["energy-kafka-config"]["data"]
        self.config = base / "kafka-base"
        self.config.mkdir()
        for name in ("users.sh", "admin-client.sh", "acls.txt", "optional-acls.txt"):
            (self.config / name).write_text(files[name])
        pod = by_kind(docs, "StatefulSet")["energy-kafka"]["spec"]["template"]["spec"]
        rendered = values_of({c["name"]: c for c in pod["containers"]}["users"])
        # The image's two admin tools, as the stand-in image has them: the same classes.
        home = base / "kafka"
        (home / "bin").mkdir(parents=True)
        for script, main in (("kafka-configs.sh", "kafka.admin.ConfigCommand"),
                             ("kafka-acls.sh", "org.apache.kafka.tools.AclCommand")):
            (home / "bin" / script).write_text(
                f'#!/bin/sh\nexec "{require("java")}" -Xmx128m -cp "{ensure_kafka()}/*" '
                f'{main} "$@"\n')
            (home / "bin" / script).chmod(0o755)
        # The node certificate the pod mounts at /etc/kafka/tls (tls.key, tls.crt, ca.crt).
        ca = cluster.security.ca
        tls = base / "tls"
        tls.mkdir()
        for name, source in (("tls.key", ca.directory / "node.key"),
                             ("tls.crt", ca.directory / "node.crt"), ("ca.crt", ca.cert)):
            shutil.copy(source, tls / name)
        # The users Secret as mounted: the roles' passwords the cluster already has.
        self.secret = base / "users"
        self.secret.mkdir()
        for role in rendered["KAFKA_USERS"].split():
            (self.secret / f"{role}-username").write_text(role)
            (self.secret / f"{role}-password").write_text(cluster.security.password(role))
        node = next(iter(cluster.nodes.values())).spec
        self.env = {
            "PATH": "/usr/bin:/bin",
            # The script dials $POD_NAME.$KAFKA_ADVERTISED_DOMAIN, the name the node
            # certificate holds in a cluster; here the certificate holds 127.0.0.1.
            "POD_NAME": "127.0.0", "KAFKA_ADVERTISED_DOMAIN": "1",
            "KAFKA_INTERNAL_PORT": str(node.internal_port),
            **{k: rendered[k] for k in ("KAFKA_SASL_MECHANISM", "KAFKA_USERS",
                                        "KAFKA_OPTIONAL_USERS")},
            "KAFKA_HOME": str(home), "KAFKA_TLS_DIR": str(tls),
            "KAFKA_USERS_DIR": str(self.secret),
            "KAFKA_ACLS_FILE": str(self.config / "acls.txt"),
            "KAFKA_OPTIONAL_ACLS_FILE": str(self.config / "optional-acls.txt"),
            "WORK_DIR": str(base / "work"), "CHECK_EVERY_S": "1",
        }
        self.log = base / "users.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            # dash: POSIX sh, as strict as the image's busybox ash. A session of its own, so
            # that its admin tools' JVMs go with it.
            self.process = subprocess.Popen(["dash", str(self.config / "users.sh")],
                                            env=self.env, stdout=log, stderr=log,
                                            start_new_session=True)

    def stop(self) -> None:
        """SIGTERM, as the kubelet stops it: the script ends after the tool running now."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def wait_for_line(self, line: str, times: int = 1, timeout: float = 300) -> None:
        def said() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            return self.log.read_text().count(line) >= times
        wait_for(said, timeout, f"users.sh to log {line!r} ({times}x)", interval=1)


@pytest.fixture
def users_container(ui_docs: list[dict[str, Any]], secured_kafka: KafkaCluster,
                    tmp_path: Path) -> Iterator[UsersContainer]:
    container = UsersContainer(ui_docs, secured_kafka, tmp_path)
    try:
        yield container
    finally:
        container.stop()


def as_user(cluster: KafkaCluster, user: str, password: str) -> dict[str, Any]:
    assert cluster.security is not None
    return {**cluster.security.client_config(cluster.bootstrap_servers, user, password),
            "socket.timeout.ms": 10000, "log_level": 0}


def login_error(config: dict[str, Any]) -> str | None:
    """None when the brokers answer a metadata request with this login, else why not."""
    errors: list[str] = []
    admin = AdminClient({**config, "error_cb": lambda err: errors.append(err.str())})
    try:
        admin.list_topics(timeout=15)
    except KafkaException as exc:
        errors.append(exc.args[0].str())
        admin.poll(1)
        return "; ".join(errors)
    return None


def error_code(call: Any) -> Any:
    """The KafkaError code a refused admin call or delivery reports."""
    try:
        call()
    except KafkaException as exc:
        return exc.args[0].code()
    return None


def test_the_kafka_ui_user_exists_while_its_password_is_in_the_secret_and_only_reads(
    users_container: UsersContainer, secured_kafka: KafkaCluster,
) -> None:
    cluster = secured_kafka
    password = "kafkaUi" + uuid.uuid4().hex
    # A topic with one record, and a consumer group, made as the super user.
    topic = f"kui-{uuid.uuid4().hex[:8]}"
    for future in cluster.admin().create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=2)]).values():
        future.result(60)
    assert cluster.security is not None
    ca = cluster.security.ca
    producer = Producer({"bootstrap.servers": cluster.internal_bootstrap_servers,
                         "security.protocol": "SSL", "ssl.ca.location": str(ca.cert),
                         "ssl.certificate.location": str(ca.directory / "node.crt"),
                         "ssl.key.location": str(ca.directory / "node.key")})
    producer.produce(topic, key=b"site-0/0", value=b'{"value": 20.05}')
    assert producer.flush(60) == 0

    # Without its password in the Secret, kafka-ui has no login.
    users_container.start()
    users_container.wait_for_line("users (bridge ingest operator) and ACLs applied")
    ui = as_user(cluster, "kafka-ui", password)
    assert "Authentication failed" in (login_error(ui) or "")

    # The hook adds it (kubelet swaps the mounted files): users.sh upserts it and its ACLs.
    (users_container.secret / "kafka-ui-username").write_text("kafka-ui")
    (users_container.secret / "kafka-ui-password").write_text(password)
    users_container.wait_for_line("users (bridge ingest operator kafka-ui) and ACLs applied")
    assert login_error(ui) is None

    # What kafbat's read-only mode does: metadata, configs of topics and brokers, the
    # cluster, consumer groups, and messages read without a group.
    admin = AdminClient(ui)
    assert topic in admin.list_topics(timeout=15).topics
    (configs,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
    assert configs.result(30)["min.insync.replicas"].value == "2"
    (broker,) = admin.describe_configs([ConfigResource("broker", "1")]).values()
    assert "log.retention.hours" in broker.result(30)
    assert len(admin.describe_cluster().result(30).nodes) == 3
    admin.list_consumer_groups().result(30)
    # librdkafka insists on a group.id; assign() reads without joining it (kafbat's Java
    # consumer has none), so the user needs no READ on any group.
    consumer = Consumer({**ui, "enable.auto.commit": False, "group.id": "unused"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        message = wait_for(lambda: consumer.poll(1), 60, "the record, read as kafka-ui")
        assert message.error() is None and message.value() == b'{"value": 20.05}'
    finally:
        consumer.close()

    # ... and nothing that changes the cluster.
    delivered: list[Any] = []
    writer = Producer({**ui, "message.timeout.ms": 15000})
    writer.produce(topic, value=b"x", on_delivery=lambda err, _msg: delivered.append(err))
    writer.flush(30)
    assert [e.code() for e in delivered] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    (created,) = admin.create_topics([NewTopic(f"{topic}-new", 1, 1)]).values()
    assert error_code(lambda: created.result(30)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    (deleted,) = admin.delete_topics([topic]).values()
    assert error_code(lambda: deleted.result(30)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    change = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    (altered,) = admin.incremental_alter_configs([change]).values()
    assert error_code(lambda: altered.result(30)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert topic in admin.list_topics(timeout=15).topics

    # Taken out of the Secret again, the login goes with it.
    (users_container.secret / "kafka-ui-password").unlink()
    (users_container.secret / "kafka-ui-username").unlink()
    users_container.wait_for_line("user kafka-ui is not in the Secret: its login is deleted")
    users_container.wait_for_line("users (bridge ingest operator) and ACLs applied", times=2)
    assert "Authentication failed" in (login_error(ui) or "")
    # The roles' logins are untouched.
    assert login_error(as_user(cluster, "ingest", cluster.security.password("ingest"))) is None
