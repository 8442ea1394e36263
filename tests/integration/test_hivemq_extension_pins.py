"""The jars the project image compiles the HiveMQ extension against are HiveMQ CE's own.

The Dockerfile pins hivemq-extension-sdk and slf4j-api by version and SHA-256 (its build
fetches them from Maven Central); the harness resolves the broker the tests run, HiveMQ CE
HIVEMQ_VERSION, with its dependencies from Maven Central too. When HiveMQ CE moves on, this
fails until the Dockerfile's pins follow.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from energy_harness.localstack.install import ensure_hivemq

pytestmark = pytest.mark.integration

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def pins() -> dict[str, str]:
    return dict(re.findall(r"^ARG ([A-Z0-9_]+)=(\S+)$", DOCKERFILE.read_text(), re.M))


@pytest.mark.parametrize(("artifact", "arg"), [("hivemq-extension-sdk", "HIVEMQ_EXTENSION_SDK"),
                                               ("slf4j-api", "SLF4J_API")])
def test_the_dockerfile_pins_the_brokers_own_jars(artifact: str, arg: str) -> None:
    pinned = pins()
    libs = ensure_hivemq().libs
    (jar,) = libs.glob(f"{artifact}-[0-9]*.jar")
    assert jar.name == f"{artifact}-{pinned[arg]}.jar", f"the broker has {jar.name}"
    assert hashlib.sha256(jar.read_bytes()).hexdigest() == pinned[f"{arg}_SHA256"]
