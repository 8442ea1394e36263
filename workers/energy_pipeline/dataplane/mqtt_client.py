"""MQTT 5 client construction shared by the simulator and the bridge.

Every use of paho-mqtt's internals (private names, packet bytes written or read here instead
of by paho) is in this module, listed in PAHO_INTERNALS, and was written against
PAHO_VERSION; tests/unit/test_paho_internals.py fails when another paho version is installed
or a listed name is gone.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from energy_pipeline.core.errors import USAGE, CommandError
from energy_pipeline.core.settings import MqttSettings

# The paho-mqtt release the internals below were read in (pyproject.toml pins it).
PAHO_VERSION = "2.2.0"

# The private names of paho's Client used here (methods with their parameters, attributes
# with None); a new one goes here too, or tests/unit/test_paho_internals.py fails.
PAHO_INTERNALS: dict[str, tuple[str, ...] | None] = {
    "_create_socket": ("self",),  # overridden: the socket becomes a BufferedSocket
    "_handle_publish": ("self",),  # overridden: the lean path for readings
    "_handle_on_message": ("self", "message"),
    "_send_puback": ("self", "mid"),
    "_in_packet": None,  # {"command": fixed-header byte, "packet": the rest}
    "_protocol": None,
    "_manual_ack": None,
}

# PUBACK: fixed header 0x40, remaining length 2, packet id; as paho-mqtt writes it.
_PUBACK = struct.Struct("!BBH")
_PUBACK_HEADER = 0x40


class BufferedSocket:
    """The client's TCP socket with a read-ahead buffer and coalesced writes.

    paho-mqtt reads every packet with at least three recv() calls (command byte, length
    bytes, body) and writes every packet, each 4-byte PUBACK included, with its own send().
    At tens of thousands of messages per second those system calls cost more than the
    messages: here one recv() takes up to 256 KiB and the writes of a loop iteration leave in
    one send() when the owner calls flush(). paho checks `pending()` (as for TLS sockets), so
    buffered bytes are processed without waiting for the socket to become readable.
    """

    READ_SIZE = 256 * 1024

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._in = b""
        self._in_pos = 0
        self._out = bytearray()
        self._error: OSError | None = None

    def recv(self, size: int) -> bytes:
        if self._in_pos >= len(self._in):
            if self._error is not None:
                raise self._error
            data = self._sock.recv(self.READ_SIZE)  # BlockingIOError when nothing is there
            if len(data) <= size:
                return data
            self._in = data
            self._in_pos = 0
        chunk = self._in[self._in_pos : self._in_pos + size]
        self._in_pos += len(chunk)
        return chunk

    def pending(self) -> int:
        # Over TLS the SSL object may hold decrypted bytes the kernel no longer signals.
        inner = getattr(self._sock, "pending", None)
        return len(self._in) - self._in_pos + (inner() if inner else 0)

    def send(self, data: bytes | bytearray) -> int:
        if self._error is not None:
            raise self._error
        self._out += data
        return len(data)

    def send_puback(self, mid: int) -> None:
        """Queue the 4-byte MQTT PUBACK (success, no properties) for packet id `mid`."""
        if self._error is None:
            self._out += _PUBACK.pack(_PUBACK_HEADER, 2, mid)

    def unflushed(self) -> int:
        return len(self._out)

    def flush(self) -> bool:
        """Write what was sent; False if the socket would block (select it for writing)."""
        while self._out:
            try:
                written = self._sock.send(self._out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return False
            except OSError as exc:
                # Reported to paho by the next recv(), which then handles the lost connection.
                self._error = exc
                self._out.clear()
                return True
            del self._out[:written]
        return True

    def close(self) -> None:
        # paho closes the socket right after "sending" DISCONNECT: that must reach the broker.
        try:
            if self._out and self._error is None:
                self._sock.settimeout(2)
                self._sock.sendall(self._out)
        except OSError:
            pass
        finally:
            self._out.clear()
            self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _write_later(client: mqtt.Client, userdata: object, sock: object) -> None:
    """Registered so that paho queues packets instead of writing each at once.

    paho 2.2's `_packet_queue` calls loop_write() itself only when no socket-write callback is
    registered; with one, packets wait for the owner's loop_write(), and all of a round's
    leave in one send() (`BufferedSocket.flush`).
    """


class BufferedClient(mqtt.Client):
    """A paho client whose socket is a `BufferedSocket`, for an owner-driven event loop.

    Use with loop_read()/loop_write()/loop_misc() from one thread, calling
    `socket().flush()` after each round; not with loop_start()/loop_forever(), whose select()
    does not know about unflushed writes. Packets paho sends are queued until the owner's
    loop_write(). `_create_socket` is paho's own factory (as of PAHO_VERSION); over TLS the
    buffer wraps paho's SSLSocket (handshake done), so it buffers decrypted bytes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_socket_register_write = _write_later

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        # Nagle would hold a round's PUBACKs until the broker acknowledged the previous
        # segment, which its delayed ACK does after up to 40 ms; HiveMQ sends a connection
        # nothing new until its 50 messages in flight are acknowledged, so each wait is a
        # stall: 709 msg/s through HiveMQ CE without this, 979 with it (one connection).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return BufferedSocket(sock)

    def acknowledge(self, mid: int, qos: int) -> None:
        """paho's ack() (manual_ack=True): QoS 1 as the very PUBACK bytes ack() would queue,
        written straight to the buffered socket without paho's per-packet bookkeeping (a
        queue entry, a log call and a callback per message).

        Goes to the current connection: packet ids are per connection, so the caller checks
        that the message arrived on this one (`socket()` is the same object).
        """
        if qos != 1:
            self.ack(mid, qos)
            return
        sock = self.socket()
        if isinstance(sock, BufferedSocket):
            sock.send_puback(mid)

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        """paho's handling of an incoming PUBLISH, without its property parser when the
        packet has no properties.

        paho's decode_publish builds and fills a Properties object for every MQTT 5 message:
        ~17 us, a third of the bridge's whole per-message cost. Readings carry no
        properties. QoS 2, MQTT 3, packets with properties and malformed ones take paho's
        own path (`super()`), as does everything else the client receives.
        """
        header = self._in_packet["command"]
        packet = self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        if self._protocol != mqtt.MQTTv5 or qos > 1 or len(packet) < 2:
            return super()._handle_publish()
        topic_end = 2 + int.from_bytes(packet[0:2], "big")
        properties_at = topic_end + 2 if qos else topic_end
        if properties_at >= len(packet) or packet[properties_at] != 0:
            return super()._handle_publish()
        message = mqtt.MQTTMessage(
            mid=int.from_bytes(packet[topic_end:properties_at], "big") if qos else 0,
            topic=bytes(packet[2:topic_end]),
        )
        message.dup = bool(header & 0x08)
        message.qos = qos
        message.retain = bool(header & 0x01)
        message.payload = bytes(packet[properties_at + 1 :])
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(message.mid)
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


def new_client(
    client_id: str,
    settings: MqttSettings | None = None,
    manual_ack: bool = False,
    buffered: bool = False,
) -> mqtt.Client:
    """An MQTT 5 client; with `settings`, logging in and encrypting as they say (MQTT_USERNAME,
    MQTT_PASSWORD / MQTT_PASSWORD_FILE, MQTT_TLS, MQTT_CA_FILE). Raises CommandError for a CA
    or password file that cannot be read."""
    client = (BufferedClient if buffered else mqtt.Client)(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        reconnect_on_failure=True,
        manual_ack=manual_ack,
    )
    if settings is not None:
        refresh_login(client, settings)
        context = tls_context(settings)
        if context is not None:
            client.tls_set_context(context)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client


def tls_enabled(settings: MqttSettings) -> bool:
    return settings.mqtt_tls or bool(settings.mqtt_ca_file)


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """TLS 1.2 or newer, the broker's certificate and host name verified against
    MQTT_CA_FILE (else the system's CAs); None when TLS is off."""
    if not tls_enabled(settings):
        return None
    try:
        context = ssl.create_default_context(cafile=settings.mqtt_ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(
            f"cannot read MQTT_CA_FILE {settings.mqtt_ca_file}: "
            f"{getattr(exc, 'strerror', None) or exc}",
            fix="set MQTT_CA_FILE to a PEM file of the CA that signed the broker's certificate",
            status=USAGE,
        ) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def login_password(settings: MqttSettings) -> str:
    """MQTT_PASSWORD, or the content of MQTT_PASSWORD_FILE (without a final newline) read now."""
    if not settings.mqtt_password_file:
        return settings.mqtt_password
    if settings.mqtt_password:
        raise CommandError(
            "both MQTT_PASSWORD and MQTT_PASSWORD_FILE are set",
            fix="set only one of them", status=USAGE,
        )
    try:
        with open(settings.mqtt_password_file, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except OSError as exc:
        raise CommandError(
            f"cannot read MQTT_PASSWORD_FILE {settings.mqtt_password_file}: "
            f"{exc.strerror or exc}",
            fix="mount the Secret holding the MQTT password there, or unset MQTT_PASSWORD_FILE",
            status=USAGE,
        ) from exc


def refresh_login(client: mqtt.Client, settings: MqttSettings) -> None:
    """Set the user and password for the next (re)connect: a rotated password file counts."""
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, login_password(settings) or None)


def connect_refused(settings: MqttSettings, reason: object) -> CommandError:
    """The one-line error of a CONNECT the broker answered with a refusal (its reason code)."""
    where = f"MQTT_HOST:MQTT_PORT {settings.mqtt_host}:{settings.mqtt_port}"
    if not settings.mqtt_username:
        return CommandError(
            f"the MQTT broker at {where} refused an anonymous connection: {reason}",
            fix="set MQTT_USERNAME and MQTT_PASSWORD_FILE (or MQTT_PASSWORD)",
        )
    return CommandError(
        f"the MQTT broker at {where} refused MQTT_USERNAME {settings.mqtt_username!r}: {reason}",
        fix="check MQTT_USERNAME and MQTT_PASSWORD_FILE (or MQTT_PASSWORD) against the broker's "
        "credentials",
    )


def describe_connect_error(exc: OSError, timeout: float | None = None) -> tuple[str, str]:
    """(what went wrong, what to do) for a failed TCP or TLS connect to the broker."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"its TLS certificate is not trusted: {exc.verify_message or exc.reason}",
            "set MQTT_CA_FILE to the CA that signed the broker's certificate and MQTT_HOST to a "
            "name the certificate holds",
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS handshake failed: {exc.reason or exc}",
            "set MQTT_PORT to the broker's TLS listener (8883), or MQTT_TLS=false for a plain one",
        )
    detail = exc.strerror or type(exc).__name__
    if isinstance(exc, TimeoutError) and timeout is not None:
        detail = f"no answer within {timeout:g} s"
    return detail, "start the broker or set MQTT_HOST and MQTT_PORT to where it listens"


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


def broker_unreachable(host: str, port: int, detail: str, fix: str = "") -> CommandError:
    """The one-line error of a client that cannot reach MQTT_HOST:MQTT_PORT."""
    return CommandError(
        f"cannot reach the MQTT broker at MQTT_HOST:MQTT_PORT {host}:{port} ({detail})",
        fix=fix or "start the broker or set MQTT_HOST and MQTT_PORT to where it listens",
    )


def check_reachable(
    host: str, port: int, timeout: float = 5.0, tls: ssl.SSLContext | None = None
) -> None:
    """Raise `broker_unreachable` unless a TCP connection to the broker opens in `timeout`
    (and, with `tls`, the TLS handshake verifies the broker's certificate).

    For a command's first connection: paho's connect_async reports nothing, and its loop
    retries a refused connection forever (which a long-running worker wants later on).
    """
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        with sock:
            if tls is not None:
                tls.wrap_socket(sock, server_hostname=host).close()
    except OSError as exc:
        detail, fix = describe_connect_error(exc, timeout)
        raise broker_unreachable(host, port, detail, fix) from exc
