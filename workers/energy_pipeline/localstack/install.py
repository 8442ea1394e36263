"""Installs what the local stack runs on: Debian packages and Kafka jars from Maven Central.

Downloads are cached outside the repository, keyed by component and version, so a warm run
finds everything in place and installs nothing.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from energy_pipeline.localstack.process import ServiceError

KAFKA_VERSION = "4.1.1"

_APT_UPDATED = False


def cache_dir() -> Path:
    """Root of all caches: $ENERGY_PIPELINE_CACHE, else ~/.cache/energy-pipeline."""
    configured = os.environ.get("ENERGY_PIPELINE_CACHE")
    root = Path(configured) if configured else Path.home() / ".cache" / "energy-pipeline"
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass(frozen=True)
class SystemDependency:
    """A program the stack needs and the Debian package that provides it."""

    name: str
    debian_package: str

    def locate(self) -> str | None:
        return _locate(self.name)


def _locate(name: str) -> str | None:
    if name in {"postgres", "initdb"}:
        # Debian keeps the server binaries out of PATH, under a versioned directory.
        candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_pg_major)
        if candidates:
            return candidates[-1]
    if name == "mosquitto":
        return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if name == "java":
        java = shutil.which("java")
        return java if java and _java_major(java) >= 17 else None
    return shutil.which(name)


def _pg_major(path: str) -> int:
    match = re.search(r"/postgresql/(\d+)/", path)
    return int(match.group(1)) if match else 0


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


SYSTEM_DEPENDENCIES = (
    SystemDependency("postgres", "postgresql"),
    SystemDependency("initdb", "postgresql"),
    SystemDependency("mosquitto", "mosquitto"),
    SystemDependency("java", "openjdk-17-jre-headless"),
    SystemDependency("mvn", "maven"),
)


def missing_system_dependencies(
    deps: tuple[SystemDependency, ...] = SYSTEM_DEPENDENCIES,
) -> list[SystemDependency]:
    return [dep for dep in deps if dep.locate() is None]


def ensure_system_packages(deps: tuple[SystemDependency, ...] = SYSTEM_DEPENDENCIES) -> None:
    """Install missing Debian packages with apt-get when we may; otherwise say what to install."""
    global _APT_UPDATED
    missing = missing_system_dependencies(deps)
    if not missing:
        return
    packages = sorted({dep.debian_package for dep in missing})
    names = ", ".join(dep.name for dep in missing)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(
            f"missing programs: {names}; install the packages {' '.join(packages)} "
            f"(for example: sudo apt-get install {' '.join(packages)})"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _APT_UPDATED:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        _APT_UPDATED = True
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ServiceError(f"apt-get install {' '.join(packages)} failed:\n{result.stderr[-2000:]}")
    still_missing = missing_system_dependencies(deps)
    if still_missing:
        raise ServiceError(
            "installed " + " ".join(packages) + " but still missing: "
            + ", ".join(dep.name for dep in still_missing)
        )


def require(name: str) -> str:
    """Path of a program the stack needs, or a ServiceError naming the package to install."""
    for dep in SYSTEM_DEPENDENCIES:
        if dep.name == name:
            found = dep.locate()
            if found is None:
                raise ServiceError(
                    f"{name} not found; install the Debian package {dep.debian_package} "
                    f"(or run `energy-pipeline stack install`)"
                )
            return found
    found = _locate(name)
    if found is None:
        raise ServiceError(f"{name} not found on PATH")
    return found


def kafka_libs_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_dir() / f"kafka-{version}" / "libs"


@functools.cache
def ensure_kafka(version: str = KAFKA_VERSION) -> Path:
    """The directory holding the Kafka broker's jars, resolved from Maven Central once."""
    libs = kafka_libs_dir(version)
    stamp = libs.parent / ".complete"
    if stamp.exists():
        return libs
    mvn = require("mvn")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    pom = resources.files("energy_pipeline.localstack").joinpath("kafka-pom.xml")
    with resources.as_file(pom) as pom_path:
        result = subprocess.run(
            [
                mvn, "-q", "-B", "-f", str(pom_path),
                f"-Dkafka.version={version}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ],
            capture_output=True,
            text=True,
        )
    if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        raise ServiceError(
            f"could not resolve org.apache.kafka:kafka_2.13:{version} from Maven Central:\n"
            f"{(result.stdout + result.stderr)[-3000:]}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    stamp.write_text(version + "\n")
    return libs


def install_all(kafka_version: str = KAFKA_VERSION) -> dict[str, str]:
    """Everything the local stack needs; returns where each piece was found."""
    ensure_system_packages()
    found = {dep.name: dep.locate() or "" for dep in SYSTEM_DEPENDENCIES}
    found["kafka"] = str(ensure_kafka(kafka_version))
    return found
