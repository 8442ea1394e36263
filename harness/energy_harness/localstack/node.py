"""A real Kubernetes node on this machine, beside kwok's fake ones.

containerd (Debian's, with its CRI plugin) runs the pods with runc; kubelet and kube-proxy
are the v1.33 multi-call binary's; pods get their network from Debian's CNI plugins (a
bridge, host-local addresses, portmap) and their names from CoreDNS built from the Go module
proxy. Every one of them is a managed process of the harness, like the control plane:
`RealNode.stop()` kills every pod, unmounts and deletes what the node made (network
namespaces, links, iptables chains, cgroups) and leaves nothing running.

Why it is shaped like this:
- kind cannot run here: its nodes are privileged containers, which this kernel refuses
  (CAP_SYS_RESOURCE is missing). The kubelet does not need to be in a container.
- Without CAP_SYS_RESOURCE no process may lower an oom_score_adj; containerd's
  `restrict_oom_score_adj` clamps the kubelet's per-QoS values instead of failing.
- The node, its API server endpoint, kubelet and DNS share one address, NODE_IP, on the
  pods' bridge: pods reach it through their bridge, and nothing listens on the
  machine's real interfaces.
- One real node per machine (a lock file): links, iptables chains and the kubelet port are
  machine-wide.

All command-line flags and configuration files of the node's components are rendered in the
"Configuration" section below, and only there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from energy_harness.localstack.node_install import PAUSE_IMAGE, NodeTools, ensure_node_tools
from energy_harness.localstack.process import (
    ManagedProcess,
    ServiceError,
    free_port,
    http_get,
    wait_until,
)

NODE_NAME = "energy-node"
# The node's pods: inside the cluster's pod CIDR, away from the addresses kwok hands out.
POD_SUBNET = "10.244.200.0/24"
# The node's own address is its pods' gateway on their bridge (this kernel has no dummy
# links, and the CNI bridge plugin allows the bridge no second IPv4 address). We make the
# bridge with it before the API server binds it; the plugin then finds it as it wants it.
NODE_IP = "10.244.200.1"
BRIDGE = "energy-cni0"
# The kubelet's cgroup root: every pod's cgroup lives below it, in every hierarchy.
CGROUP_PARENT = "energy-node"
# Sockets and the lock: a short, fixed path (unix socket paths are limited to 107 bytes).
RUN_DIR = Path("/run/energy-node")
CNI_NETWORK = "energy-node"
# A label the kubelet puts on its own Node, so tests can pin pods to the real node.
REAL_NODE_LABEL = "energy.pipeline.dev/real-node"

CGROUP_FS = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class NodePorts:
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int
    coredns_health: int
    coredns_ready: int
    netpol_metrics: int

    @classmethod
    def allocate(cls) -> NodePorts:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port(), free_port())


@dataclass(frozen=True)
class NodeLayout:
    """Files of one node under its base directory; sockets under RUN_DIR."""

    base_dir: Path

    @property
    def logs(self) -> Path:
        return self.base_dir / "logs"

    @property
    def containerd_root(self) -> Path:
        return self.base_dir / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return RUN_DIR / "containerd-state"

    @property
    def containerd_config(self) -> Path:
        return self.base_dir / "containerd" / "config.toml"

    @property
    def containerd_socket(self) -> Path:
        return RUN_DIR / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.base_dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.base_dir / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.base_dir / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.base_dir / "kubelet-config.yaml"

    @property
    def pod_logs(self) -> Path:
        return self.base_dir / "pod-logs"

    @property
    def volumes(self) -> Path:
        return self.base_dir / "volumes"

    @property
    def corefile(self) -> Path:
        return self.base_dir / "Corefile"


@dataclass(frozen=True)
class ClusterFacts:
    """What the node needs to know of its control plane (kube.py hands it over)."""

    server: str
    ca_file: Path
    kubelet_kubeconfig: Path
    kubelet_cert: Path
    kubelet_key: Path
    proxy_kubeconfig: Path
    coredns_kubeconfig: Path
    netpol_kubeconfig: Path
    cluster_domain: str
    pod_cidr: str


# ---------------------------------------------------------------------------------------------
# Configuration: every flag and file of containerd, CNI, kubelet, kube-proxy and CoreDNS
# ---------------------------------------------------------------------------------------------

def render_containerd_config(layout: NodeLayout, tools: NodeTools) -> str:
    """containerd 1.6 config (version 2): our own root, state, socket and CRI settings."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join([
        "version = 2",
        f'root = "{layout.containerd_root}"',
        f'state = "{layout.containerd_state}"',
        # The node's snapshotter; the others would probe (and log about) file systems we lack.
        'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", '
        '"io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", '
        '"io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]',
        "",
        "[grpc]",
        f'  address = "{layout.containerd_socket}"',
        "[ttrpc]",
        f'  address = "{layout.containerd_socket}.ttrpc"',
        "[debug]",
        '  level = "info"',
        "",
        f"[{cri}]",
        # Built locally and imported: no registry is reachable.
        f'  sandbox_image = "{PAUSE_IMAGE}"',
        # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which this machine withholds: clamp
        # the kubelet's per-QoS values to the runtime's own instead of failing every start.
        "  restrict_oom_score_adj = true",
        # Only the unix socket: nothing of the runtime listens on TCP.
        "  disable_tcp_service = true",
        "  enable_selinux = false",
        # Pods' network namespaces under our state directory, not the machine's /run/netns:
        # a cleanup then unmounts only what is ours.
        "  netns_mounts_under_state_dir = true",
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{cri}.containerd.runtimes.runc.options]",
        f'  BinaryName = "{tools.runc}"',
        # cgroup v1 without systemd as the machine's init: the kubelet's cgroupfs driver.
        "  SystemdCgroup = false",
        f"[{cri}.cni]",
        f'  bin_dir = "{tools.cni_bin_dir}"',
        f'  conf_dir = "{layout.cni_conf_dir}"',
        "  max_conf_num = 1",
        "",
    ])


def render_cni_conflist(layout: NodeLayout) -> dict[str, Any]:
    """One bridge for the node's pods, addresses from POD_SUBNET, hostPort support."""
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # Pods talk to NODE_IP and to each other; nothing leaves the machine, so no
                # masquerading (and no iptables chains of the bridge plugin to clean up).
                "ipMasq": False,
                # A pod reaching itself through a Service comes back over its own port.
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.cni_ipam_dir),
                },
            },
            # Accepts the pods' traffic in the FORWARD chain: with bridge-nf-call-iptables on,
            # even pod-to-pod packets on the bridge pass it, and a Docker engine on the same
            # machine sets its policy to DROP (the chains it adds are CNI-FORWARD, CNI-ADMIN).
            {"type": "firewall", "backend": "iptables"},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def render_kubelet_config(
    layout: NodeLayout, ports: NodePorts, cluster: ClusterFacts
) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # The apiserver reaches the kubelet (logs, exec, port-forward) on the node address.
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        "tlsCertFile": str(cluster.kubelet_cert),
        "tlsPrivateKeyFile": str(cluster.kubelet_key),
        # As kubeadm: client certificates from the cluster CA, everything else asks the
        # apiserver (SubjectAccessReview); no anonymous access.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(cluster.ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_PARENT}",
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        # cgroup v1 is what this machine has; kubelet 1.33 still supports it.
        "failCgroupV1": False,
        # The machine has no swap, but the check costs nothing to skip where one has.
        "failSwapOn": False,
        # Lowering the kubelet's own score needs CAP_SYS_RESOURCE; 0 leaves it as it is.
        "oomScoreAdj": 0,
        "clusterDomain": cluster.cluster_domain,
        "clusterDNS": [NODE_IP],
        "resolvConf": "/etc/resolv.conf",
        "podLogsDir": str(layout.pod_logs),
        "registerNode": True,
        "serializeImagePulls": False,
        # Images are imported, never pulled: image GC would delete what cannot come back.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # The test machine's disk is shared with everything else; evict only when truly full.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "maxPods": 110,
        # Status every 10 s (the default) and a short sync: tests wait on what the node reports.
        "nodeStatusUpdateFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "protectKernelDefaults": False,
        # No static pods: the control plane runs as processes of the harness.
        "staticPodPath": "",
        "shutdownGracePeriod": "0s",
    }


STORAGE_CLASS = "standard"


def render_local_storage(volumes_dir: Path, count: int = 12, size: str = "50Gi"
                         ) -> list[dict[str, Any]]:
    """kind's default StorageClass name, with `count` hostPath volumes made ahead of time.

    kind runs a provisioner (local-path) that makes such directories on demand; charts ask
    for claims of the default class and bind here the same way. WaitForFirstConsumer binds a
    claim when its pod is scheduled, as kind's class does; the directories are 0777 as
    local-path makes them, since hostPath volumes get no fsGroup ownership change.
    """
    objects: list[dict[str, Any]] = [{
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Retain",
    }]
    for index in range(count):
        objects.append({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{NODE_NAME}-pv-{index}",
                         "labels": {REAL_NODE_LABEL: "true"}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": STORAGE_CLASS,
                "hostPath": {"path": str(volumes_dir / f"pv-{index}"),
                             "type": "DirectoryOrCreate"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]},
                ]}]}},
            },
        })
    return objects


def render_kubelet_args(layout: NodeLayout, cluster: ClusterFacts) -> list[str]:
    return [
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={cluster.kubelet_kubeconfig}",
        f"--root-dir={layout.kubelet_root}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={NODE_IP}",
        f"--node-labels={REAL_NODE_LABEL}=true",
        "--v=1",
    ]


# kube-network-policies' nftables table and nfqueue: names of our own, so that a leftover
# is recognisably ours and nothing else on the machine is touched.
NETPOL_TABLE = "energy-node-netpol"
NETPOL_QUEUE = 104
# The iptables chain (table mangle, from POSTROUTING) that hands the pods' new connections to
# that queue. Upstream does this with an nftables `queue` rule, which needs the kernel's
# nft_queue (CONFIG_NFT_QUEUE); this machine's kernel lacks it but has the xtables NFQUEUE
# target, so the same steering is done here with iptables. Upstream's rules, in order:
# DNS, the node's root user (the kubelet's probes) and established flows pass; new
# connections from or to a pod address are queued. Without --queue-bypass: when the
# enforcer is not running, pod connections are dropped (fails closed, like upstream).
NETPOL_CHAIN = "ENERGY-NETPOL"


def render_netpol_args(ports: NodePorts, cluster: ClusterFacts) -> list[str]:
    """The NetworkPolicy enforcer (tools/netpol) for the pods of this node."""
    return [
        f"--kubeconfig={cluster.netpol_kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        f"--nfqueue-id={NETPOL_QUEUE}",
        f"--metrics-bind-address=127.0.0.1:{ports.netpol_metrics}",
        f"--nftables-table={NETPOL_TABLE}",
        "--v=1",
    ]


def render_netpol_steering(cluster: ClusterFacts) -> list[list[str]]:
    """`iptables -t mangle` argument lists that create NETPOL_CHAIN and hook it in."""
    chain = ["-t", "mangle"]
    queue = ["-j", "NFQUEUE", "--queue-num", str(NETPOL_QUEUE)]
    return [
        [*chain, "-N", NETPOL_CHAIN],
        [*chain, "-A", NETPOL_CHAIN, "-p", "udp", "--dport", "53", "-j", "RETURN"],
        [*chain, "-A", NETPOL_CHAIN, "-m", "owner", "--uid-owner", "0", "-j", "RETURN"],
        [*chain, "-A", NETPOL_CHAIN, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
         "-j", "RETURN"],
        [*chain, "-A", NETPOL_CHAIN, "-s", cluster.pod_cidr, *queue],
        [*chain, "-A", NETPOL_CHAIN, "-d", cluster.pod_cidr, *queue],
        [*chain, "-A", "POSTROUTING", "-j", NETPOL_CHAIN],
    ]


def render_kube_proxy_args(ports: NodePorts, cluster: ClusterFacts) -> list[str]:
    return [
        f"--kubeconfig={cluster.proxy_kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        "--proxy-mode=iptables",
        f"--cluster-cidr={cluster.pod_cidr}",
        f"--healthz-bind-address=127.0.0.1:{ports.proxy_healthz}",
        f"--metrics-bind-address=127.0.0.1:{ports.proxy_metrics}",
        # NodePorts on 127.0.0.1 would need route_localnet on the machine's loopback.
        "--iptables-localhost-nodeports=false",
        # Leave the machine's conntrack table size and timeouts as they are.
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0",
        "--v=1",
    ]


def render_corefile(ports: NodePorts, cluster: ClusterFacts) -> str:
    """kubeadm's Corefile, without `forward`: no upstream resolver is reachable here."""
    return (
        ".:53 {\n"
        f"    bind {NODE_IP}\n"
        "    errors\n"
        f"    health 127.0.0.1:{ports.coredns_health}\n"
        f"    ready 127.0.0.1:{ports.coredns_ready}\n"
        f"    kubernetes {cluster.cluster_domain} in-addr.arpa ip6.arpa {{\n"
        f"        kubeconfig {cluster.coredns_kubeconfig} energy\n"
        "        pods insecure\n"
        "        fallthrough in-addr.arpa ip6.arpa\n"
        "        ttl 30\n"
        "    }\n"
        "    cache 30\n"
        "    loadbalance\n"
        "}\n"
    )


def component_env(tools: NodeTools) -> dict[str, str]:
    """containerd finds its shim and runc on PATH, kube-proxy iptables-save/-restore."""
    return {**os.environ, "PATH": os.pathsep.join([tools.search_path, os.environ.get("PATH", "")])}


# ---------------------------------------------------------------------------------------------
# Machine state: links, cgroups, mounts, leftovers
# ---------------------------------------------------------------------------------------------

def _run(argv: Sequence[str], check: bool = True, timeout: float = 60,
         env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                            env=dict(env) if env is not None else None)
    if check and result.returncode != 0:
        raise ServiceError(f"{' '.join(argv)} exited {result.returncode}: "
                           f"{(result.stderr or result.stdout).strip()[-2000:]}")
    return result


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def create_node_link() -> None:
    """The bridge holding NODE_IP: the address the API server binds before the node runs."""
    if not _link_exists(BRIDGE):
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    prefix = POD_SUBNET.split("/")[1]
    _run(["ip", "addr", "replace", f"{NODE_IP}/{prefix}", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])


def cgroup_hierarchies() -> list[Path]:
    """Mounted cgroup v1 hierarchies (cpu, memory, ..., name=systemd)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] == "cgroup":
            found.append(Path(parts[1]))
    return found


def create_cgroup_parent() -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy before it starts."""
    for hierarchy in cgroup_hierarchies():
        target = hierarchy / CGROUP_PARENT
        target.mkdir(exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():
            # A new v1 cpuset has no CPUs and no memory nodes: nothing could run in it.
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not (target / name).read_text().strip():
                    (target / name).write_text((hierarchy / name).read_text())


def _cgroup_dirs_bottom_up(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    dirs = [Path(d) for d, _, _ in os.walk(root)]
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


def _pids_in_cgroups() -> set[int]:
    pids: set[int] = set()
    for hierarchy in cgroup_hierarchies():
        for directory in _cgroup_dirs_bottom_up(hierarchy / CGROUP_PARENT):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
    return pids


def _pids_mentioning(text: str) -> set[int]:
    """Processes whose command line names `text` (containerd's shims name its socket)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
    return found


def _kill(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def parse_mounts_under(mountinfo: str, prefixes: Sequence[Path]) -> list[str]:
    """Mount points in `mountinfo` (/proc/<pid>/mountinfo text) at or below `prefixes`."""
    mounts = []
    for line in mountinfo.splitlines():
        # Field 5 is the mount point, with spaces and such octal-escaped.
        point = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if any(point == str(p) or point.startswith(f"{p}/") for p in prefixes):
            mounts.append(point)
    return mounts


def _mounts_under(prefixes: Sequence[Path]) -> list[str]:
    return parse_mounts_under(Path("/proc/self/mountinfo").read_text(), prefixes)


def unmount_under(prefixes: Sequence[Path]) -> None:
    # Deepest first; lazily, as a killed process may still hold one for a moment.
    for point in sorted(set(_mounts_under(prefixes)), key=len, reverse=True):
        _run(["umount", "-l", point], check=False)


def parse_iptables_save(
    dump: str, prefixes: Sequence[str]
) -> tuple[set[str], list[tuple[str, list[str]]]]:
    """From one table's `iptables-save` output: the chains named `prefix*`, and the rules of
    other chains that jump to them, as (chain, rule arguments) for `iptables -D`."""
    chains = {
        chain for chain in re.findall(r"^:(\S+)", dump, re.M)
        if chain.startswith(tuple(prefixes))
    }
    if not chains:
        return chains, []
    jumps = []
    for rule in re.findall(r"^-A (\S+) (.*)$", dump, re.M):
        jumps_to = re.search(r"-j (\S+)", rule[1])
        if rule[0] not in chains and jumps_to and jumps_to.group(1) in chains:
            jumps.append((rule[0], shlex.split(rule[1])))
    return chains, jumps


def delete_iptables_chains(prefixes: Sequence[str], iptables: Path) -> None:
    """Chains named `prefix*` in every table, and the rules that jump to them.

    The kubelet's (KUBE-FIREWALL, canaries), kube-proxy's and the CNI portmap plugin's (CNI-)
    chains outlive the processes that made them, in IPv4 and IPv6 alike.
    """
    for family in ("iptables", "ip6tables"):
        command = iptables.parent / family
        save = iptables.parent / f"{family}-save"
        for table in ("mangle", "nat", "filter"):
            dump = _run([str(save), "-t", table], check=False).stdout
            chains, jumps = parse_iptables_save(dump, prefixes)
            for chain, rule in jumps:
                _run([str(command), "-t", table, "-D", chain, *rule], check=False)
            for flag in ("-F", "-X"):
                for chain in chains:
                    _run([str(command), "-t", table, flag, chain], check=False)


def clean_machine(
    layout: NodeLayout | None, tools: NodeTools, kube_proxy: Path, keep_link: bool = False
) -> None:
    """Undo everything a node makes on the machine; safe to run when nothing is there.

    Runs before a start too, so a node killed with its harness (kill -9, a CI timeout)
    leaves nothing that trips the next one. `keep_link` keeps the bridge and NODE_IP, which
    the API server serves on until it stops.
    """
    # Pods first (their cgroups), then the shims and anything else still naming our sockets.
    for _ in range(3):
        pids = _pids_in_cgroups() | _pids_mentioning(str(RUN_DIR))
        if not pids:
            break
        _kill(pids)
        time.sleep(0.5)
    prefixes = [RUN_DIR] + ([layout.base_dir] if layout is not None else [])
    unmount_under(prefixes)
    if _link_exists(BRIDGE) and not keep_link:
        _run(["ip", "link", "delete", BRIDGE], check=False)
    # kube-proxy's own cleanup knows its chains (KUBE-SERVICES, KUBE-NODEPORTS, ...).
    _run([str(kube_proxy), "--cleanup", "--proxy-mode=iptables"], check=False,
         env=component_env(tools))
    delete_iptables_chains(("KUBE-", "CNI-", NETPOL_CHAIN), tools.iptables)
    # The enforcer removes its table when stopped; killed, it leaves one that would queue
    # every pod packet to a queue nobody reads (the packets are dropped: it fails closed).
    _run([str(tools.nft), "delete", "table", "inet", NETPOL_TABLE], check=False)
    for hierarchy in cgroup_hierarchies():
        for directory in _cgroup_dirs_bottom_up(hierarchy / CGROUP_PARENT):
            with contextlib.suppress(OSError):
                directory.rmdir()
    remove_node_files()


# Files the kubelet and the CNI library write at fixed places, whatever --root-dir says, and
# which outlive pods killed without the CRI's teardown.
KUBELET_DEVICE_SOCKET = Path("/var/lib/kubelet/device-plugins/kubelet.sock")
CONTAINER_LOG_LINKS = Path("/var/log/containers")
CNI_RESULTS = Path("/var/lib/cni/results")


def remove_node_files() -> None:
    """containerd's state and sockets, and what the kubelet and libcni leave elsewhere."""
    for entry in RUN_DIR.glob("*"):
        if entry.name == "lock":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    KUBELET_DEVICE_SOCKET.unlink(missing_ok=True)
    if CONTAINER_LOG_LINKS.is_dir():
        for link in CONTAINER_LOG_LINKS.glob("*.log"):
            # The kubelet's links point into its podLogsDir, ours is named pod-logs.
            if link.is_symlink() and "/pod-logs/" in os.readlink(link):
                link.unlink(missing_ok=True)
    if CNI_RESULTS.is_dir():
        for result in (*CNI_RESULTS.glob(f"{CNI_NETWORK}-*"), *CNI_RESULTS.glob("cni-loopback-*")):
            result.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------------------------

@dataclass
class RealNode:
    """containerd + kubelet + kube-proxy + CoreDNS + a NetworkPolicy enforcer: one real Node
    named NODE_NAME.

    `prepare()` (before the API server starts: it binds NODE_IP) takes the machine lock,
    cleans up leftovers and creates the node's link and cgroup root. `start()` runs the
    components once the control plane serves, `load_images()` imports image archives,
    `stop()` kills the components and pods, `release()` (after the API server) the rest.
    """

    base_dir: Path
    kubelet: Path
    kube_proxy: Path
    tools: NodeTools | None = None
    ports: NodePorts = field(default_factory=NodePorts.allocate)
    processes: list[ManagedProcess] = field(default_factory=list, init=False)
    _lock: IO[str] | None = field(default=None, init=False, repr=False)

    @property
    def layout(self) -> NodeLayout:
        return NodeLayout(self.base_dir)

    # -- lifecycle ------------------------------------------------------------------------

    def prepare(self) -> None:
        if self.tools is None:
            self.tools = ensure_node_tools()
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        lock = open(RUN_DIR / "lock", "a+")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise ServiceError(
                f"another real node runs on this machine (lock {RUN_DIR / 'lock'}, held by "
                f"{holder}); one node per machine: stop that test run or `make down` first"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        self._lock = lock
        clean_machine(None, self.tools, self.kube_proxy)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        create_node_link()
        create_cgroup_parent()

    def start(self, cluster: ClusterFacts, timeout: float = 120.0) -> None:
        assert self.tools is not None and self._lock is not None, "prepare() first"
        layout = self.layout
        for directory in (layout.logs, layout.containerd_root, layout.containerd_state,
                          layout.cni_conf_dir, layout.cni_ipam_dir, layout.kubelet_root,
                          layout.pod_logs):
            directory.mkdir(parents=True, exist_ok=True)
        layout.containerd_config.write_text(render_containerd_config(layout, self.tools))
        (layout.cni_conf_dir / f"10-{CNI_NETWORK}.conflist").write_text(
            json.dumps(render_cni_conflist(layout), indent=2))
        layout.kubelet_config.write_text(
            yaml.safe_dump(render_kubelet_config(layout, self.ports, cluster), sort_keys=False))
        layout.corefile.write_text(render_corefile(self.ports, cluster))
        for volume in render_local_storage(layout.volumes)[1:]:
            path = Path(volume["spec"]["hostPath"]["path"])
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)

        containerd = self._start("containerd", [str(self.tools.containerd),
                                                f"--config={layout.containerd_config}"],
                                 env=component_env(self.tools))
        wait_until(lambda: self.ctr("version", check=False).returncode == 0, timeout=timeout,
                   what="waiting for containerd to serve", process=containerd)
        self.load_images([self.tools.pause_image])
        self._start("kubelet", [str(self.kubelet), *render_kubelet_args(layout, cluster)])
        self._start("kube-proxy", [str(self.kube_proxy),
                                   *render_kube_proxy_args(self.ports, cluster)],
                    env=component_env(self.tools))
        self._start("coredns", [str(self.tools.coredns), "-conf", str(layout.corefile)])
        for rule in render_netpol_steering(cluster):
            _run([str(self.tools.iptables), *rule], env=component_env(self.tools))
        self._start("netpol", [str(self.tools.netpol), *render_netpol_args(self.ports, cluster)])

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Every component's own health endpoint (the Node's Ready condition is kube.py's)."""
        for name, port, path in (
            ("kubelet", self.ports.kubelet_healthz, "/healthz"),
            ("kube-proxy", self.ports.proxy_healthz, "/healthz"),
            ("coredns", self.ports.coredns_health, "/health"),
            ("coredns", self.ports.coredns_ready, "/ready"),
            ("netpol", self.ports.netpol_metrics, "/metrics"),
        ):
            wait_until(
                lambda port=port, path=path: (
                    self.raise_if_exited() and http_get(port, path)[0] == 200
                ),
                timeout=timeout, what=f"waiting for {name} {path}", process=self._process(name),
            )

    def stop(self) -> None:
        """Stop the components and kill every pod; the API server's address stays."""
        # Components first, so nothing restarts what is being killed; then the pods.
        for proc in reversed(self.processes):
            proc.request_stop()
        for proc in reversed(self.processes):
            proc.wait_stopped(15)
        self.processes.clear()
        if self.tools is not None and self._lock is not None:
            clean_machine(self.layout, self.tools, self.kube_proxy, keep_link=True)

    def release(self) -> None:
        """After the API server stopped: remove the node's address and bridge, free the lock."""
        self.stop()
        if self.tools is not None and self._lock is not None:
            clean_machine(self.layout, self.tools, self.kube_proxy)
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # -- images ---------------------------------------------------------------------------

    def ctr(self, *args: str, check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        assert self.tools is not None
        return _run([str(self.tools.ctr), f"--address={self.layout.containerd_socket}",
                     "--namespace=k8s.io", *args], check=check, timeout=timeout)

    def load_images(self, archives: Iterable[Path]) -> None:
        """Import image archives (docker save or OCI layout tars) for the kubelet to run."""
        for archive in archives:
            self.ctr("images", "import", str(archive))

    def image_refs(self) -> set[str]:
        return set(self.ctr("images", "list", "--quiet").stdout.split())

    # -- helpers --------------------------------------------------------------------------

    def _start(self, name: str, argv: list[str],
               env: Mapping[str, str] | None = None) -> ManagedProcess:
        proc = ManagedProcess(name=name, argv=argv, log_path=self.layout.logs / f"{name}.log",
                              env=dict(env) if env is not None else None)
        proc.start()
        self.processes.append(proc)
        return proc

    def _process(self, name: str) -> ManagedProcess:
        return next(p for p in self.processes if p.name == name)

    def raise_if_exited(self, what: str = "the node was starting") -> bool:
        """Raise the first component that exited, with its log tail; else True."""
        for proc in self.processes:
            if not proc.alive():
                raise proc.failure(f"exited with code {proc.returncode()} while {what}")
        return True
