"""BufferedSocket: the bridge's read-ahead / write-coalescing socket under paho-mqtt."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from energy_pipeline.mqtt_client import BufferedClient, BufferedSocket, new_client

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
