"""The umbrella chart with HiveMQ's secure mode: the example EnergyPipeline it renders reaches
the broker's TLS listener, verifies it against the CA of the broker's certificate and logs in,
and the operator turns that spec into a bridge with the CA mounted where MQTT_CA_FILE points.

Marked `cluster` like test_charts_render (the helm binary comes from the cached Kubernetes
tools build; no API server is started here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from energy_operator import crd
from energy_operator import render as operator_render

from unit.test_charts_render import (  # noqa: F401 - its fixtures and helpers
    by_kind,
    default_docs,
    helm,
    platform_chart,
    render,
)

pytestmark = pytest.mark.cluster

# What the hivemq chart requires in the secure mode, and the bridge's own MQTT user (the
# chart has no Secret with a bridge password: the users file holds hashes only).
SECURE_VALUES = {
    "hivemq": {
        "secure": True,
        "auth": {"extension": {"image": "registry.example/hivemq-auth:1"},
                 "credentialsSecret": "energy-mqtt-users"},
        "tls": {"secretName": "energy-hivemq-tls"},
    },
    "example": {"extraSpec": {"mqtt": {"credentialsSecret": {"name": "energy-mqtt-bridge"}}}},
}


@pytest.fixture(scope="module")
def secure_docs(helm: Path, platform_chart: Path,  # noqa: F811
                tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(helm, platform_chart, SECURE_VALUES, tmp_path_factory.mktemp("mqtt-tls"))


def example_mqtt(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(docs, "EnergyPipeline")["energy"]["spec"]["mqtt"]


def test_by_default_the_example_uses_the_plain_listener(
    default_docs: list[dict[str, Any]],  # noqa: F811
) -> None:
    assert example_mqtt(default_docs) == {"host": "energy-hivemq.energy.svc", "port": 1883}


def test_secure_hivemq_gives_the_example_the_tls_port_ca_and_credentials(
    secure_docs: list[dict[str, Any]],
) -> None:
    mqtt = example_mqtt(secure_docs)
    assert mqtt == {
        "host": "energy-hivemq.energy.svc",
        "port": 8883,
        "tls": {"caSecret": {"name": "energy-hivemq-tls", "key": "ca.crt"}},
        "credentialsSecret": {"name": "energy-mqtt-bridge"},
    }
    # The port is the broker Service's only one, the CA Secret the one its certificate is in.
    service = by_kind(secure_docs, "Service")["energy-hivemq"]
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("mqtts", 8883)]
    assert mqtt["host"].startswith(service["metadata"]["name"] + ".")
    pod = by_kind(secure_docs, "StatefulSet")["energy-hivemq"]["spec"]["template"]["spec"]
    (tls,) = [v for v in pod["volumes"] if v["name"] == "tls-secret"]
    assert tls["secret"]["secretName"] == mqtt["tls"]["caSecret"]["name"]


def test_the_operator_mounts_that_ca_into_the_bridge(
    secure_docs: list[dict[str, Any]],
) -> None:
    pipeline = by_kind(secure_docs, "EnergyPipeline")["energy"]
    objs = {(c["kind"], c["metadata"]["name"]): c
            for c in operator_render.render_children("energy", "energy", pipeline["spec"])}
    data = objs[("ConfigMap", "energy-config")]["data"]
    assert (data["MQTT_PORT"], data["MQTT_CA_FILE"]) == ("8883", crd.MQTT_CA_FILE)
    pod = objs[("Deployment", "energy-bridge")]["spec"]["template"]["spec"]
    assert {"name": "mqtt-ca", "secret": {
        "secretName": "energy-hivemq-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
    } in pod["volumes"]
    env = {e["name"]: e["valueFrom"] for e in pod["containers"][0]["env"]}
    assert env["MQTT_PASSWORD"] == {
        "secretKeyRef": {"name": "energy-mqtt-bridge", "key": "password"}}
    assert "MQTT_CA_FILE" in env


def test_tls_without_the_secure_mode_also_moves_the_example_to_tls(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    docs = render(helm, platform_chart,
                  {"hivemq": {"tls": {"enabled": True, "secretName": "mqtt-cert"}}}, tmp_path)
    assert example_mqtt(docs) == {
        "host": "energy-hivemq.energy.svc", "port": 8883,
        "tls": {"caSecret": {"name": "mqtt-cert", "key": "ca.crt"}}}
