"""MQTT security pieces that need no broker: the credentials file's hash format, the secured
HiveMQ's config.xml, the client's TLS and login settings, and charts/hivemq's secure mode."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from energy_harness.localstack.hivemq import TlsListener, render_config_xml
from energy_harness.localstack.hivemq_security import bridge_user, device_user, hash_password
from energy_harness.localstack.kube_install import ensure_kube_tools
from energy_pipeline.core.errors import CommandError
from energy_pipeline.core.settings import MqttSettings, load
from energy_pipeline.dataplane.mqtt_client import login_password, tls_context, tls_enabled

pytestmark = pytest.mark.unit

CHART = Path(__file__).resolve().parents[2] / "charts" / "hivemq"


def test_hash_is_pbkdf2_hmac_sha256_as_the_extension_reads_it() -> None:
    # RFC 7914 section 11's PBKDF2-HMAC-SHA256 vector (P "passwd", S "salt", c 1), first
    # 32 bytes: the extension computes exactly one 32-byte block.
    line = hash_password("passwd", iterations=1, salt=b"salt")
    scheme, iterations, salt, digest = line.split("$")
    assert (scheme, iterations, base64.b64decode(salt)) == ("pbkdf2-sha256", "1", b"salt")
    assert base64.b64decode(digest).hex() == (
        "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
    )


def test_users_get_one_permission_each() -> None:
    device = device_user("device-a", "site-a", "pw")
    assert device.line(iterations=1).split()[:3] == ["device-a", "publish", "energy/site-a/#"]
    bridge = bridge_user(password="pw")
    assert bridge.line(iterations=1).split()[:3] == [
        "bridge", "subscribe", "$share/bridge/energy/#"
    ]


def test_secure_config_has_the_tls_listener_and_no_plain_one() -> None:
    xml = render_config_xml(None, tls=TlsListener(8883, Path("/k/broker.jks")))
    assert "<tcp-listener>" not in xml
    assert xml.count("<tls-tcp-listener>") == 1
    assert "<path>/k/broker.jks</path>" in xml
    assert "<password>${ENV:HIVEMQ_KEYSTORE_PASSWORD}</password>" in xml
    plain = render_config_xml(1883)
    assert "<tcp-listener>" in plain and "<tls-tcp-listener>" not in plain


def mqtt_settings(**env: str) -> MqttSettings:
    return load(MqttSettings, env)


def test_tls_is_off_by_default_and_on_with_a_ca() -> None:
    assert tls_context(mqtt_settings()) is None
    assert tls_enabled(mqtt_settings(MQTT_TLS="true"))
    assert tls_enabled(mqtt_settings(MQTT_CA_FILE="/some/ca.crt"))


def test_unreadable_ca_file_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    with pytest.raises(CommandError) as err:
        tls_context(mqtt_settings(MQTT_CA_FILE=str(missing)))
    assert str(err.value) == (
        f"cannot read MQTT_CA_FILE {missing}: No such file or directory; set MQTT_CA_FILE to a "
        "PEM file of the CA that signed the broker's certificate"
    )


def test_password_file_is_read_at_each_call(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("first\n")
    settings = mqtt_settings(MQTT_USERNAME="bridge", MQTT_PASSWORD_FILE=str(secret))
    assert login_password(settings) == "first"
    secret.write_text("rotated\n")
    assert login_password(settings) == "rotated"
    assert login_password(mqtt_settings(MQTT_PASSWORD="plain")) == "plain"
    with pytest.raises(CommandError, match="both MQTT_PASSWORD and MQTT_PASSWORD_FILE are set"):
        login_password(mqtt_settings(MQTT_PASSWORD="x", MQTT_PASSWORD_FILE=str(secret)))


# -- charts/hivemq ------------------------------------------------------------------------------


SECURE = {
    "secure": True,
    "auth": {"extension": {"image": "registry.example/hivemq-auth:1"},
             "credentialsSecret": "mqtt-users"},
    "tls": {"secretName": "mqtt-tls"},
}


def helm_template(values: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return subprocess.run(
        [str(ensure_kube_tools().helm), "template", "energy", str(CHART), "--namespace", "energy",
         "--values", str(path)],
        capture_output=True, text=True, timeout=120,
    )


def rendered(values: dict[str, Any], tmp_path: Path) -> dict[str, dict[str, Any]]:
    result = helm_template(values, tmp_path)
    assert result.returncode == 0, result.stderr
    return {f"{d['kind']}/{d['metadata']['name']}": d
            for d in yaml.safe_load_all(result.stdout) if d}


def test_chart_default_is_unchanged_plain_and_allow_all(tmp_path: Path) -> None:
    docs = rendered({}, tmp_path)
    pod = docs["StatefulSet/energy-hivemq"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {e["name"]: e["value"] for e in container["env"]}["HIVEMQ_ALLOW_ALL_CLIENTS"] == "true"
    assert [p["name"] for p in container["ports"]] == ["mqtt"]
    assert "command" not in container and "initContainers" not in pod
    config = docs["ConfigMap/energy-hivemq-config"]["data"]["config.xml"]
    assert "<tcp-listener>" in config and "tls-tcp-listener" not in config
    assert [p["port"] for p in docs["Service/energy-hivemq"]["spec"]["ports"]] == [1883]


def test_chart_secure_mode(tmp_path: Path) -> None:
    docs = rendered(SECURE, tmp_path)
    config = docs["ConfigMap/energy-hivemq-config"]["data"]["config.xml"]
    assert "<tcp-listener>" not in config  # no plain MQTT
    assert config.count("<tls-tcp-listener>") == 1 and "<port>8883</port>" in config
    for name in ("energy-hivemq", "energy-hivemq-hl"):
        ports = docs[f"Service/{name}"]["spec"]["ports"]
        assert [(p["name"], p["port"], p["targetPort"]) for p in ports] == [
            ("mqtts", 8883, "mqtts")
        ]
    pod = docs["StatefulSet/energy-hivemq"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HIVEMQ_ALLOW_ALL_CLIENTS"] == "false"  # the entrypoint removes allow-all
    assert env["MQTT_CREDENTIALS_FILE"] == "/etc/hivemq-credentials/users"
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("mqtts", 8883)]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "mqtts"}
    assert "HIVEMQ_KEYSTORE_PASSWORD" in container["command"][-1]
    assert container["command"][-1].endswith(
        "exec /opt/docker-entrypoint.sh /opt/hivemq/bin/run.sh"
    )
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["auth-extension"]["mountPath"] == "/opt/hivemq/extensions/energy-pipeline-auth"
    # A directory mount: a subPath mount would never see the rotated Secret.
    assert mounts["auth-credentials"] == {
        "name": "auth-credentials", "mountPath": "/etc/hivemq-credentials", "readOnly": True
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["auth-credentials"]["secret"]["secretName"] == "mqtt-users"
    assert volumes["tls-secret"]["secret"]["secretName"] == "mqtt-tls"
    assert volumes["keystore"]["emptyDir"]["medium"] == "Memory"
    inits = {c["name"]: c for c in pod["initContainers"]}
    assert set(inits) == {"install-auth-extension", "make-keystore"}
    assert inits["install-auth-extension"]["image"] == "registry.example/hivemq-auth:1"
    assert inits["make-keystore"]["image"] == "hivemq/hivemq-ce:2025.5"


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("image", "auth.extension.image is required in the secure mode"),
        ("credentialsSecret", "auth.credentialsSecret is required in the secure mode"),
        ("secretName", "tls.secretName is required with TLS"),
    ],
)
def test_chart_secure_mode_names_what_is_missing(
    tmp_path: Path, drop: str, message: str
) -> None:
    values = yaml.safe_load(yaml.safe_dump(SECURE))
    if drop == "image":
        values["auth"]["extension"].pop("image")
    elif drop == "credentialsSecret":
        values["auth"].pop("credentialsSecret")
    else:
        values["tls"].pop("secretName")
    result = helm_template(values, tmp_path)
    assert result.returncode != 0
    assert message in result.stderr


def test_chart_refuses_two_authenticators(tmp_path: Path) -> None:
    values = {**SECURE, "auth": {**SECURE["auth"], "fileRbac": {
        "enabled": True, "image": "x", "credentialsSecret": "y"}}}
    result = helm_template(values, tmp_path)
    assert result.returncode != 0
    assert "two authenticators: choose one" in result.stderr
