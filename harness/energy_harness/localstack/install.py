"""Installs what the local stack runs on: Debian packages and Kafka jars from Maven Central.

Downloads are cached outside the repository, keyed by component and version, so a warm run
finds everything in place and installs nothing.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from energy_harness.localstack.process import ServiceError

KAFKA_VERSION = "4.1.1"
HIVEMQ_VERSION = "2025.5"

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
    # Glob patterns of directories to look in instead of PATH, for files Debian keeps
    # elsewhere (CNI plugins in /usr/lib/cni, libc.a under /usr/lib/<triplet>).
    directories: tuple[str, ...] = ()

    def locate(self) -> str | None:
        if self.directories:
            return _locate_in(self.name, self.directories)
        return _locate(self.name)


def _locate_in(name: str, directories: tuple[str, ...]) -> str | None:
    for pattern in directories:
        for found in sorted(glob.glob(os.path.join(pattern, name))):
            if os.path.isfile(found):
                return found
    return None


def _locate(name: str) -> str | None:
    if name in {"postgres", "initdb"}:
        # Debian keeps the server binaries out of PATH, under a versioned directory.
        candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_pg_major)
        if candidates:
            return candidates[-1]
    if name == "java":
        java = shutil.which("java")
        return java if java and _java_major(java) >= 17 else None
    # Daemons and admin tools (mosquitto, runc, iptables, conntrack) live in sbin, which a
    # normal user's PATH often lacks.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


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
    # javac and jar build the HiveMQ test broker's security extension.
    SystemDependency("javac", "openjdk-17-jdk-headless"),
    SystemDependency("jar", "openjdk-17-jdk-headless"),
    SystemDependency("mvn", "maven"),
    # The secured HiveMQ test broker: its test CA and certificates (openssl), the keystore
    # HiveMQ reads (keytool), and MQTT clients nobody here wrote, to show its refusals.
    SystemDependency("openssl", "openssl"),
    SystemDependency("keytool", "openjdk-17-jre-headless"),
    SystemDependency("mosquitto_pub", "mosquitto-clients"),
    SystemDependency("mosquitto_sub", "mosquitto-clients"),
    # A Kafka client nobody here wrote, to show the secured cluster's refusals with.
    SystemDependency("kcat", "kcat"),
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
            "installed "
            + " ".join(packages)
            + " but still missing: "
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


def _maven_libs(
    pom_name: str, version_property: str, version: str, libs: Path, marker: str
) -> Path:
    """Copy the runtime dependencies of a small pom into `libs`, once (stamp file naming the
    version and the pom's hash, so an edited pom resolves again)."""
    stamp = libs.parent / ".complete"
    pom_text = resources.files("energy_harness.localstack").joinpath(pom_name).read_bytes()
    stamp_text = f"{version} {hashlib.sha256(pom_text).hexdigest()[:16]}\n"
    if stamp.exists() and stamp.read_text() == stamp_text:
        return libs
    mvn = require("mvn")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    pom = resources.files("energy_harness.localstack").joinpath(pom_name)
    with resources.as_file(pom) as pom_path:
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom_path),
                f"-D{version_property}={version}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ],
            capture_output=True,
            text=True,
        )
    if result.returncode != 0 or not any(staging.glob(marker)):
        shutil.rmtree(staging, ignore_errors=True)
        raise ServiceError(
            f"could not resolve {pom_name} ({version_property}={version}) from Maven Central:\n"
            f"{(result.stdout + result.stderr)[-3000:]}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    stamp.write_text(stamp_text)
    return libs


@functools.cache
def ensure_kafka(version: str = KAFKA_VERSION) -> Path:
    """The directory holding the Kafka broker's jars, resolved from Maven Central once."""
    return _maven_libs(
        "kafka-pom.xml", "kafka.version", version, kafka_libs_dir(version), "kafka_2.13-*.jar"
    )


@functools.cache
def ensure_kafka_connect(version: str = KAFKA_VERSION) -> Path:
    """The jars of Kafka Connect with Debezium's JDBC sink and the PostgreSQL driver, for the
    peer benchmark (`energy_harness.bench.peers`); never needed by the tests."""
    return _maven_libs(
        "connect-pom.xml", "kafka.version", version,
        cache_dir() / f"kafka-connect-{version}" / "libs", "debezium-connector-jdbc-*.jar",
    )


@dataclass(frozen=True)
class HiveMQInstall:
    libs: Path
    # The allow-all authenticator (plain local test brokers).
    extension: Path
    # The credentials-and-topic-permission extension (the product's hivemq-extension/).
    auth_extension: Path


@dataclass(frozen=True)
class ExtensionSource:
    """A HiveMQ extension of ours: Java source, built with javac."""

    source_dir: Path  # the directory holding the .java files and hivemq-extension.xml
    main_class: str
    folder: str  # the extension folder's name (HiveMQ wants it to match the id)
    jar_name: str


# The allow-all one is the test broker's only (this package); the auth one ships: the
# project image carries it (Dockerfile), built from the same source.
ALLOW_ALL_EXTENSION = ExtensionSource(
    Path(__file__).resolve().parent / "hivemq_allow_all",
    "dev.energypipeline.allowall.AllowAllMain", "energy-pipeline-allow-all", "allow-all.jar",
)
AUTH_EXTENSION = ExtensionSource(
    Path(__file__).resolve().parents[3] / "hivemq-extension",
    "dev.energypipeline.auth.AuthMain", "energy-pipeline-auth", "auth.jar",
)


def _build_extension(root: Path, libs: Path, ext: ExtensionSource) -> Path:
    """Compile `ext` against the broker's extension SDK into root/extensions/<folder>, once.

    The stamp is the source's digest, so an edited extension is rebuilt on the next start.
    """
    source = ext.source_dir
    digest = hashlib.sha256()
    for item in sorted(source.iterdir(), key=lambda i: i.name):
        if item.name.endswith((".java", ".xml")):
            digest.update(item.name.encode() + b"\0" + item.read_bytes())
    extension = root / "extensions" / ext.folder
    stamp = extension / ".source-sha256"
    if stamp.exists() and stamp.read_text().strip() == digest.hexdigest():
        return extension
    javac, jar = require("javac"), require("jar")
    classpath = [
        next(libs.glob(f"{name}-*.jar"), None) for name in ("hivemq-extension-sdk", "slf4j-api")
    ]
    if None in classpath:
        raise ServiceError(f"hivemq-extension-sdk or slf4j-api jar missing from {libs}")
    with tempfile.TemporaryDirectory() as tmp:
        classes = Path(tmp) / "classes"
        services = classes / "META-INF" / "services"
        services.mkdir(parents=True)
        (services / "com.hivemq.extension.sdk.api.ExtensionMain").write_text(ext.main_class + "\n")
        for cmd in (
            [
                javac,
                "--release",
                "17",
                "-cp",
                os.pathsep.join(str(p) for p in classpath),
                "-d",
                str(classes),
                *sorted(str(p) for p in source.glob("*.java")),
            ],
            [jar, "cf", str(Path(tmp) / ext.jar_name), "-C", str(classes), "."],
        ):
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise ServiceError(
                    f"building the HiveMQ extension failed: {' '.join(cmd)}\n"
                    f"{result.stderr[-2000:]}"
                )
        staging = Path(tempfile.mkdtemp(prefix="ext-", dir=root))
        shutil.copy(Path(tmp) / ext.jar_name, staging / ext.jar_name)
        shutil.copy(source / "hivemq-extension.xml", staging / "hivemq-extension.xml")
    (staging / stamp.name).write_text(digest.hexdigest() + "\n")
    extension.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(extension, ignore_errors=True)
    staging.rename(extension)
    return extension


@functools.cache
def ensure_hivemq(version: str = HIVEMQ_VERSION) -> HiveMQInstall:
    """HiveMQ CE jars from Maven Central plus our two security extensions, built once.

    The extensions are compiled here from their source in this package (javac from the JDK);
    HiveMQ CE accepts no client at all without a security extension.
    """
    root = cache_dir() / f"hivemq-{version}"
    libs = _maven_libs(
        "hivemq-pom.xml",
        "hivemq.version",
        version,
        root / "libs",
        "hivemq-community-edition-embedded-*.jar",
    )
    return HiveMQInstall(
        libs,
        _build_extension(root, libs, ALLOW_ALL_EXTENSION),
        _build_extension(root, libs, AUTH_EXTENSION),
    )


def install_all(kafka_version: str = KAFKA_VERSION) -> dict[str, str]:
    """Everything the local stack needs; returns where each piece was found."""
    ensure_system_packages()
    found = {dep.name: dep.locate() or "" for dep in SYSTEM_DEPENDENCIES}
    found["kafka"] = str(ensure_kafka(kafka_version))
    found["hivemq"] = str(ensure_hivemq().libs.parent)
    return found
