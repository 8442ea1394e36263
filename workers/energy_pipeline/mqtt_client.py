"""MQTT 5 client construction shared by the simulator and the bridge."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def new_client(
    client_id: str, username: str = "", password: str = "", manual_ack: bool = False
) -> mqtt.Client:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        reconnect_on_failure=True,
        manual_ack=manual_ack,
    )
    if username:
        client.username_pw_set(username, password or None)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client


def persistent_session(
    expiry_seconds: int = 86_400, receive_maximum: int | None = None
) -> Properties:
    """CONNECT properties of a session the broker keeps while we are away.

    Connect with clean_start=False every time, the first time too: Mosquitto persists to disk
    only sessions whose last CONNECT had clean_start false.
    """
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry_seconds
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    return props
