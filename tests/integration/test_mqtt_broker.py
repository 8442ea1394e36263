"""The MQTT broker keeps persistent sessions and queued QoS 1 messages, even across a restart."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from energy_harness.localstack import MosquittoBroker
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

pytestmark = pytest.mark.integration


class Subscriber:
    """A QoS 1 subscriber with a persistent MQTT 5 session (clean_start false, 1 h expiry)."""

    def __init__(self, broker: MosquittoBroker, topic: str) -> None:
        self.broker = broker
        self.topic = topic
        self.received: list[str] = []
        self.lock = threading.Lock()
        self.client_id = f"sub-{uuid.uuid4().hex[:8]}"
        self.client: mqtt.Client | None = None

    def connect(self) -> bool:
        """Connects with clean_start false, the first time too, and returns whether the broker
        still had our session; subscribes only when it did not. (Mosquitto persists to disk
        only sessions whose last CONNECT had clean_start false.)"""
        connected = threading.Event()
        session_present: list[bool] = []
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )

        def on_connect(c, userdata, flags, reason_code, properties) -> None:
            session_present.append(flags.session_present)
            connected.set()

        def on_message(c, userdata, msg: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.received.append(msg.payload.decode())

        client.on_connect = on_connect
        client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect(self.broker.host, self.broker.port, clean_start=False, properties=props)
        client.loop_start()
        assert connected.wait(10)
        if not session_present[0]:
            result, _mid = client.subscribe(self.topic, qos=1)
            assert result == mqtt.MQTT_ERR_SUCCESS
            time.sleep(0.5)
        self.client = client
        return session_present[0]

    def disconnect(self) -> None:
        assert self.client is not None
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, count: int, timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    break
            time.sleep(0.1)
        time.sleep(0.5)  # a duplicate or stray message would show up now
        with self.lock:
            return list(self.received)


def publish(broker: MosquittoBroker, topic: str, payloads: list[str]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def test_persistent_session_misses_nothing_across_disconnect_and_broker_restart(
    mqtt_broker: MosquittoBroker,
) -> None:
    topic = f"energy/test-{uuid.uuid4().hex[:6]}/temperature/0"
    subscriber = Subscriber(mqtt_broker, topic)
    assert subscriber.connect() is False, "a new client id must start without a session"
    publish(mqtt_broker, topic, ["live-0", "live-1"])
    assert subscriber.wait_for(2) == ["live-0", "live-1"]

    subscriber.disconnect()
    publish(mqtt_broker, topic, [f"offline-{i}" for i in range(50)])
    mqtt_broker.restart()
    publish(mqtt_broker, topic, [f"after-restart-{i}" for i in range(50)])

    assert subscriber.connect() is True, "broker lost the persistent session"
    expected = (
        ["live-0", "live-1"]
        + [f"offline-{i}" for i in range(50)]
        + [f"after-restart-{i}" for i in range(50)]
    )
    got = subscriber.wait_for(len(expected))
    subscriber.disconnect()
    # QoS 1 is at-least-once: a redelivery is allowed, a loss is not, and order holds.
    deduplicated = list(dict.fromkeys(got))
    assert deduplicated == expected


def test_a_broker_whose_port_was_taken_meanwhile_starts_on_another(tmp_path) -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        broker = MosquittoBroker(tmp_path / "mqtt", port=taken)
        try:
            broker.start()
            assert broker.port != taken
            moved = broker.port
            broker.restart()
            assert broker.port == moved  # clients reconnect to the same address
        finally:
            broker.cleanup()
