"""The paho-mqtt internals that dataplane/mqtt_client.py uses are still those it was written
against: the pinned release, with every private name it relies on.

When this fails after a paho-mqtt upgrade, the bridge may still seem to work while, say, the
lean PUBLISH handling is silently no longer called; the message says what to re-check.
"""

from __future__ import annotations

import ast
import inspect
import tomllib
from pathlib import Path

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from energy_pipeline.dataplane import mqtt_client

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RECHECK = (
    "re-read paho's Client._handle_publish, _create_socket, _send_puback (the PUBACK bytes) and "
    "_packet_queue (writes deferred while on_socket_register_write is set) against "
    "BufferedClient in workers/energy_pipeline/dataplane/mqtt_client.py, run "
    "tests/unit/test_mqtt_buffered_socket.py and tests/e2e/test_data_plane.py, then update "
    "PAHO_VERSION and PAHO_INTERNALS there"
)


def pinned_paho() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [d.split("==", 1)[1] for d in project["dependencies"] if d.startswith("paho-mqtt==")]
    assert len(pins) == 1, "pyproject.toml must pin paho-mqtt exactly (paho-mqtt==X.Y.Z)"
    return pins[0]


def private_names_used(source: str) -> set[str]:
    """`_name` attributes read and `_name` methods overridden, outside BufferedSocket (whose
    own attributes wrap a plain socket, not paho)."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            if node.name == "BufferedSocket":
                continue
            names |= {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_paho_is_the_release_mqtt_client_was_written_against() -> None:
    installed = paho.mqtt.__version__
    pin = pinned_paho()
    assert installed == pin == mqtt_client.PAHO_VERSION, (
        f"paho-mqtt {installed} is installed and pyproject.toml pins {pin}, but "
        f"mqtt_client.py's use of paho internals was written against "
        f"{mqtt_client.PAHO_VERSION}: {RECHECK}"
    )

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    problems = []
    for name, params in mqtt_client.PAHO_INTERNALS.items():
        if params is None:
            if not hasattr(client, name):
                problems.append(f"paho's Client has no attribute {name} any more")
            continue
        method = getattr(mqtt.Client, name, None)
        if not callable(method):
            problems.append(f"paho's Client has no method {name} any more")
        elif tuple(inspect.signature(method).parameters) != params:
            problems.append(
                f"paho's Client.{name}{inspect.signature(method)} no longer takes {params}"
            )
    if not {"command", "packet"} <= set(getattr(client, "_in_packet", {})):
        problems.append("paho's Client._in_packet has no 'command' and 'packet' any more")
    undeclared = private_names_used(inspect.getsource(mqtt_client)) - set(
        mqtt_client.PAHO_INTERNALS
    )
    if undeclared:
        problems.append(f"mqtt_client.py uses {sorted(undeclared)}, not in PAHO_INTERNALS")
    assert not problems, "; ".join(problems) + f": {RECHECK}"
