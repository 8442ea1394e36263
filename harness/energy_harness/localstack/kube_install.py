"""Builds the Kubernetes test control plane from the Go module proxy, cached outside the repo.

Three cached, version-keyed directories under `cache_dir()`:

- `kube-<KUBE_VERSION>/bin/kube`: one multi-call binary from the wrapper module in
  `tools/kube` (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
  kube-proxy, kubectl),
  with symlinks named like the upstream programs;
- `kwok-<KWOK_VERSION>/bin/kwok` and `helm-<HELM_VERSION>/bin/helm` from `go install`.

Each is built into a temporary directory and renamed into place, then stamped with
`.complete`, so an interrupted build never leaves something that looks usable. The kube
stamp also records a hash of the wrapper sources: editing go.mod or main.go rebuilds.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from energy_harness.localstack.install import cache_dir
from energy_harness.localstack.process import ServiceError

# Keep in step with tools/kube/go.mod (k8s.io/kubernetes, the v0 staging replaces, etcd).
KUBE_VERSION = "v1.33.13"
# What k8s.io/kubernetes v1.33.x itself pins for go.etcd.io/etcd/*.
ETCD_VERSION = "v3.5.21"
KWOK_VERSION = "v0.7.0"
# The newest 3.18 patch; built against k8s.io/client-go v0.33, like the cluster.
HELM_VERSION = "v3.18.6"
# The MQTT-to-Kafka peer of the bench (energy_harness.bench.peers), MIT; never in the tests.
TELEGRAF_VERSION = "v1.37.2"
# Telegraf's custom build: only the plugins and formats the peer uses (about 45 s).
TELEGRAF_TAGS = (
    "custom", "inputs.mqtt_consumer", "outputs.kafka", "parsers.json", "serializers.json"
)
# The Prometheus Operator, whose PodMonitor CRD the cluster tests install (Apache-2.0): the
# newest release whose root module the Go proxy serves here (v0.95.2 is refused).
PROMETHEUS_OPERATOR_VERSION = "v0.86.1"

MIN_GO = (1, 24)

# Names the multi-call binary answers to (see tools/kube/main.go).
KUBE_COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)

_WRAPPER_SOURCES = ("go.mod", "go.sum", "main.go")


@dataclass(frozen=True)
class KubeTools:
    """Where the built programs are."""

    kube: Path
    kwok: Path
    helm: Path
    go: Path

    @property
    def bin_dir(self) -> Path:
        return self.kube.parent

    def component(self, name: str) -> Path:
        if name not in KUBE_COMPONENTS:
            raise ValueError(f"unknown component {name!r}; known: {', '.join(KUBE_COMPONENTS)}")
        return self.bin_dir / name

    @property
    def kubectl(self) -> Path:
        return self.component("kubectl")

    def as_dict(self) -> dict[str, str]:
        found = {"go": str(self.go), "kube": str(self.kube)}
        found.update({name: str(self.component(name)) for name in KUBE_COMPONENTS})
        found.update({"kwok": str(self.kwok), "helm": str(self.helm)})
        return found


def wrapper_source_dir() -> Path:
    """`tools/kube` of the checkout this package was installed (editable) from.

    $ENERGY_PIPELINE_KUBE_SRC overrides, for an installed wheel next to a checkout.
    """
    configured = os.environ.get("ENERGY_PIPELINE_KUBE_SRC")
    # harness/energy_harness/localstack/kube_install.py -> the repository root is 3 up.
    candidate = (
        Path(configured) if configured else Path(__file__).resolve().parents[3] / "tools" / "kube"
    )
    if not (candidate / "go.mod").is_file():
        raise ServiceError(
            f"Go wrapper module not found at {candidate}: install energy-pipeline from a checkout "
            f"(pip install -e .) or point ENERGY_PIPELINE_KUBE_SRC at tools/kube"
        )
    return candidate


def parse_go_version(output: str) -> tuple[int, int] | None:
    """(major, minor) from `go version` output such as 'go version go1.26.8 linux/amd64'."""
    match = re.search(r"\bgo(\d+)\.(\d+)", output)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _go_version(go: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([go, "version"], capture_output=True, text=True, timeout=60).stdout
    except OSError:
        return None
    return parse_go_version(out)


def find_go() -> Path | None:
    """A Go toolchain new enough for Kubernetes 1.33 (go 1.24+), or None."""
    for candidate in (shutil.which("go"), "/usr/local/go/bin/go", "/usr/lib/go/bin/go"):
        if candidate and os.access(candidate, os.X_OK):
            version = _go_version(candidate)
            if version is not None and version >= MIN_GO:
                return Path(candidate)
    return None


def ensure_go() -> Path:
    """The machine's Go, or Debian's golang-go installed with apt when we are root."""
    go = find_go()
    if go is not None:
        return go
    wanted = ".".join(map(str, MIN_GO))
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(
            f"Go {wanted}+ not found on PATH or in /usr/local/go/bin; install it "
            f"(for example: sudo apt-get install golang-go) to build the Kubernetes test cluster"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "golang-go"],
        env=env,
        capture_output=True,
        text=True,
    )
    go = find_go()
    if go is None:
        raise ServiceError(
            f"no Go {wanted}+ after apt-get install golang-go "
            f"(exit {result.returncode}):\n{result.stderr[-2000:]}"
        )
    return go


def render_version_ldflags(kube_version: str) -> list[str]:
    """-X flags that make the binaries report `kube_version` as the upstream build does.

    Without them kube-apiserver reports v0.0.0-master, and kubectl and helm would see a
    server older than any Kubernetes release.
    """
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", kube_version)
    if not match:
        raise ValueError(f"not a Kubernetes release version: {kube_version!r}")
    major, minor = match.group(1), match.group(2)
    flags: list[str] = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={kube_version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            # A fixed date keeps the build reproducible.
            f"-X {package}.buildDate=1970-01-01T00:00:00Z",
        ]
    return flags


def render_wrapper_build_argv(go: Path, output: Path, ldflags: list[str]) -> list[str]:
    """`go build` of a wrapper module (tools/kube, tools/netpol), stripped."""
    flags = " ".join(["-s", "-w", *ldflags])
    return [str(go), "build", "-trimpath", "-ldflags", flags, "-o", str(output), "."]


def render_go_install_argv(
    go: Path, package: str, version: str, ldflags: list[str], tags: tuple[str, ...] = ()
) -> list[str]:
    return [
        str(go), "install", "-trimpath", "-ldflags", " ".join(["-s", "-w", *ldflags]),
        *(["-tags", ",".join(tags)] if tags else []),
        f"{package}@{version}",
    ]


def go_build_env(go: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for go build/install: static binaries, our Go first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{go.parent}{os.pathsep}{env.get('PATH', '')}"
    # Static, like upstream release builds; nothing here needs cgo, and no C compiler is used.
    env["CGO_ENABLED"] = "0"
    # go.sum is committed: a build must not rewrite it. GOFLAGS from the caller could
    # otherwise say -mod=mod, which `go install pkg@version` also rejects.
    env["GOFLAGS"] = "-mod=readonly -buildvcs=false"
    env.pop("GOBIN", None)
    env.update(extra or {})
    return env


def wrapper_source_hash(source: Path) -> str:
    digest = hashlib.sha256()
    for name in _WRAPPER_SOURCES:
        digest.update(name.encode() + b"\0" + (source / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def kube_dir(version: str = KUBE_VERSION) -> Path:
    return cache_dir() / f"kube-{version}"


def kwok_dir(version: str = KWOK_VERSION) -> Path:
    return cache_dir() / f"kwok-{version}"


def helm_dir(version: str = HELM_VERSION) -> Path:
    return cache_dir() / f"helm-{version}"


def _logs_dir() -> Path:
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs


@contextlib.contextmanager
def _build_lock(name: str) -> Iterator[None]:
    """One builder at a time per component, across processes (parallel test runs, the CLI)."""
    lock_path = cache_dir() / f".{name}.lock"
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_logged(
    argv: list[str], *, cwd: Path, env: Mapping[str, str], log: Path, what: str
) -> None:
    started = time.monotonic()
    with open(log, "w") as out:
        out.write(f"$ {' '.join(argv)}\n(cwd {cwd})\n")
        out.flush()
        result = subprocess.run(
            argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.write(f"\nexit {result.returncode} after {time.monotonic() - started:.0f}s\n")
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise ServiceError(f"{what} failed; log: {log}\n--- last lines ---\n{tail}")


def _publish(staging: Path, target: Path, stamp_text: str) -> None:
    """Swap a finished build into place, then stamp it: the stamp is the commit point."""
    # mkdtemp made it 0700; the binaries may have to run under other accounts.
    staging.chmod(0o755)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    (target / ".complete").write_text(stamp_text)


def _stamp_matches(target: Path, stamp_text: str) -> bool:
    stamp = target / ".complete"
    return stamp.is_file() and stamp.read_text() == stamp_text


def ensure_wrapper_binary(
    go: Path,
    source: Path,
    target: Path,
    binary_name: str,
    *,
    ldflags: list[str],
    stamp_prefix: str,
    aliases: tuple[str, ...] = (),
) -> Path:
    """`target/bin/binary_name` built from the wrapper module in `source` (go.mod, go.sum,
    main.go), when missing or when those sources changed; `aliases` become symlinks."""
    stamp_text = f"{stamp_prefix} {wrapper_source_hash(source)}\n"
    binary = target / "bin" / binary_name
    if _stamp_matches(target, stamp_text):
        return binary
    with _build_lock(target.name):
        if _stamp_matches(target, stamp_text):
            return binary
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
        try:
            bin_dir = staging / "bin"
            bin_dir.mkdir()
            _run_logged(
                render_wrapper_build_argv(go, bin_dir / binary_name, ldflags),
                cwd=source,
                env=go_build_env(go),
                log=_logs_dir() / f"{target.name}-build.log",
                what=f"building {binary_name} {stamp_prefix} (go build in {source})",
            )
            for name in aliases:
                (bin_dir / name).symlink_to(binary_name)
            _publish(staging, target, stamp_text)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return binary


def ensure_kube_binary(go: Path, version: str = KUBE_VERSION) -> Path:
    """The multi-call `kube` binary, built from tools/kube when missing or outdated."""
    return ensure_wrapper_binary(
        go, wrapper_source_dir(), kube_dir(version), "kube",
        ldflags=render_version_ldflags(version), stamp_prefix=version, aliases=KUBE_COMPONENTS,
    )


def _ensure_go_install(
    go: Path, target: Path, binary_name: str, package: str, version: str, ldflags: list[str],
    tags: tuple[str, ...] = (),
) -> Path:
    stamp_text = f"{package}@{version} {','.join(tags)}".rstrip() + "\n"
    binary = target / "bin" / binary_name
    if _stamp_matches(target, stamp_text):
        return binary
    with _build_lock(target.name):
        if _stamp_matches(target, stamp_text):
            return binary
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
        try:
            _run_logged(
                render_go_install_argv(go, package, version, ldflags, tags),
                # Outside any module, so `go install pkg@version` uses only that module's go.mod.
                cwd=staging,
                env=go_build_env(go, {"GOBIN": str(staging / "bin")}),
                log=_logs_dir() / f"{target.name}-build.log",
                what=f"go install {package}@{version}",
            )
            _publish(staging, target, stamp_text)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return binary


def ensure_kwok(go: Path, version: str = KWOK_VERSION) -> Path:
    return _ensure_go_install(
        go, kwok_dir(version), "kwok", "sigs.k8s.io/kwok/cmd/kwok", version, []
    )


def ensure_helm(go: Path, version: str = HELM_VERSION) -> Path:
    # Helm's Makefile sets its version the same way; `go install` alone reports "v3.18".
    ldflags = [f"-X helm.sh/helm/v3/internal/version.version={version}"]
    return _ensure_go_install(
        go, helm_dir(version), "helm", "helm.sh/helm/v3/cmd/helm", version, ldflags
    )


def ensure_telegraf(version: str = TELEGRAF_VERSION) -> Path:
    """Telegraf with its mqtt_consumer input and kafka output, for the peer benchmark."""
    return _ensure_go_install(
        ensure_go(), cache_dir() / f"telegraf-{version}", "telegraf",
        "github.com/influxdata/telegraf/cmd/telegraf", version,
        [f"-X github.com/influxdata/telegraf/internal.Version={version.removeprefix('v')}"],
        TELEGRAF_TAGS,
    )


def go_module_dir(module: str, version: str) -> Path:
    """A module's source tree, downloaded from the Go module proxy into the module cache
    (`go mod download`, a no-op once cached): for files a module ships that are not Go code."""
    go = ensure_go()
    with tempfile.TemporaryDirectory() as outside_any_module:
        result = subprocess.run(
            [str(go), "mod", "download", "-json", f"{module}@{version}"],
            cwd=outside_any_module, env=go_build_env(go), stdin=subprocess.DEVNULL,
            capture_output=True, text=True,
        )
    try:
        answer = json.loads(result.stdout)
    except json.JSONDecodeError:
        answer = {"Error": result.stderr.strip() or f"exit {result.returncode}"}
    if result.returncode != 0 or "Dir" not in answer:
        raise ServiceError(f"go mod download {module}@{version}: {answer.get('Error')}")
    return Path(answer["Dir"])


def pod_monitor_crd(version: str = PROMETHEUS_OPERATOR_VERSION) -> Path:
    """The Prometheus Operator's own PodMonitor CRD (monitoring.coreos.com/v1)."""
    root = go_module_dir("github.com/prometheus-operator/prometheus-operator", version)
    return root / "example" / "prometheus-operator-crd" / "monitoring.coreos.com_podmonitors.yaml"


@functools.cache
def ensure_kube_tools() -> KubeTools:
    """Everything the test cluster runs on, built once per version and cached."""
    go = ensure_go()
    kube = ensure_kube_binary(go)
    return KubeTools(kube=kube, kwok=ensure_kwok(go), helm=ensure_helm(go), go=go)


def install_kube() -> dict[str, str]:
    """Provision the test cluster's programs; returns where each one is."""
    return ensure_kube_tools().as_dict()
