"""The real node starts and stops like the rest of the harness: a component that fails is
named with its log tail, and a stopped node leaves nothing on the machine (no process, pod,
mount, link, iptables chain, nftables table or cgroup), even with a pod running when it stops."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from energy_harness.localstack import node as node_module
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.localstack.node import BRIDGE, CGROUP_PARENT, NODE_NAME, RUN_DIR
from energy_harness.localstack.process import ServiceError
from energy_harness.testing import wait_for

pytestmark = [pytest.mark.node, pytest.mark.timeout(600)]


def _leftovers(base: Path) -> list[str]:
    found = []
    if Path("/sys/class/net", BRIDGE).exists():
        found.append(f"link {BRIDGE}")
    for hierarchy in node_module.cgroup_hierarchies():
        if (hierarchy / CGROUP_PARENT).exists():
            found.append(f"cgroup {hierarchy / CGROUP_PARENT}")
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {m}" for m in node_module.parse_mounts_under(mounts, [RUN_DIR, base])]
    for family in ("iptables-save", "ip6tables-save"):
        dump = subprocess.run([family], capture_output=True, text=True).stdout
        found += [f"{family} {c}" for c in re.findall(r"^:((?:KUBE|CNI)-\S+|ENERGY-NETPOL)",
                                                       dump, re.M)]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    if f"table inet {node_module.NETPOL_TABLE}" in tables.splitlines():
        found.append(f"nftables table inet {node_module.NETPOL_TABLE}")
    found += [f"file {f}" for f in RUN_DIR.glob("*") if f.name != "lock"]
    if node_module.KUBELET_DEVICE_SOCKET.exists():
        found.append(f"file {node_module.KUBELET_DEVICE_SOCKET}")
    found += [f"link {link}" for link in node_module.CONTAINER_LOG_LINKS.glob("*.log")
              if link.is_symlink() and str(base) in os.readlink(link)]
    found += [f"cni cache {r}" for r in node_module.CNI_RESULTS.glob(
        f"{node_module.CNI_NETWORK}-*")]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(RUN_DIR).encode() in cmdline or str(base).encode() in cmdline:
                found.append(f"process {proc.name}: {cmdline[:80]!r}")
    return found


def test_a_stopped_node_leaves_nothing_behind_even_with_a_pod_running(tmp_path: Path) -> None:
    base = tmp_path / "kube"
    plane = KubeControlPlane(base, nodes=0, real_node=True, start_timeout=180)
    try:
        plane.start()
        assert plane.node is not None
        # The pause image is all a pod needs: it is what every sandbox runs.
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
               "spec": {"containers": [{"name": "pause", "image": node_module.PAUSE_IMAGE,
                                        "imagePullPolicy": "Never"}],
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 65535}}}
        plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
        wait_for(lambda: json.loads(plane.kubectl("get", "pod", "sleeper", "-o", "json").stdout)
                 ["status"].get("phase") == "Running", 120, "the pod running")
        nodes = json.loads(plane.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        assert [n["metadata"]["name"] for n in nodes] == [NODE_NAME]
        assert _leftovers(base)  # the check sees a running node
    finally:
        plane.stop()
    assert _leftovers(base) == []


def test_a_failing_component_is_named_with_its_log_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = 'version = 2\nroot = "unterminated\n'
    monkeypatch.setattr(node_module, "render_containerd_config", lambda *a: broken)
    plane = KubeControlPlane(tmp_path / "kube", nodes=0, real_node=True, start_timeout=60)
    with pytest.raises(ServiceError) as failed:
        plane.start()
    message = str(failed.value)
    assert message.startswith("containerd:"), message
    assert "--- last lines ---" in message
    assert "toml" in message.lower() or "config" in message.lower(), message
    assert _leftovers(tmp_path / "kube") == []
