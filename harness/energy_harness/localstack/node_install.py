"""Installs what a real Kubernetes node of the test cluster runs on, beside the control plane.

- containerd (with its runc shim and `ctr`), runc, the CNI plugins, iptables and conntrack
  come from Debian, through the same `ensure_system_packages` as the local stack;
- CoreDNS is built with `go install` from the Go module proxy into
  `cache_dir()/coredns-<COREDNS_VERSION>/bin/coredns`, like kwok and helm;
- the NetworkPolicy enforcer is kube-network-policies' controller, built from the wrapper
  module `tools/netpol` (Go module proxy) into `cache_dir()/netpol-<NETPOL_VERSION>/bin/netpol`;
  nftables (`nft`, Debian) removes its table when it was killed;
- the pause image (each pod's sandbox) is compiled from upstream's own `build/pause/linux/pause.c`
  in the Kubernetes module the control plane is built from, and written as an OCI image archive
  `cache_dir()/pause-<PAUSE_VERSION>/pause.tar` that `ctr -n k8s.io images import` tags as
  `PAUSE_IMAGE`. No registry and no Docker are needed.

Built pieces are published and stamped like the control plane's (see kube_install), so an
interrupted build never leaves something that looks usable.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from energy_harness.localstack.install import (
    SystemDependency,
    cache_dir,
    ensure_system_packages,
)
from energy_harness.localstack.kube_install import (
    KUBE_VERSION,
    _build_lock,
    _ensure_go_install,
    _logs_dir,
    _publish,
    _run_logged,
    _stamp_matches,
    ensure_go,
    ensure_wrapper_binary,
    go_build_env,
    render_go_install_argv,
    wrapper_source_dir,
)
from energy_harness.localstack.process import ServiceError

# What kubeadm v1.33 (cmd/kubeadm/app/constants PauseVersion) configures as the sandbox image.
# The k8s.io/kubernetes v1.33 tree's build/pause is tagged 3.10.1, which changed only the
# Windows image: the Linux pause.c is the one 3.10 was built from.
PAUSE_VERSION = "3.10"
PAUSE_IMAGE = f"registry.k8s.io/pause:{PAUSE_VERSION}"
# Relative to the k8s.io/kubernetes module directory.
PAUSE_SOURCE = "build/pause/linux/pause.c"
# Bump when the archive's layout or the compile flags change: the stamp then no longer matches.
_PAUSE_RECIPE = "1"

# The newest release the Go module proxy serves; its go.mod asks for go 1.26.0, and it builds
# with CGO_ENABLED=0 (go_build_env) like upstream's release binaries.
COREDNS_VERSION = "v1.15.0"
COREDNS_PACKAGE = "github.com/coredns/coredns"

# sigs.k8s.io/kube-network-policies, as tools/netpol/go.mod requires it: the newest release
# the Go module proxy serves here.
NETPOL_VERSION = "v0.8.0"

# The plugins a pod network of a single node needs: a bridge with host-local IPAM, the
# loopback in every sandbox, and hostPort mappings.
CNI_PLUGINS = ("bridge", "host-local", "loopback", "firewall", "portmap")
CNI_DIRECTORIES = ("/usr/lib/cni", "/opt/cni/bin")

# Programs the node runs (containerd starts the shim, the shim runc; kube-proxy calls the
# iptables tools and conntrack by name), by the Debian package that provides them.
NODE_SYSTEM_DEPENDENCIES = (
    SystemDependency("containerd", "containerd"),
    SystemDependency("containerd-shim-runc-v2", "containerd"),
    SystemDependency("ctr", "containerd"),
    SystemDependency("runc", "runc"),
    SystemDependency("iptables", "iptables"),
    SystemDependency("iptables-save", "iptables"),
    SystemDependency("iptables-restore", "iptables"),
    SystemDependency("conntrack", "conntrack"),
    SystemDependency("nft", "nftables"),
    *(
        SystemDependency(plugin, "containernetworking-plugins", directories=CNI_DIRECTORIES)
        for plugin in CNI_PLUGINS
    ),
)

# Only needed when the pause image is not cached yet: gcc links pause statically against
# glibc's libc.a, which is in libc6-dev (gcc merely recommends it).
PAUSE_BUILD_DEPENDENCIES = (
    SystemDependency("gcc", "gcc"),
    SystemDependency("libc.a", "libc6-dev", directories=("/usr/lib/*-linux-gnu", "/usr/lib")),
)

# Python's names for the machine against the OCI (GOARCH) names an image config uses.
_OCI_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

_MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
_MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
_MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# Upstream's image runs pause as nobody (Dockerfile: USER 65535:65535).
PAUSE_USER = "65535:65535"


@dataclass(frozen=True)
class NodeTools:
    """Where the node's programs are."""

    containerd: Path
    # Holds containerd-shim-runc-v2: containerd finds its shim on PATH.
    containerd_shim_dir: Path
    runc: Path
    ctr: Path
    # Holds bridge, host-local, loopback and portmap: containerd's CRI `bin_dir`.
    cni_bin_dir: Path
    coredns: Path
    # kube-network-policies' controller (tools/netpol), and nft to remove its table.
    netpol: Path
    nft: Path
    # An OCI image archive tagged PAUSE_IMAGE, for `ctr -n k8s.io images import`.
    pause_image: Path
    iptables: Path
    conntrack: Path
    # Every directory the programs above are in, for the PATH of containerd, kubelet and
    # kube-proxy (they call runc, the shim, iptables-save/-restore and conntrack by name).
    path_dirs: tuple[Path, ...]

    @property
    def search_path(self) -> str:
        """`path_dirs` as a PATH prefix."""
        return os.pathsep.join(str(directory) for directory in self.path_dirs)

    def as_dict(self) -> dict[str, str]:
        return {
            "containerd": str(self.containerd),
            "containerd-shim-dir": str(self.containerd_shim_dir),
            "runc": str(self.runc),
            "ctr": str(self.ctr),
            "cni-bin-dir": str(self.cni_bin_dir),
            "coredns": str(self.coredns),
            "netpol": str(self.netpol),
            "nft": str(self.nft),
            "pause-image": str(self.pause_image),
            "iptables": str(self.iptables),
            "conntrack": str(self.conntrack),
        }


def coredns_dir(version: str = COREDNS_VERSION) -> Path:
    return cache_dir() / f"coredns-{version}"


def netpol_dir(version: str = NETPOL_VERSION) -> Path:
    return cache_dir() / f"netpol-{version}"


def netpol_source_dir() -> Path:
    """`tools/netpol`, beside the control plane's wrapper module `tools/kube`."""
    return wrapper_source_dir().parent / "netpol"


def ensure_netpol(go: Path, version: str = NETPOL_VERSION) -> Path:
    return ensure_wrapper_binary(
        go, netpol_source_dir(), netpol_dir(version), "netpol", ldflags=[],
        stamp_prefix=version,
    )


def pause_dir(version: str = PAUSE_VERSION) -> Path:
    return cache_dir() / f"pause-{version}"


def render_coredns_install_argv(go: Path, version: str = COREDNS_VERSION) -> list[str]:
    # CoreDNS reports its version from a constant in coremain; no -X flag is needed.
    return render_go_install_argv(go, COREDNS_PACKAGE, version, [])


def ensure_coredns(go: Path, version: str = COREDNS_VERSION) -> Path:
    return _ensure_go_install(go, coredns_dir(version), "coredns", COREDNS_PACKAGE, version, [])


def render_pause_build_argv(gcc: str, source: Path, output: Path) -> list[str]:
    """Upstream's CFLAGS (build/pause/Makefile), with -s for its separate `strip`."""
    return [
        gcc,
        "-Os",
        "-Wall",
        "-Werror",
        "-static",
        "-s",
        # Upstream: v$(TAG)-$(git describe); we have the module version instead of a checkout.
        f"-DVERSION=v{PAUSE_VERSION}-{KUBE_VERSION}",
        "-o",
        str(output),
        str(source),
    ]


def kubernetes_module_dir(go: Path, version: str = KUBE_VERSION) -> Path:
    """The k8s.io/kubernetes module in the Go module cache, downloaded if missing."""
    result = subprocess.run(
        [str(go), "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
        # Outside any module, so the download does not depend on (or touch) a go.mod.
        cwd=cache_dir(),
        env=go_build_env(go),
        capture_output=True,
        text=True,
    )
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        info = {}
    directory = info.get("Dir")
    if result.returncode != 0 or not directory:
        raise ServiceError(
            f"go mod download k8s.io/kubernetes@{version} failed (exit {result.returncode}): "
            f"{info.get('Error') or result.stderr[-2000:]}"
        )
    return Path(directory)


def oci_architecture(machine: str | None = None) -> str:
    machine = machine or platform.machine()
    try:
        return _OCI_ARCHITECTURES[machine]
    except KeyError as exc:
        raise ServiceError(f"no OCI architecture name known for machine {machine!r}") from exc


def _json_blob(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, blob: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }


def _tar_info(name: str, size: int, mode: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    # Fixed owner and time: the same binary always gives the same digests.
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type, info.mtime = size, mode, kind, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _pause_layer(pause: bytes) -> bytes:
    """The uncompressed layer: /pause, owned by root, executable by everyone."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tar_info("pause", len(pause), 0o755), io.BytesIO(pause))
    return buffer.getvalue()


def render_pause_image(
    pause: bytes, ref: str = PAUSE_IMAGE, architecture: str | None = None
) -> dict[str, bytes]:
    """The files of an OCI image layout holding one image with `pause` as /pause.

    Keys are paths inside the layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`). The
    index names the manifest with `io.containerd.image.name` (the full ref `ctr images
    import` tags it as) and `org.opencontainers.image.ref.name` (the tag, per the OCI spec).
    """
    layer_tar = _pause_layer(pause)
    layer = gzip.compress(layer_tar, mtime=0)
    arch = architecture or oci_architecture()
    config = _json_blob(
        {
            "architecture": arch,
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {"User": PAUSE_USER, "Entrypoint": ["/pause"], "WorkingDir": "/"},
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()],
            },
            "history": [
                {
                    "created": "1970-01-01T00:00:00Z",
                    "created_by": f"gcc -static k8s.io/kubernetes@{KUBE_VERSION}/{PAUSE_SOURCE}",
                }
            ],
        }
    )
    manifest = _json_blob(
        {
            "schemaVersion": 2,
            "mediaType": _MEDIA_MANIFEST,
            "config": _descriptor(_MEDIA_CONFIG, config),
            "layers": [_descriptor(_MEDIA_LAYER, layer)],
        }
    )
    tag = ref.rsplit("/", 1)[-1].partition(":")[2] or "latest"
    index = _json_blob(
        {
            "schemaVersion": 2,
            "mediaType": _MEDIA_INDEX,
            "manifests": [
                {
                    **_descriptor(_MEDIA_MANIFEST, manifest),
                    "platform": {"architecture": arch, "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": tag,
                    },
                }
            ],
        }
    )
    files = {
        "oci-layout": _json_blob({"imageLayoutVersion": "1.0.0"}),
        "index.json": index,
    }
    for blob in (layer, config, manifest):
        files["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob
    return files


def write_oci_archive(files: dict[str, bytes], archive: Path) -> None:
    """A tar of an image layout, with its directories, in a fixed order."""
    with tarfile.open(archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            tar.addfile(_tar_info(directory, 0, 0o755, tarfile.DIRTYPE))
        for name in sorted(files):
            tar.addfile(_tar_info(name, len(files[name]), 0o644), io.BytesIO(files[name]))


def ensure_pause_image(go: Path) -> Path:
    """The pause image archive, compiled and written once per version (stamped)."""
    target = pause_dir()
    archive = target / "pause.tar"
    stamp_text = f"{PAUSE_IMAGE} k8s.io/kubernetes@{KUBE_VERSION}/{PAUSE_SOURCE} {_PAUSE_RECIPE}\n"
    if _stamp_matches(target, stamp_text):
        return archive
    ensure_system_packages(PAUSE_BUILD_DEPENDENCIES)
    with _build_lock(target.name):
        if _stamp_matches(target, stamp_text):
            return archive
        source = kubernetes_module_dir(go) / PAUSE_SOURCE
        if not source.is_file():
            raise ServiceError(f"{source} missing from the k8s.io/kubernetes {KUBE_VERSION} module")
        gcc = PAUSE_BUILD_DEPENDENCIES[0].locate() or "gcc"
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
        try:
            binary = staging / "pause"
            _run_logged(
                render_pause_build_argv(gcc, source, binary),
                cwd=staging,
                env=os.environ,
                log=_logs_dir() / f"{target.name}-build.log",
                what=f"compiling {source}",
            )
            write_oci_archive(render_pause_image(binary.read_bytes()), staging / archive.name)
            _publish(staging, target, stamp_text)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return archive


def _located(dep: SystemDependency) -> Path:
    found = dep.locate()
    if found is None:  # only when the package was installed and removed again meanwhile
        raise ServiceError(f"{dep.name} not found; install the Debian package {dep.debian_package}")
    return Path(found)


@functools.cache
def ensure_node_tools() -> NodeTools:
    """Everything a real node runs on: Debian packages installed, CoreDNS and pause built."""
    ensure_system_packages(NODE_SYSTEM_DEPENDENCIES)
    found = {dep.name: _located(dep) for dep in NODE_SYSTEM_DEPENDENCIES}
    cni_bin_dir = found[CNI_PLUGINS[0]].parent
    strays = [name for name in CNI_PLUGINS if found[name].parent != cni_bin_dir]
    if strays:
        # containerd takes one bin_dir: a plugin elsewhere would not be found at pod start.
        raise ServiceError(
            f"CNI plugins {', '.join(strays)} are not in {cni_bin_dir} with the others; "
            f"reinstall the Debian package containernetworking-plugins"
        )
    go = ensure_go()
    path_dirs: list[Path] = []
    for name in (
        "containerd-shim-runc-v2",
        "runc",
        "iptables",
        "iptables-save",
        "iptables-restore",
        "conntrack",
    ):
        if found[name].parent not in path_dirs:
            path_dirs.append(found[name].parent)
    return NodeTools(
        containerd=found["containerd"],
        containerd_shim_dir=found["containerd-shim-runc-v2"].parent,
        runc=found["runc"],
        ctr=found["ctr"],
        cni_bin_dir=cni_bin_dir,
        coredns=ensure_coredns(go),
        netpol=ensure_netpol(go),
        nft=found["nft"],
        pause_image=ensure_pause_image(go),
        iptables=found["iptables"],
        conntrack=found["conntrack"],
        path_dirs=tuple(path_dirs),
    )


def install_node() -> dict[str, str]:
    """Provision the node's programs; returns where each one is."""
    return ensure_node_tools().as_dict()
