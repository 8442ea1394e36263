"""The umbrella chart runs HiveMQ in its secure mode by default: the hook Job makes the
broker's certificate and the MQTT users (the broker's credentials file of hashes, and each
client's password); the example EnergyPipeline and the chart's simulator reach the broker's
TLS listener, verify it against the CA of its certificate and log in, and the operator turns
that spec into a bridge with the CA mounted where MQTT_CA_FILE points.

Marked `cluster` like test_charts_render (the helm binary comes from the cached Kubernetes
tools build; no API server is started here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from energy_operator import crd
from energy_operator import render as operator_render

from unit.test_charts_render import (  # noqa: F401 - its fixtures and helpers
    CHARTS,
    by_kind,
    default_docs,
    helm,
    platform_chart,
    render,
)

pytestmark = pytest.mark.cluster

HOST = "energy-hivemq.energy.svc"
BRIDGE_LOGIN = {"name": "energy-mqtt-users", "usernameKey": "bridge-username",
                "passwordKey": "bridge-password"}


def example_mqtt(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(docs, "EnergyPipeline")["energy"]["spec"]["mqtt"]


def hook_args(docs: list[dict[str, Any]]) -> list[str]:
    job = by_kind(docs, "Job").get("energy-platform-secrets")
    return job["spec"]["template"]["spec"]["containers"][0]["args"] if job else []


def simulator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(docs, "Deployment")["energy-simulator"]["spec"]["template"]["spec"]


def test_by_default_the_example_logs_in_over_tls(
    default_docs: list[dict[str, Any]],  # noqa: F811
) -> None:
    mqtt = example_mqtt(default_docs)
    assert mqtt == {"host": HOST, "port": 8883,
                    "tls": {"caSecret": {"name": "energy-hivemq-tls", "key": "ca.crt"}},
                    "credentialsSecret": BRIDGE_LOGIN}
    # The port is the broker Service's only one, the CA Secret the one its certificate is in.
    service = by_kind(default_docs, "Service")["energy-hivemq"]
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("mqtts", 8883)]
    pod = by_kind(default_docs, "StatefulSet")["energy-hivemq"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls-secret"]["secret"]["secretName"] == "energy-hivemq-tls"
    # The broker sees the users file of hashes only, never the clients' passwords.
    assert volumes["auth-credentials"]["secret"] == {
        "secretName": "energy-mqtt-users", "defaultMode": 0o440,
        "items": [{"key": "users", "path": "users"}]}


def test_the_hook_makes_the_brokers_certificate_and_the_users(
    default_docs: list[dict[str, Any]],  # noqa: F811
) -> None:
    args = hook_args(default_docs)
    assert ("--certificate=energy-hivemq-tls=energy-hivemq.energy.svc,"
            "energy-hivemq.energy.svc.cluster.local,energy-hivemq.energy,energy-hivemq") in args
    # The bridge may only hold its shared subscription; the simulator plays every site. Both
    # under the example's names, which the operator derives from its name, `energy`.
    assert ("--mqtt-users=energy-mqtt-users=bridge:subscribe:$share/energy/energy/#,"
            "simulator:publish:energy/#") in args
    names = by_kind(default_docs, "Role")["energy-platform-secrets"]["rules"][1]["resourceNames"]
    assert {"energy-hivemq-tls", "energy-mqtt-users"} <= set(names)
    assert "energy-mqtt-users" not in by_kind(default_docs, "Secret")


def test_the_extension_comes_from_the_operators_image(
    default_docs: list[dict[str, Any]],  # noqa: F811
) -> None:
    """The project image carries the extension (Dockerfile): its default is the operator's."""
    values = yaml.safe_load((CHARTS / "energy-platform" / "values.yaml").read_text())
    image = values["operator"]["image"]
    assert values["hivemq"]["auth"]["extension"]["image"] == (
        f"{image['repository']}:{image['tag']}")
    pod = by_kind(default_docs, "StatefulSet")["energy-hivemq"]["spec"]["template"]["spec"]
    init = {c["name"]: c for c in pod["initContainers"]}
    assert init["install-auth-extension"]["image"] == f"{image['repository']}:{image['tag']}"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["HIVEMQ_ALLOW_ALL_CLIENTS"] == "false"
    assert env["MQTT_CREDENTIALS_FILE"] == "/etc/hivemq-credentials/users"


def test_the_chart_simulator_logs_in_as_its_own_user_over_tls(
    default_docs: list[dict[str, Any]],  # noqa: F811
) -> None:
    pod = simulator(default_docs)
    container = pod["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["MQTT_PORT"] == "8883"
    # A client id of its user's own: the broker refuses others.
    assert "--client-id=simulator-energy-simulator" in container["args"]
    assert env["MQTT_USERNAME"] == {"secretKeyRef": {"name": "energy-mqtt-users",
                                                     "key": "simulator-username"}}
    volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["MQTT_CA_FILE"] == mounts["mqtt-ca"] + "/ca.crt"
    assert env["MQTT_PASSWORD_FILE"] == mounts["mqtt-login"] + "/password"
    # Only its own password and the CA: never another user's password or the broker's key.
    assert volumes == {
        "mqtt-ca": {"secretName": "energy-hivemq-tls",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}]},
        "mqtt-login": {"secretName": "energy-mqtt-users",
                       "items": [{"key": "simulator-password", "path": "password"}]},
    }


def test_each_device_listed_gets_a_user_for_its_own_site(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    docs = render(helm, platform_chart, {
        "platformSecrets": {"mqtt": {"devices": [{"name": "building-7", "site": "site-007"}]}},
        "simulator": {"enabled": False},
        "example": {"extraSpec": {"mqtt": {"sharedGroup": "ingest-a"}}},
    }, tmp_path)
    assert ("--mqtt-users=energy-mqtt-users=bridge:subscribe:$share/ingest-a/energy/#,"
            "building-7:publish:energy/site-007/#") in hook_args(docs)


def test_the_users_follow_the_examples_name_and_topic_root(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    """The names the operator derives from example.name (or the topicRoot the example sets)
    are the ones the MQTT users may use, and the simulator publishes under that root."""
    docs = render(helm, platform_chart, {
        "platformSecrets": {"mqtt": {"devices": [{"name": "building-7", "site": "site-007"}]}},
        "example": {"name": "campus"},
    }, tmp_path)
    assert ("--mqtt-users=energy-mqtt-users=bridge:subscribe:$share/campus/campus/#,"
            "simulator:publish:campus/#,building-7:publish:campus/site-007/#") in hook_args(docs)
    (simulator,) = [d for d in docs if d["kind"] == "Deployment"
                    and d["metadata"]["name"].endswith("simulator")]
    env = {e["name"]: e.get("value") for e in
           simulator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MQTT_TOPIC_ROOT"] == "campus"
    rooted = render(helm, platform_chart, {
        "simulator": {"enabled": False},
        "example": {"name": "campus", "extraSpec": {"mqtt": {"topicRoot": "grid/campus",
                                                             "sharedGroup": ""}}},
    }, tmp_path)
    # An empty shared group: a plain subscription, which the user is then allowed instead.
    assert ("--mqtt-users=energy-mqtt-users=bridge:subscribe:grid/campus/#"
            in hook_args(rooted))


def test_the_operator_mounts_that_ca_into_the_bridge(
    default_docs: list[dict[str, Any]],  # noqa: F811
) -> None:
    pipeline = by_kind(default_docs, "EnergyPipeline")["energy"]
    objs = {(c["kind"], c["metadata"]["name"]): c
            for c in operator_render.render_children("energy", "energy", pipeline["spec"])}
    data = objs[("ConfigMap", "energy-config")]["data"]
    assert (data["MQTT_PORT"], data["MQTT_CA_FILE"]) == ("8883", crd.MQTT_CA_FILE)
    pod = objs[("Deployment", "energy-bridge")]["spec"]["template"]["spec"]
    assert {"name": "mqtt-ca", "secret": {
        "secretName": "energy-hivemq-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
    } in pod["volumes"]
    env = {e["name"]: e["valueFrom"] for e in pod["containers"][0]["env"]}
    assert env["MQTT_USERNAME"] == {
        "secretKeyRef": {"name": "energy-mqtt-users", "key": "bridge-username"}}
    assert env["MQTT_PASSWORD"] == {
        "secretKeyRef": {"name": "energy-mqtt-users", "key": "bridge-password"}}


def test_plain_mqtt_only_knowingly(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    docs = render(helm, platform_chart, {"hivemq": {"secure": False}}, tmp_path)
    assert example_mqtt(docs) == {"host": HOST, "port": 1883}
    assert not any(a.startswith(("--mqtt-users", "--certificate=energy-hivemq"))
                   for a in hook_args(docs))
    container = simulator(docs)["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MQTT_PORT"] == "1883" and "MQTT_USERNAME" not in env
    assert "--client-id=energy-simulator" in container["args"]


def test_tls_without_the_secure_mode_and_a_certificate_of_ones_own(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    docs = render(helm, platform_chart, {"hivemq": {
        "secure": False, "tls": {"enabled": True, "secretName": "mqtt-cert"}}}, tmp_path)
    assert example_mqtt(docs) == {
        "host": HOST, "port": 8883, "tls": {"caSecret": {"name": "mqtt-cert", "key": "ca.crt"}}}
    # Not the hook's to make: cert-manager's, or the user's.
    assert not any("hivemq" in a for a in hook_args(docs))


def test_a_users_secret_of_ones_own_is_left_to_its_owner(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    docs = render(helm, platform_chart,
                  {"hivemq": {"auth": {"credentialsSecret": "site-mqtt-users"}}}, tmp_path)
    assert example_mqtt(docs)["credentialsSecret"] == {**BRIDGE_LOGIN, "name": "site-mqtt-users"}
    assert not any(a.startswith("--mqtt-users") for a in hook_args(docs))
