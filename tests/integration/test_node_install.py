"""The node's installed pieces work: a containerd of our own takes the pause image, CoreDNS
runs, the CNI plugins answer. Nothing is left running or on disk afterwards."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from energy_harness.localstack.node_install import (
    CNI_PLUGINS,
    COREDNS_VERSION,
    PAUSE_IMAGE,
    NodeTools,
    ensure_node_tools,
)
from energy_harness.localstack.process import ManagedProcess, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node_tools() -> NodeTools:
    # Cold, this builds CoreDNS from the Go module proxy (minutes); warm it is a lookup.
    return ensure_node_tools()


def containerd_config(base: Path, socket: Path, tools: NodeTools) -> str:
    """Everything containerd would otherwise create under /var/lib, /run, /opt or /etc is
    pointed into `base`, so removing it leaves nothing behind."""
    return f"""\
version = 2
root = "{base / "root"}"
state = "{base / "state"}"

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  # This kernel refuses to lower oom_score_adj below the parent's.
  restrict_oom_score_adj = true
  sandbox_image = "{PAUSE_IMAGE}"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{tools.cni_bin_dir}"
  conf_dir = "{base / "cni-conf"}"
"""


@pytest.fixture
def containerd(node_tools: NodeTools) -> Iterator[Path]:
    """A throwaway containerd; yields its socket."""
    base = Path(tempfile.mkdtemp(prefix="ep-ctd-test-"))
    # Unix socket paths are limited to 107 bytes: a short directory of its own under /run.
    run_dir = Path(
        tempfile.mkdtemp(prefix="ep-ctd-test-", dir="/run" if os.access("/run", os.W_OK) else None)
    )
    socket = run_dir / "containerd.sock"
    config = base / "config.toml"
    config.write_text(containerd_config(base, socket, node_tools))
    env = dict(os.environ, PATH=f"{node_tools.search_path}{os.pathsep}{os.environ['PATH']}")
    process = ManagedProcess(
        "containerd",
        [str(node_tools.containerd), "--config", str(config)],
        base / "containerd.log",
        env=env,
    )
    try:
        process.start()
        wait_until(
            lambda: ctr(node_tools, socket, "version").returncode == 0,
            timeout=60,
            what="waiting for containerd to answer",
            process=process,
        )
        yield socket
    finally:
        process.stop(timeout=30)
        assert not process.alive()
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


PT_INTERP = 3


def elf_segment_types(elf: bytes) -> list[int]:
    """p_type of every program header of a 64-bit little-endian ELF file."""
    assert elf[:6] == b"\x7fELF\x02\x01", "not a 64-bit little-endian ELF file"
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]


def ctr(tools: NodeTools, socket: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.ctr), "--address", str(socket), "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_containerd_imports_the_pause_image_and_runs_cri(
    node_tools: NodeTools, containerd: Path
) -> None:
    plugins = ctr(node_tools, containerd, "plugins", "ls")
    assert plugins.returncode == 0, plugins.stderr
    cri = [line.split() for line in plugins.stdout.splitlines() if " cri " in f" {line} "]
    assert cri and cri[0][0] == "io.containerd.grpc.v1" and cri[0][-1] == "ok", plugins.stdout

    imported = ctr(node_tools, containerd, "images", "import", str(node_tools.pause_image))
    assert imported.returncode == 0, imported.stderr
    listed = ctr(node_tools, containerd, "images", "ls", "-q")
    assert PAUSE_IMAGE in listed.stdout.split(), listed.stdout
    # Unpacked into the default snapshotter, as the kubelet's sandbox needs it.
    checked = ctr(node_tools, containerd, "images", "check")
    assert checked.returncode == 0, checked.stderr
    [line] = [line for line in checked.stdout.splitlines() if line.startswith(PAUSE_IMAGE)]
    assert "complete" in line and "true" in line.split()[-1], checked.stdout
    # The image's layer really holds a /pause that runs under runc (and leaves no container).
    ran = ctr(node_tools, containerd, "run", "--rm", PAUSE_IMAGE, "ep-pause-check", "/pause", "-v")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("pause.c v3.10-"), ran.stdout
    containers = ctr(node_tools, containerd, "containers", "ls", "-q")
    assert containers.stdout.split() == [], containers.stdout


def test_pause_binary_is_static_and_reports_its_version(node_tools: NodeTools) -> None:
    binary = node_tools.pause_image.parent / "pause"
    # No interpreter: it runs in an image that holds nothing but /pause.
    assert PT_INTERP not in elf_segment_types(binary.read_bytes())
    out = subprocess.run([str(binary), "-v"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout.startswith("pause.c v3.10-"), out


def test_coredns_reports_its_version(node_tools: NodeTools) -> None:
    out = subprocess.run(
        [str(node_tools.coredns), "-version"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert f"CoreDNS-{COREDNS_VERSION.removeprefix('v')}" in out.stdout


def test_cni_plugins_answer_version(node_tools: NodeTools) -> None:
    for plugin in CNI_PLUGINS:
        assert os.access(node_tools.cni_bin_dir / plugin, os.X_OK), plugin
    out = subprocess.run(
        [str(node_tools.cni_bin_dir / "bridge")],
        input='{"cniVersion": "0.4.0"}',
        env={"CNI_COMMAND": "VERSION", "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "0.4.0" in json.loads(out.stdout)["supportedVersions"]


def test_kube_proxy_finds_its_tools_on_the_node_path(node_tools: NodeTools) -> None:
    for program in ("iptables", "iptables-save", "iptables-restore", "conntrack", "runc",
                    "containerd-shim-runc-v2"):
        assert shutil.which(program, path=node_tools.search_path), program
