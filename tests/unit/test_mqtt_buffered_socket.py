"""BufferedSocket: the bridge's read-ahead / write-coalescing socket under paho-mqtt."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from energy_pipeline.dataplane.mqtt_client import BufferedClient, BufferedSocket, new_client

pytestmark = pytest.mark.unit


@pytest.fixture
def pair() -> Iterator[tuple[BufferedSocket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    buffered = BufferedSocket(ours)
    yield buffered, theirs
    buffered.close()
    theirs.close()


def test_one_system_read_serves_many_small_reads(
    pair: tuple[BufferedSocket, socket.socket],
) -> None:
    buffered, peer = pair
    peer.sendall(b"\x30\x05hello\x30\x02hi")
    assert buffered.recv(1) == b"\x30"
    # Everything else is already read ahead and reported as pending, as paho expects.
    assert buffered.pending() == 10
    assert buffered.recv(1) == b"\x05"
    assert buffered.recv(5) == b"hello"
    assert buffered.recv(100) == b"\x30\x02hi"  # a short read, as from a real socket
    assert buffered.pending() == 0
    with pytest.raises(BlockingIOError):
        buffered.recv(1)


def test_end_of_stream_is_an_empty_read(pair: tuple[BufferedSocket, socket.socket]) -> None:
    buffered, peer = pair
    peer.sendall(b"ab")
    peer.shutdown(socket.SHUT_WR)
    assert buffered.recv(1) == b"a"
    assert buffered.recv(1) == b"b"
    assert buffered.recv(1) == b""


def test_writes_leave_together_on_flush(pair: tuple[BufferedSocket, socket.socket]) -> None:
    buffered, peer = pair
    for mid in range(1, 4):
        assert buffered.send(b"\x40\x02" + mid.to_bytes(2, "big")) == 4
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(100)  # nothing written before flush()
    assert buffered.unflushed() == 12
    assert buffered.flush() is True
    assert peer.recv(100) == b"\x40\x02\x00\x01\x40\x02\x00\x02\x40\x02\x00\x03"
    assert buffered.unflushed() == 0


def test_a_full_socket_keeps_the_rest_for_later(
    pair: tuple[BufferedSocket, socket.socket],
) -> None:
    buffered, peer = pair
    big = bytes(range(256)) * 40_000  # ~10 MB, more than the kernel buffers hold
    buffered.send(big)
    assert buffered.flush() is False
    assert 0 < buffered.unflushed() < len(big)
    received = bytearray()
    peer.settimeout(5)
    while len(received) < len(big):
        received += peer.recv(1 << 20)
        buffered.flush()
    assert bytes(received) == big


def test_a_broken_connection_surfaces_on_the_next_read(
    pair: tuple[BufferedSocket, socket.socket],
) -> None:
    buffered, peer = pair
    peer.close()
    buffered.send(b"\x40\x02\x00\x01")
    assert buffered.flush() is True  # nothing left to write: the error is kept instead
    with pytest.raises(OSError):
        buffered.recv(1)
    with pytest.raises(OSError):
        buffered.send(b"x")


def test_close_writes_what_is_left(pair: tuple[BufferedSocket, socket.socket]) -> None:
    buffered, peer = pair
    buffered.send(b"\xe0\x00")  # DISCONNECT: paho closes the socket right after queueing it
    buffered.close()
    peer.settimeout(5)
    assert peer.recv(10) == b"\xe0\x00"


def test_new_client_builds_the_buffered_client_only_when_asked() -> None:
    assert isinstance(new_client("a", buffered=True), BufferedClient)
    assert not isinstance(new_client("b"), BufferedClient)


def test_puback_is_the_packet_paho_writes(pair: tuple[BufferedSocket, socket.socket]) -> None:
    buffered, peer = pair
    buffered.send_puback(0x1234)
    buffered.flush()
    peer.settimeout(5)
    assert peer.recv(10) == b"\x40\x02\x12\x34"


def publish_packet(
    topic: bytes, payload: bytes, qos: int, mid: int, properties: bytes = b"\x00"
) -> tuple[int, bytearray]:
    """(fixed-header byte, variable header + payload) of an MQTT 5 PUBLISH."""
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    return 0x30 | (qos << 1) | 0x09, bytearray(body + properties + payload)


def received(client: mqtt.Client, header: int, packet: bytearray, lean: bool) -> list[tuple]:
    got: list[tuple] = []
    client.on_message = lambda _c, _u, m: got.append(
        (m.topic, m.payload, m.mid, m.qos, m.dup, m.retain)
    )
    client._in_packet = {**client._in_packet, "command": header, "packet": packet}
    handle = client._handle_publish if lean else mqtt.Client._handle_publish.__get__(client)
    assert handle() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    return got


@pytest.mark.parametrize(
    ("topic", "payload", "qos", "properties"),
    [
        (b"energy/site-1/temperature/3", b'{"ts":"2025-01-01T00:00:00Z","value":1}', 1, b"\x00"),
        (b"energy/s/humidity/0", b"", 1, b"\x00"),
        (b"energy/s/humidity/0", b"x" * 300, 0, b"\x00"),
        # A message expiry interval property: paho's own parser handles it.
        (b"energy/s/humidity/0", b"{}", 1, b"\x05\x02\x00\x00\x00\x3c"),
        # A content type property.
        (b"a/b", b"{}", 1, b"\x07\x03\x00\x04json"),
    ],
)
def test_lean_publish_handling_matches_paho(
    topic: bytes, payload: bytes, qos: int, properties: bytes
) -> None:
    header, packet = publish_packet(topic, payload, qos, 4711, properties)
    client = new_client("lean", manual_ack=True, buffered=True)
    reference = new_client("paho", manual_ack=True, buffered=True)
    assert received(client, header, bytearray(packet), lean=True) == received(
        reference, header, bytearray(packet), lean=False
    )
    assert len(received(client, header, bytearray(packet), lean=True)) == 1


def test_a_reading_without_properties_skips_pahos_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def paho_path(self: mqtt.Client) -> mqtt.MQTTErrorCode:
        raise AssertionError("took paho's property parser")

    header, packet = publish_packet(b"energy/s/temperature/1", b'{"value":1}', 1, 9)
    client = new_client("lean", manual_ack=True, buffered=True)
    monkeypatch.setattr(mqtt.Client, "_handle_publish", paho_path)
    assert received(client, header, packet, lean=True)[0][:3] == (
        "energy/s/temperature/1",
        b'{"value":1}',
        9,
    )
