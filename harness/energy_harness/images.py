"""Every container image the platform needs, built from the project's own files.

    energy-pipeline image build [NAME ...]    (make image): build, print tag and size

Base images come from a registry where one answers. Where none does (this machine reaches
package registries only), the same-named base is made locally from Debian packages and
cached in the engine, so the Dockerfiles stay the ones a user builds against the real bases:

    debian:bookworm-slim        debootstrap --variant=minbase bookworm, imported
    python:3.11-slim-bookworm   that, plus Debian's python3.11 with venv and pip as `python`

The worker image's build reaches PyPI over HTTPS; a machine whose TLS goes through its own
CA (PIP_CERT names the bundle) hands that file to the build as a BuildKit secret: it is
mounted for the one RUN that needs it and never stored in a layer.

A failed step raises with the step and the last lines of its log; the tag is only ever set
by a build that succeeded, so a half-built image never carries it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from energy_harness.localstack.docker import DockerEngine
from energy_harness.localstack.install import (
    HIVEMQ_VERSION,
    KAFKA_VERSION,
    SystemDependency,
    cache_dir,
    ensure_hivemq,
    ensure_kafka,
    ensure_system_packages,
)
from energy_harness.localstack.process import ServiceError

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "image_files"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_BASE = "debian:bookworm-slim"
PYTHON_BASE = "python:3.11-slim-bookworm"
WORKER_IMAGE = "ghcr.io/energy-pipeline/energy-pipeline:0.1.0"


@dataclass(frozen=True)
class Image:
    """One image: its tag and how to build it (context, Dockerfile, the bases it needs)."""

    name: str
    tag: str
    context: Callable[[], Path]
    dockerfile: str = "Dockerfile"
    bases: tuple[str, ...] = ()


def _repo() -> Path:
    return REPO


def _kafka_context() -> Path:
    """The apache/kafka stand-in's context: image_files/kafka plus the harness's Kafka jars."""
    context = cache_dir() / "image-context" / "kafka"
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(HERE / "kafka", context)
    shutil.copytree(ensure_kafka(KAFKA_VERSION), context / "libs")
    # Modes from here, not from the checkout (a wheel or a umask may have changed them).
    for path in context.rglob("*"):
        path.chmod(0o755 if path.is_dir() or path.suffix == ".sh" else 0o644)
    return context


def _hivemq_context() -> Path:
    """The hivemq/hivemq-ce stand-in's context: image_files/hivemq laid out as the official
    image's /opt, the harness's HiveMQ CE jars (jars/: bin/hivemq.jar and lib/) and its
    compiled allow-all extension. energy-pipeline's auth extension is not here (the official
    image has none either): the project image carries it (Dockerfile)."""
    install = ensure_hivemq(HIVEMQ_VERSION)
    files = HERE / "hivemq"
    context = cache_dir() / "image-context" / "hivemq"
    shutil.rmtree(context, ignore_errors=True)
    home = context / "opt" / "hivemq"
    extension = home / "extensions" / "hivemq-allow-all-extension"
    for folder in (home / "bin", home / "conf", home / "data", home / "log", extension):
        folder.mkdir(parents=True)
    # The broker's jar where the official image has its (shaded) hivemq.jar: HiveMQ reads its
    # version from the manifest of the jar named so, and skips data migrations without it.
    broker_jar = next(install.libs.glob("hivemq-community-edition-embedded-*.jar"))
    shutil.copytree(install.libs, context / "jars" / "lib", ignore=lambda d, n: [broker_jar.name])
    (context / "jars" / "bin").mkdir()
    shutil.copyfile(broker_jar, context / "jars" / "bin" / "hivemq.jar")
    # The official image's permissions (root-owned; 0775 where uid 10000 in group 0 writes).
    placed = {
        context / "Dockerfile": (files / "Dockerfile", 0o644),
        context / "opt" / "docker-entrypoint.sh": (files / "docker-entrypoint.sh", 0o755),
        home / "bin" / "run.sh": (files / "run.sh", 0o755),
        home / "conf" / "config.xml": (files / "config.xml", 0o664),
        home / "conf" / "logback.xml": (files / "logback.xml", 0o664),
        extension / "hivemq-extension.xml": (files / "hivemq-allow-all-extension.xml", 0o664),
        extension / "allow-all.jar": (install.extension / "allow-all.jar", 0o644),
    }
    for target, (source, mode) in placed.items():
        shutil.copyfile(source, target)
        target.chmod(mode)
    # The schema the chart's config.xml names (xsi:noNamespaceSchemaLocation), from the jar.
    with zipfile.ZipFile(broker_jar) as jar:
        (home / "conf" / "config.xsd").write_bytes(jar.read("config.xsd"))
    for path in [*context.rglob("*"), context]:
        if path.is_dir():
            path.chmod(0o755)
        elif path.suffix in {".jar", ".xsd"}:
            path.chmod(0o644)
    for folder in (home, home / "conf", home / "data", home / "log", home / "extensions",
                   extension):  # fmt: skip
        folder.chmod(0o775)
    return context


IMAGES: dict[str, Image] = {
    "worker": Image("worker", WORKER_IMAGE, _repo, "Dockerfile", (PYTHON_BASE, DEBIAN_BASE)),
    # Stand-in for postgres:17.6 (charts/postgres) from Debian's PostgreSQL 15, for the tests.
    "postgres": Image(
        "postgres",
        "energy-pipeline-stand-in/postgres:15",
        lambda: HERE / "postgres",
        bases=(DEBIAN_BASE,),
    ),
    # Stand-in for apache/kafka:4.1.1 (charts/kafka): the same jars on Debian's OpenJDK 17.
    "kafka": Image(
        "kafka",
        f"energy-pipeline-stand-in/kafka:{KAFKA_VERSION}",
        _kafka_context,
        bases=(DEBIAN_BASE,),
    ),
    # Stand-in for hivemq/hivemq-ce:2025.5 (charts/hivemq): HiveMQ CE's Maven Central jars on
    # Debian's OpenJDK 17, the official layout, entrypoint and uid (charts/hivemq/README.md).
    "hivemq": Image(
        "hivemq",
        f"energy-pipeline-stand-in/hivemq-ce:{HIVEMQ_VERSION}",
        _hivemq_context,
        bases=(DEBIAN_BASE,),
    ),
}


# ---------------------------------------------------------------------------------------------
# Bases
# ---------------------------------------------------------------------------------------------


def _pull(engine: DockerEngine, tag: str) -> bool:
    """True if a registry gave us `tag`; quickly false where none is reachable."""
    return engine.run(["pull", "-q", tag], check=False, timeout=120).returncode == 0


# What makes the official image slim: dpkg leaves out documentation, man pages and
# translations of every package installed later, and apt keeps no downloaded .deb files.
_DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
"""
_APT_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
"""


def slim(rootfs: Path) -> None:
    """Apply the slim image's rules to a debootstrapped tree and drop what they exclude."""
    (rootfs / "etc/dpkg/dpkg.cfg.d/docker-slim").write_text(_DPKG_EXCLUDES)
    (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(_APT_CLEAN)
    for pattern in ("usr/share/doc/*/*", "usr/share/man/*", "usr/share/info/*",
                    "usr/share/locale/*", "var/lib/apt/lists/*", "var/cache/apt/archives/*.deb",
                    "var/cache/apt/*.bin"):  # fmt: skip
        for path in rootfs.glob(pattern):
            if path.name in {"copyright", "locale.alias"}:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def make_debian_base(engine: DockerEngine, tag: str = DEBIAN_BASE) -> None:
    """debootstrap minbase bookworm into a temp dir and import it as `tag`."""
    ensure_system_packages((SystemDependency("debootstrap", "debootstrap"),))
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin")
    assert debootstrap is not None
    with tempfile.TemporaryDirectory(prefix="energy-rootfs-", dir=cache_dir()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        log = Path(tmp) / "debootstrap.log"
        with open(log, "w") as out:
            result = subprocess.run(
                [debootstrap, "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
                stdout=out, stderr=subprocess.STDOUT, timeout=900,
            )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(
                f"debootstrap of {tag} failed (exit {result.returncode}):\n"
                + "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            )
        slim(rootfs)
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        # Import under a temporary name first: `tag` appears only once complete.
        staging = f"{tag.split(':')[0]}-staging:{os.getpid()}"
        engine.run(["import", "-c", 'CMD ["bash"]', str(archive), staging], timeout=600)
        engine.run(["tag", staging, tag])
        engine.run(["rmi", staging], check=False)


def make_python_base(engine: DockerEngine, tag: str = PYTHON_BASE) -> None:
    """Debian's Python 3.11 as `python`, the contract the Dockerfile uses of the real one."""
    ensure_base(engine, DEBIAN_BASE)
    build(engine, tag, HERE, "python-base.Dockerfile", build_args={"BASE": DEBIAN_BASE})


BASE_MAKERS: dict[str, Callable[[DockerEngine], None]] = {
    DEBIAN_BASE: make_debian_base,
    PYTHON_BASE: make_python_base,
}


def ensure_base(engine: DockerEngine, tag: str) -> str:
    """`tag` present in the engine: already there, pulled, or made locally. Returns how."""
    if engine.image_exists(tag):
        return "present"
    if _pull(engine, tag):
        return "pulled"
    BASE_MAKERS[tag](engine)
    return "made locally"


# ---------------------------------------------------------------------------------------------
# Builds
# ---------------------------------------------------------------------------------------------


def build(
    engine: DockerEngine,
    tag: str,
    context: Path,
    dockerfile: str = "Dockerfile",
    build_args: dict[str, str] | None = None,
) -> float:
    """`docker build` with BuildKit; the CA bundle as a secret when PIP_CERT names one.

    Returns the seconds it took. Raises with the last lines of the build log on failure.
    """
    args = ["build", "--progress=plain", "-t", tag, "-f", str(context / dockerfile)]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    cert = os.environ.get("PIP_CERT")
    if cert and Path(cert).is_file():
        args += ["--secret", f"id=pip_cert,src={cert}"]
    started = time.monotonic()
    result = engine.run([*args, str(context)], check=False, timeout=1800)
    if result.returncode != 0:
        raise ServiceError(
            f"building {tag} from {context / dockerfile} failed (exit {result.returncode}):\n"
            + "\n".join((result.stderr or result.stdout).strip().splitlines()[-30:])
        )
    return time.monotonic() - started


def build_image(engine: DockerEngine, name: str) -> dict[str, object]:
    """Build IMAGES[name] (bases first); returns tag, size and build seconds."""
    image = IMAGES[name]
    for base in image.bases:
        ensure_base(engine, base)
    seconds = build(engine, image.tag, image.context(), image.dockerfile)
    size_mb = round(engine.image_size(image.tag) / 1e6, 1)
    return {"image": name, "tag": image.tag, "size_mb": size_mb, "build_s": round(seconds, 1)}


# ---------------------------------------------------------------------------------------------
# Command
# ---------------------------------------------------------------------------------------------


def _build_command(args: argparse.Namespace) -> int:
    with DockerEngine() as engine:
        for name in args.names or list(IMAGES):
            print(json.dumps(build_image(engine, name)), flush=True)
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    image = commands.add_parser("image", help="build the platform's container images")
    sub = image.add_subparsers(dest="image_command", required=True)
    build_parser = sub.add_parser("build", help="build images (default: all)")
    build_parser.add_argument("names", nargs="*", choices=[[], *IMAGES], metavar="NAME",
                              help=f"one of {', '.join(IMAGES)}")  # fmt: skip
    build_parser.set_defaults(func=_build_command)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m energy_harness.images")
    register(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args()
    sys.exit(parsed.func(parsed))
