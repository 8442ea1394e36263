"""A Docker engine (Debian's docker.io) as a managed local service, for the image tests.

An engine that already answers (DOCKER_HOST, or the system's /var/run/docker.sock on a
developer's machine) is used as it is. Otherwise one engine per machine, at a fixed socket
under the cache: its data root (and with it the
image and build cache) lives in `~/.cache/energy-pipeline/docker`, so a second test run
builds nothing that did not change. The first owner starts `dockerd` (as a `ManagedProcess`,
so it never outlives its owner) and stops it, with every container it started; a later
owner in the same or another process finds the engine answering and only uses it
(`energy-pipeline docker up` keeps one running for development). A lock file makes two
starters wait for each other instead of racing for the data root.

Containers run unprivileged: this kernel refuses CAP_SYS_RESOURCE, so `--privileged` cannot
start here, and nothing of ours needs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from energy_harness.localstack.install import SystemDependency, cache_dir, ensure_system_packages
from energy_harness.localstack.process import ManagedProcess, ServiceError, wait_until

DOCKER_DEPENDENCIES = (SystemDependency("dockerd", "docker.io"),)
# Every container and network the harness creates carries this label, so an owner removes
# exactly its own leftovers (and a crashed run's), never anybody else's.
LABEL = "dev.energy-pipeline.harness=1"


def engine_dir() -> Path:
    path = cache_dir() / "docker"
    path.mkdir(parents=True, exist_ok=True)
    return path


def docker_cli() -> str:
    """The client that came with the engine: BuildKit (secrets in builds) without buildx.

    A newer client elsewhere on PATH without the buildx plugin falls back to the legacy
    builder, which cannot mount a build secret.
    """
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError("no docker client found; install the Debian package docker.io")


@dataclass
class DockerEngine:
    """`dockerd` on a socket of its own; `run()` is the docker CLI pointed at it."""

    root: Path = field(default_factory=engine_dir)
    start_timeout: float = 60.0
    process: ManagedProcess | None = field(default=None, init=False)
    # An engine found running (the user's own, or another owner's); None: ours at `socket`.
    found_host: str | None = field(default=None, init=False)

    @property
    def socket(self) -> Path:
        # Unix socket paths are limited to 107 bytes: keep it short and fixed.
        return self.root / "run" / "docker.sock"

    @property
    def host(self) -> str:
        return self.found_host or f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}

    @property
    def owned(self) -> bool:
        """True when this object started the engine (and so stops it)."""
        return self.process is not None

    def run(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 600,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` against this engine; a failure names the command and its output."""
        try:
            result = subprocess.run(
                [docker_cli(), *args],
                env=self.env(),
                capture_output=True,
                text=input is None,
                input=input,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"docker {' '.join(args)}: no answer after {timeout:.0f}s") from exc
        if input is not None:  # binary stdin: decode what came back for messages
            result = subprocess.CompletedProcess(
                result.args,
                result.returncode,
                result.stdout.decode(errors="replace"),
                result.stderr.decode(errors="replace"),
            )
        if check and result.returncode != 0:
            raise ServiceError(
                f"docker {' '.join(args)} failed (exit {result.returncode}):\n"
                + _tail(result.stderr or result.stdout)
            )
        return result

    def answering(self) -> bool:
        if self.found_host is None and not self.socket.exists():
            return False
        try:
            return self.run(["version", "--format", "{{.Server.Version}}"], check=False,
                            timeout=10).returncode == 0  # fmt: skip
        except ServiceError:
            # No answer within 10 s: a starting engine under load (seen: its containerd took
            # longer while the disk was busy). Not answering yet; the caller's wait goes on.
            return False

    def _find_running(self) -> bool:
        candidates = [os.environ.get("DOCKER_HOST", ""), "unix:///var/run/docker.sock"]
        for host in filter(None, candidates):
            if host.startswith("unix://") and not Path(host[7:]).exists():
                continue
            self.found_host = host
            if self.answering():
                return True
        self.found_host = None
        return self.answering()

    def start(self) -> DockerEngine:
        with self._lock():
            if self._find_running():
                return self  # someone else's engine: use it, leave it running
            ensure_system_packages(DOCKER_DEPENDENCIES)
            run_dir = self.socket.parent
            run_dir.mkdir(parents=True, exist_ok=True)
            self.socket.unlink(missing_ok=True)
            dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/sbin")
            if dockerd is None:
                raise ServiceError("dockerd not found after installing docker.io")
            self.process = ManagedProcess(
                name="dockerd",
                argv=[
                    dockerd,
                    f"--data-root={self.root / 'data'}",
                    f"--exec-root={run_dir / 'exec'}",
                    f"--pidfile={run_dir / 'dockerd.pid'}",
                    f"--host={self.host}",
                    # Its own containerd, stopped with it, not a system service.
                    "--containerd-namespace=energy-pipeline",
                    "--log-level=warn",
                ],
                log_path=self.root / "dockerd.log",
                # SIGTERM lets dockerd stop its containers and containerd; the kernel's
                # parent-death signal is the backstop if the owner is killed.
                death_signal=15,
            )
            self.process.start()
            wait_until(
                self.answering, timeout=self.start_timeout, what="waiting for the Docker API",
                process=self.process,
            )  # fmt: skip
        self.remove_leftovers()
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ServiceError):
            self.remove_leftovers()
        self.process.stop(timeout=60)
        self.process = None

    def remove_leftovers(self) -> None:
        """Containers, networks and volumes with the harness label (a killed run's too)."""
        ids = self.run(["ps", "-aq", "--filter", f"label={LABEL}"]).stdout.split()
        if ids:
            self.run(["rm", "-f", "-v", *ids], check=False)
        nets = self.run(["network", "ls", "-q", "--filter", f"label={LABEL}"]).stdout.split()
        if nets:
            self.run(["network", "rm", *nets], check=False)
        volumes = self.run(["volume", "ls", "-q", "--filter", f"label={LABEL}"]).stdout.split()
        if volumes:
            self.run(["volume", "rm", "-f", *volumes], check=False)

    def image_exists(self, tag: str) -> bool:
        return self.run(["image", "inspect", tag], check=False, timeout=30).returncode == 0

    def image_size(self, tag: str) -> int:
        out = self.run(["image", "inspect", tag, "--format", "{{json .Size}}"]).stdout
        return int(json.loads(out))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.root / "engine.lock", "w") as handle:
            deadline = time.monotonic() + self.start_timeout * 2
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ServiceError(
                            f"another process holds {self.root / 'engine.lock'} (starting the "
                            "Docker engine) for too long"
                        ) from None
                    time.sleep(0.5)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def __enter__(self) -> DockerEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
