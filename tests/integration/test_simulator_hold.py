"""`simulate --hold-until-subscribed`: what HiveMQ routes to no one (MQTT 5 PUBACK reason 0x10)
is sent again until a subscriber exists, so a simulator started with the platform, before the
bridge first subscribes, loses none of its readings."""

from __future__ import annotations

import threading
import time

import pytest
from energy_harness.localstack.hivemq import HiveMQBroker
from energy_pipeline.dataplane.mqtt_client import new_client, persistent_session
from energy_pipeline.simulation.publisher import MqttPublisher

pytestmark = pytest.mark.integration

COUNT = 200


def _publish_all(broker: HiveMQBroker, hold: bool) -> MqttPublisher:
    publisher = MqttPublisher(broker.host, broker.port, f"sim-{hold}", hold_unrouted=hold)
    publisher.connect()
    for n in range(COUNT):
        publisher.publish(f"energy/site-0/temperature/{n}", str(n).encode())
    return publisher


def _subscribe(broker: HiveMQBroker, received: list[str], ready: threading.Event) -> object:
    client = new_client("late-subscriber")
    client.on_message = lambda c, u, msg: received.append(msg.payload.decode())
    client.on_subscribe = lambda *args: ready.set()
    client.connect(broker.host, broker.port, clean_start=True,
                   properties=persistent_session(60))
    client.loop_start()
    client.subscribe("energy/#", qos=1)
    return client


def test_readings_published_before_anyone_subscribed_arrive_once_someone_does(
    own_mqtt_broker: HiveMQBroker,
) -> None:
    publisher = _publish_all(own_mqtt_broker, hold=True)
    # Every message was routed to no one so far: none may count as delivered.
    time.sleep(2)
    assert publisher.stats.confirmed == 0
    assert publisher.stats.held >= COUNT

    received: list[str] = []
    ready = threading.Event()
    client = _subscribe(own_mqtt_broker, received, ready)
    try:
        assert ready.wait(10)
        assert publisher.wait_confirmed(timeout=30)
        deadline = time.monotonic() + 10
        while len(set(received)) < COUNT and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(received) == {str(n) for n in range(COUNT)}
        assert publisher.stats.confirmed == COUNT
    finally:
        client.loop_stop()
        client.disconnect()
        publisher.close()


def test_without_hold_unrouted_readings_count_as_confirmed_and_are_gone(
    own_mqtt_broker: HiveMQBroker,
) -> None:
    """The default keeps the old contract (a PUBACK is a confirmation), which is why the
    platform chart's simulator turns holding on."""
    publisher = _publish_all(own_mqtt_broker, hold=False)
    try:
        assert publisher.wait_confirmed(timeout=30)
        assert publisher.stats.confirmed == COUNT
        assert publisher.stats.held == 0
    finally:
        publisher.close()
