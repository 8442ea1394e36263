"""BufferedSocket: the bridge's read-ahead / write-coalescing socket under paho-mqtt."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator

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


class FakeBroker:
    """The broker's end of one client's TCP connection: raw MQTT bytes in and out."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.server = socket.create_server(("127.0.0.1", 0))
        client.connect("127.0.0.1", self.server.getsockname()[1], keepalive=60)
        self.conn, _ = self.server.accept()
        self.conn.settimeout(5)

    def write_client(self) -> None:
        """What the owner's loop does each round (a plain client has written already)."""
        if self.client.want_write():
            self.client.loop_write()
        sock = self.client.socket()
        if isinstance(sock, BufferedSocket):
            assert sock.flush()

    def received(self) -> bytes:
        self.conn.setblocking(False)
        try:
            return self.conn.recv(1 << 16)
        except BlockingIOError:
            return b""
        finally:
            self.conn.settimeout(5)

    def send(self, data: bytes, until: Callable[[], bool]) -> None:
        self.conn.sendall(data)
        for _ in range(100):
            select.select([self.client.socket()], [], [], 0.05)
            self.client.loop_read()
            if until():
                return
        raise AssertionError("the client did not handle the packet")

    def close(self) -> None:
        self.client.socket().close()
        self.conn.close()
        self.server.close()


def connected(client: mqtt.Client) -> FakeBroker:
    broker = FakeBroker(client)
    broker.write_client()
    assert broker.conn.recv(1 << 16)[:1] == b"\x10"  # CONNECT
    state: list[bool] = []
    client.on_connect = lambda *_: state.append(True)
    broker.send(b"\x20\x03\x00\x00\x00", until=lambda: bool(state))  # CONNACK, no properties
    return broker


def publish_packet(
    topic: bytes, payload: bytes, qos: int, mid: int, properties: bytes = b"\x00"
) -> tuple[int, bytearray]:
    """(fixed-header byte, variable header + payload) of an MQTT 5 PUBLISH."""
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    return 0x30 | (qos << 1) | 0x09, bytearray(body + properties + payload)


def frame(header: int, packet: bytearray) -> bytes:
    """The packet on the wire: fixed-header byte, remaining length (a varint), the rest."""
    length, size = b"", len(packet)
    while True:
        size, digit = size >> 7, size & 0x7F
        length += bytes([digit | (0x80 if size else 0)])
        if not size:
            return bytes([header]) + length + bytes(packet)


def received(header: int, packet: bytearray, lean: bool) -> list[tuple]:
    """What on_message gets when the broker sends the packet: by the bridge's client
    (BufferedClient's lean path) or by a plain paho client."""
    client = new_client("lean" if lean else "paho", manual_ack=True, buffered=lean)
    broker = connected(client)
    got: list[tuple] = []
    client.on_message = lambda _c, _u, m: got.append(
        (m.topic, m.payload, m.mid, m.qos, m.dup, m.retain)
    )
    try:
        broker.send(frame(header, packet), until=lambda: bool(got))
    finally:
        broker.close()
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
    assert received(header, bytearray(packet), lean=True) == received(
        header, bytearray(packet), lean=False
    )
    assert len(received(header, bytearray(packet), lean=True)) == 1


def test_a_reading_without_properties_skips_pahos_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def paho_path(self: mqtt.Client) -> mqtt.MQTTErrorCode:
        raise AssertionError("took paho's property parser")

    header, packet = publish_packet(b"energy/s/temperature/1", b'{"value":1}', 1, 9)
    monkeypatch.setattr(mqtt.Client, "_handle_publish", paho_path)
    assert received(header, packet, lean=True)[0][:3] == (
        "energy/s/temperature/1",
        b'{"value":1}',
        9,
    )


def test_packets_wait_for_the_owners_loop_write() -> None:
    client = new_client("deferred", manual_ack=True, buffered=True)
    broker = FakeBroker(client)
    try:
        # paho queued CONNECT instead of writing it, even to the buffer.
        assert client.want_write()
        sock = client.socket()
        assert isinstance(sock, BufferedSocket) and sock.unflushed() == 0
        time.sleep(0.05)
        assert broker.received() == b""
        broker.write_client()
        assert broker.conn.recv(1 << 16)[:1] == b"\x10"
    finally:
        broker.close()


@pytest.mark.parametrize("buffered", [False, True])
def test_acknowledge_writes_what_pahos_ack_writes(buffered: bool) -> None:
    """PUBACKs of the bridge's client and of paho's own ack(), as the broker receives them."""
    client = new_client("acks", manual_ack=True, buffered=buffered)
    broker = connected(client)
    try:
        mids: list[int] = []
        client.on_message = lambda _c, _u, m: mids.append(m.mid)
        header, packet = publish_packet(b"energy/s/temperature/1", b'{"value":1}', 1, 0x1234)
        broker.send(bytes([header, len(packet)]) + packet, until=lambda: bool(mids))
        assert broker.received() == b""  # manual_ack: nothing until acknowledged
        if buffered:
            assert isinstance(client, BufferedClient)
            client.acknowledge(mids[0], 1)
        else:
            client.ack(mids[0], 1)
        broker.write_client()
        assert broker.conn.recv(1 << 16) == b"\x40\x02\x12\x34"
    finally:
        broker.close()
