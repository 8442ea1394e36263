"""The secured HiveMQ (TLS listener only, our auth extension reading a credentials file with
hashed passwords): who may connect, publish and subscribe, shown with our client (paho), the
real bridge worker and Kafka, and with clients nobody here wrote (Debian's mosquitto_pub /
mosquitto_sub, openssl s_client).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Consumer
from energy_harness.localstack import KafkaCluster
from energy_harness.localstack.hivemq import SecureMqtt
from energy_harness.localstack.hivemq_security import make_broker_tls, write_credentials
from energy_harness.localstack.install import require
from energy_harness.localstack.workers import WorkerProcess, service_env
from energy_pipeline.core.contracts import SENSOR_NAMES, kafka_topic

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = 0x87
BAD_USER_NAME_OR_PASSWORD = 0x86


@dataclass
class Session:
    """One paho MQTT 5 connection over TLS, recording every answer the broker gave."""

    connack: threading.Event = field(default_factory=threading.Event)
    connack_code: int | None = None
    pubacks: dict[int, int] = field(default_factory=dict)
    subacks: list[int] = field(default_factory=list)
    disconnect_code: int | None = None
    disconnected: threading.Event = field(default_factory=threading.Event)
    client: mqtt.Client | None = None


def connect(
    secure: SecureMqtt, user: str | None, password: str | None = None, ca_file: str | None = None,
    client_id: str | None = None,
) -> Session:
    """Connected as `user` with a client id of its own (`<user>-...`) unless one is given."""
    session = Session()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or f"{user or 't'}-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
        reconnect_on_failure=False,
    )
    client.tls_set(ca_certs=ca_file or secure.ca_file)
    if user is not None:
        client.username_pw_set(user, secure.users[user].password if password is None else password)

    def on_connect(c, u, flags, rc, props) -> None:
        session.connack_code = rc.value
        session.connack.set()

    def on_publish(c, u, mid, rc, props) -> None:
        session.pubacks[mid] = rc.value

    def on_subscribe(c, u, mid, rcs, props) -> None:
        session.subacks.extend(rc.value for rc in rcs)

    def on_disconnect(c, u, flags, rc, props) -> None:
        session.disconnect_code = rc.value
        session.disconnected.set()

    client.on_connect, client.on_publish = on_connect, on_publish
    client.on_subscribe, client.on_disconnect = on_subscribe, on_disconnect
    client.connect(secure.broker.host, secure.broker.port, keepalive=30)
    client.loop_start()
    session.client = client
    assert session.connack.wait(20), "no CONNACK"
    return session


def close(session: Session) -> None:
    assert session.client is not None
    session.client.disconnect()
    session.client.loop_stop()


CLIENT_IDENTIFIER_NOT_VALID = 0x85


def test_a_user_may_only_use_its_own_client_ids(secure_mqtt: SecureMqtt) -> None:
    """A client id names a session: a device that connected with the bridge's id would take
    the bridge's session over, with the readings queued for it."""
    for client_id, expected in [("bridge-energy-bridge-7d9f", CLIENT_IDENTIFIER_NOT_VALID),
                                ("bridge", CLIENT_IDENTIFIER_NOT_VALID),
                                ("device-ab", CLIENT_IDENTIFIER_NOT_VALID),
                                ("device-a", 0), ("device-a-meter-1", 0)]:
        session = connect(secure_mqtt, "device-a", client_id=client_id)
        try:
            assert session.connack_code == expected, client_id
        finally:
            close(session)
    # mosquitto's default id (mosq-...) is refused the same way.
    refused = mosquitto("mosquitto_pub", secure_mqtt, "--cafile", secure_mqtt.ca_file,
                        "-V", "5", "-q", "1", "-u", "device-a", "-P",
                        secure_mqtt.users["device-a"].password,
                        "-t", "energy/site-a/temperature/0", "-m", "{}")
    assert (refused.returncode, refused.stderr.splitlines()[:1]) == (
        CLIENT_IDENTIFIER_NOT_VALID, ["Connection error: Client Identifier not valid"])


def test_anonymous_connect_is_refused_not_authorized(secure_mqtt: SecureMqtt) -> None:
    session = connect(secure_mqtt, None)
    try:
        assert session.connack_code == NOT_AUTHORIZED
    finally:
        close(session)


@pytest.mark.parametrize(
    ("user", "password"),
    [("device-a", "not-the-password"), ("nobody", "whatever"), ("bridge", "")],
    ids=["wrong-password", "unknown-user", "empty-password"],
)
def test_bad_login_is_refused_bad_user_name_or_password(
    secure_mqtt: SecureMqtt, user: str, password: str
) -> None:
    secure_mqtt.users.setdefault("nobody", secure_mqtt.users["device-a"])  # only for connect()
    session = connect(secure_mqtt, user, password)
    try:
        assert session.connack_code == BAD_USER_NAME_OR_PASSWORD
    finally:
        close(session)
        secure_mqtt.users.pop("nobody", None)


def test_device_may_publish_only_under_its_site_and_not_subscribe(
    secure_mqtt: SecureMqtt,
) -> None:
    session = connect(secure_mqtt, "device-a")
    client = session.client
    assert client is not None and session.connack_code == 0
    try:
        own = client.publish("energy/site-a/temperature/0", b"{}", qos=1)
        own.wait_for_publish(10)
        # No subscriber in this broker: success, reported as "no matching subscribers".
        assert session.pubacks[own.mid] == 0x10
        client.subscribe("energy/#", qos=1)
        deadline = time.monotonic() + 10
        while not session.subacks and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session.subacks == [NOT_AUTHORIZED]
        forged = client.publish("energy/site-b/temperature/0", b"{}", qos=1)
        # HiveMQ answers PUBACK 0x87 and then disconnects the client with 0x87.
        assert session.disconnected.wait(10)
        assert session.pubacks.get(forged.mid) == NOT_AUTHORIZED
        assert session.disconnect_code == NOT_AUTHORIZED
    finally:
        close(session)


def test_bridge_may_only_hold_its_shared_subscription(secure_mqtt: SecureMqtt) -> None:
    session = connect(secure_mqtt, "bridge")
    client = session.client
    assert client is not None and session.connack_code == 0
    try:
        client.subscribe("$share/bridge/energy/#", qos=1)
        client.subscribe("energy/#", qos=1)  # not shared: would see every reading twice
        client.subscribe("$share/other/energy/#", qos=1)
        deadline = time.monotonic() + 10
        while len(session.subacks) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session.subacks == [1, NOT_AUTHORIZED, NOT_AUTHORIZED]
        forged = client.publish("energy/site-a/temperature/0", b"{}", qos=1)
        assert session.disconnected.wait(10)
        assert session.pubacks.get(forged.mid) == NOT_AUTHORIZED
    finally:
        close(session)


def test_untrusted_certificate_fails_the_handshake(
    secure_mqtt: SecureMqtt, tmp_path: Path
) -> None:
    other_ca = make_broker_tls(tmp_path / "other", ca_name="someone else's CA").ca_cert
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        connect(secure_mqtt, "device-a", ca_file=str(other_ca))


def test_rotated_credentials_file_takes_effect_without_restart(
    secure_mqtt: SecureMqtt, tmp_path: Path
) -> None:
    assert secure_mqtt.broker.credentials_file is not None
    before = dict(secure_mqtt.users)
    old_password = before["device-b"].password
    rotated = {**before, "device-b": type(before["device-b"])(
        "device-b", "rotated-" + uuid.uuid4().hex, "publish", "energy/site-b/#"
    )}
    # Written atomically (rename), as the kubelet swaps a Secret volume's files.
    write_credentials(secure_mqtt.broker.credentials_file, list(rotated.values()))
    try:
        secure_mqtt.users.update(rotated)
        session = connect(secure_mqtt, "device-b")
        close(session)
        assert session.connack_code == 0
        session = connect(secure_mqtt, "device-b", old_password)
        close(session)
        assert session.connack_code == BAD_USER_NAME_OR_PASSWORD
    finally:
        write_credentials(secure_mqtt.broker.credentials_file, list(before.values()))
        secure_mqtt.users.update(before)


# -- clients nobody here wrote -----------------------------------------------------------------


def mosquitto(tool: str, secure: SecureMqtt, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require(tool), "-h", secure.broker.host, "-p", str(secure.broker.port), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def login(secure: SecureMqtt, user: str, password: str | None = None) -> list[str]:
    """User, password and a client id of the user's own (mosquitto's default, mosq-..., is
    not one: the extension refuses it, see test_a_user_may_only_use_its_own_client_ids)."""
    return ["-u", user, "-P", secure.users[user].password if password is None else password,
            "-i", f"{user}-{uuid.uuid4().hex[:8]}"]


def test_mosquitto_clients_see_the_same_refusals(secure_mqtt: SecureMqtt) -> None:
    """Exit statuses and messages of mosquitto 2.0.11 (Debian bookworm): for MQTT 5 the exit
    status of a refused CONNECT is the CONNACK reason code."""
    ca = ["--cafile", secure_mqtt.ca_file]
    v5 = ["-V", "5", "-q", "1"]
    pub = ["-t", "energy/site-a/temperature/0", "-m", "{}"]

    def first_line(result: subprocess.CompletedProcess[str]) -> tuple[int, str]:
        return result.returncode, result.stderr.splitlines()[0] if result.stderr else ""

    anonymous = mosquitto("mosquitto_pub", secure_mqtt, *ca, *v5, *pub)
    assert first_line(anonymous) == (NOT_AUTHORIZED, "Connection error: Not authorized")
    anonymous_311 = mosquitto("mosquitto_pub", secure_mqtt, *ca, "-q", "1", *pub)
    assert first_line(anonymous_311) == (
        5, "Connection error: Connection Refused: not authorised."
    )
    wrong = mosquitto(
        "mosquitto_pub", secure_mqtt, *ca, *v5, *login(secure_mqtt, "device-a", "x"), *pub
    )
    assert first_line(wrong) == (
        BAD_USER_NAME_OR_PASSWORD, "Connection error: Bad User Name or Password"
    )
    allowed = mosquitto("mosquitto_pub", secure_mqtt, *ca, *v5, *login(secure_mqtt, "device-a"),
                        *pub)
    assert (allowed.returncode, allowed.stderr) == (0, "")
    # mosquitto_pub reports the PUBACK's reason code and reason string but exits 0.
    forged = mosquitto("mosquitto_pub", secure_mqtt, *ca, *v5, *login(secure_mqtt, "device-a"),
                       "-t", "energy/site-b/temperature/0", "-m", "{}")
    # Then HiveMQ disconnects it; when that lands before mosquitto_pub's own DISCONNECT, it
    # adds "Error: The client is not currently connected." (seen under load): not compared.
    assert forged.stderr.splitlines()[:2] == [
        "Warning: Publish 1 failed: Not authorized.",
        "Not authorized to publish on topic 'energy/site-b/temperature/0' with QoS '1' and "
        "retain 'false'",
    ]
    subscribe = mosquitto("mosquitto_sub", secure_mqtt, *ca, *v5, *login(secure_mqtt, "device-a"),
                          "-t", "energy/#", "-C", "1", "-W", "5")
    assert (subscribe.stdout, subscribe.stderr) == ("", "All subscription requests were denied.\n")
    # Plain MQTT against the TLS listener: the broker drops it.
    plain = mosquitto("mosquitto_pub", secure_mqtt, *v5, *login(secure_mqtt, "device-a"), *pub)
    assert first_line(plain) == (7, "Error: The connection was lost.")


def listening_ports(pid: int) -> set[int]:
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return {
        int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if f"pid={pid}," in line
    }


def test_only_the_tls_listener_is_open(secure_mqtt: SecureMqtt) -> None:
    process = secure_mqtt.broker.process
    assert process is not None and process.pid is not None
    # The broker's only listening socket is the TLS one: there is no plain MQTT port at all.
    assert listening_ports(process.pid) == {secure_mqtt.broker.port}
    handshake = subprocess.run(
        [require("openssl"), "s_client", "-connect",
         f"{secure_mqtt.broker.host}:{secure_mqtt.broker.port}", "-CAfile", secure_mqtt.ca_file,
         "-verify_return_error", "-verify_ip", secure_mqtt.broker.host, "-brief"],
        input="", capture_output=True, text=True, timeout=30,
    )
    assert handshake.returncode == 0, handshake.stderr
    assert "Verification: OK" in handshake.stderr


# -- the bridge worker and Kafka -----------------------------------------------------------


def reading(site: str, sensor: str, device: int, minute: int) -> tuple[str, bytes]:
    ts = f"2025-01-01T10:{minute:02d}:00Z"
    payload = {"ts": ts, "value": minute + device / 10, "seq": minute}
    return f"energy/{site}/{sensor}/{device}", json.dumps(payload).encode()


def kafka_readings(bootstrap: str, prefix: str, expected: int, quiet_s: float = 5.0) -> set:
    """Every record of the reading topics, read until `expected` arrived and then `quiet_s`
    more seconds passed without another."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:6]}",
         "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([kafka_topic(prefix, s) for s in SENSOR_NAMES])
    got: list = []
    deadline = time.monotonic() + 90
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(500, 0.5) if m.error() is None]
            if batch:
                got += batch
                last_new = time.monotonic()
            elif len(got) >= expected and time.monotonic() - last_new > quiet_s:
                break
    finally:
        consumer.close()
    records = set()
    for m in got:
        value = json.loads(m.value())
        records.add((value["site"], value["sensor"], value["device"], value["ts"], value["value"]))
    assert len(records) == len(got), "a reading arrived twice"
    return records


# 5: one shared subscription per sensor type, `$share/bridge/energy/+/<sensor>/#`, which the
# bridge user's `$share/bridge/energy/#` permission must cover, on connections whose client
# ids (`<id>-<n>`) the `<user>-...` rule must allow.
@pytest.mark.parametrize("connections", ["1", "5"])
def test_bridge_over_tls_moves_exactly_the_authorised_readings(
    secure_mqtt: SecureMqtt,
    kafka_cluster: KafkaCluster,
    topic_prefix: str,
    tmp_path: Path,
    connections: str,
) -> None:
    env = service_env(
        kafka_cluster.bootstrap_servers, "postgresql://unused/unused", secure_mqtt.broker.host,
        secure_mqtt.broker.port, KAFKA_TOPIC_PREFIX=topic_prefix, PIPELINE_NAME="mqtt-secure",
        MQTT_CLIENT_ID=f"bridge-{topic_prefix}", BRIDGE_CONNECTIONS=connections,
        **secure_mqtt.client_env("bridge", tmp_path / "secrets"),
    )
    bridge = WorkerProcess("bridge", ["bridge"], env, tmp_path / "logs").start()
    try:
        bridge.wait_ready()
        # First a forged reading (device-a for site-b): refused, so it never reaches the
        # bridge's queue, which it would have entered before every reading published below.
        forger = connect(secure_mqtt, "device-a")
        assert forger.client is not None
        forged = forger.client.publish(*reading("site-b", "temperature", 0, 59), qos=1)
        assert forger.disconnected.wait(10)
        close(forger)
        assert forger.pubacks.get(forged.mid) == NOT_AUTHORIZED

        expected = set()
        for user, site in (("device-a", "site-a"), ("device-b", "site-b")):
            session = connect(secure_mqtt, user)
            assert session.client is not None and session.connack_code == 0
            infos = []
            for sensor in ("temperature", "humidity"):
                for device in range(2):
                    for minute in range(10):
                        infos.append(session.client.publish(*reading(site, sensor, device, minute),
                                                            qos=1))
                        expected.add((site, sensor, str(device),
                                      f"2025-01-01T10:{minute:02d}:00Z", minute + device / 10))
            for info in infos:
                info.wait_for_publish(10)
            close(session)
            assert all(session.pubacks[i.mid] == 0 for i in infos)

        got = kafka_readings(kafka_cluster.bootstrap_servers, topic_prefix, len(expected))
        assert got == expected
        bridge.require_alive()
    finally:
        bridge.stop(timeout=30)


def test_bridge_with_refused_credentials_says_so(
    secure_mqtt: SecureMqtt, kafka_cluster: KafkaCluster, topic_prefix: str, tmp_path: Path
) -> None:
    env = service_env(
        kafka_cluster.bootstrap_servers, "postgresql://unused/unused", secure_mqtt.broker.host,
        secure_mqtt.broker.port, KAFKA_TOPIC_PREFIX=topic_prefix, PIPELINE_NAME="mqtt-secure",
        **secure_mqtt.client_env("bridge", tmp_path / "secrets"),
    )
    Path(env["MQTT_PASSWORD_FILE"]).write_text("wrong\n")
    bridge = WorkerProcess("bridge", ["bridge"], env, tmp_path / "logs").start()
    try:
        deadline = time.monotonic() + 60
        detail = ""
        while time.monotonic() < deadline and "refused" not in detail:
            detail = bridge.ready()[1]
            time.sleep(0.3)
        where = f"{secure_mqtt.broker.host}:{secure_mqtt.broker.port}"
        assert detail == (
            f"mqtt: the MQTT broker at MQTT_HOST:MQTT_PORT {where} refused MQTT_USERNAME 'bridge': "
            "Bad user name or password; check MQTT_USERNAME and MQTT_PASSWORD_FILE (or "
            "MQTT_PASSWORD) against the broker's credentials"
        )
    finally:
        bridge.stop(timeout=30)


def simulate(
    secure: SecureMqtt, env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    from energy_harness.localstack.workers import energy_pipeline_argv

    return subprocess.run(
        energy_pipeline_argv(["simulate", "--sites", "1", "--devices", "1", "--duration", "1h",
                              "--start", "2025-01-01T00:00:00Z"]),
        env={**service_env("127.0.0.1:1", "postgresql://unused/unused", secure.broker.host,
                           secure.broker.port), **env},
        capture_output=True, text=True, timeout=120,
    )


def test_simulator_fails_in_one_line_on_wrong_ca_and_refused_login(
    secure_mqtt: SecureMqtt, tmp_path: Path
) -> None:
    where = f"{secure_mqtt.broker.host}:{secure_mqtt.broker.port}"
    env = secure_mqtt.client_env("device-a", tmp_path / "secrets")
    other_ca = make_broker_tls(tmp_path / "other", ca_name="someone else's CA").ca_cert

    wrong_ca = simulate(secure_mqtt, {**env, "MQTT_CA_FILE": str(other_ca)}, tmp_path)
    assert wrong_ca.returncode == 1
    assert wrong_ca.stderr.strip().splitlines() == [
        "energy-pipeline simulate: error: cannot reach the MQTT broker at MQTT_HOST:MQTT_PORT "
        # The broker sends its CA along with its certificate: a self-signed one we do not trust.
        f"{where} (its TLS certificate is not trusted: self-signed certificate in certificate "
        "chain); set MQTT_CA_FILE to the CA that signed the broker's certificate and MQTT_HOST "
        "to a name the certificate holds"
    ]
    Path(env["MQTT_PASSWORD_FILE"]).write_text("wrong\n")
    refused = simulate(secure_mqtt, env, tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "energy-pipeline simulate: error: the MQTT broker at MQTT_HOST:MQTT_PORT "
        f"{where} refused MQTT_USERNAME 'device-a': Bad user name or password; check "
        "MQTT_USERNAME and MQTT_PASSWORD_FILE (or MQTT_PASSWORD) against the broker's "
        "credentials"
    )
