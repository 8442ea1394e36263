"""The real node's pure parts: containerd, CNI, kubelet, kube-proxy and CoreDNS configuration,
the API server's flags and certificates for it, and the parsing behind its cleanup.

Nothing here starts a process or touches the machine: the node is machine-exclusive.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from energy_harness.localstack import node
from energy_harness.localstack.kube import (
    CLUSTER_DOMAIN,
    POD_CIDR,
    render_apiserver_args,
    render_cert_specs,
    render_kwok_args,
)
from energy_harness.localstack.node import (
    BRIDGE,
    CGROUP_PARENT,
    CNI_NETWORK,
    NETPOL_CHAIN,
    NETPOL_QUEUE,
    NETPOL_TABLE,
    NODE_IP,
    NODE_NAME,
    POD_SUBNET,
    REAL_NODE_LABEL,
    RUN_DIR,
    ClusterFacts,
    NodeLayout,
    NodePorts,
    component_env,
    delete_iptables_chains,
    parse_iptables_save,
    parse_mounts_under,
    render_cni_conflist,
    render_containerd_config,
    render_corefile,
    render_kube_proxy_args,
    render_kubelet_args,
    render_kubelet_config,
    render_netpol_args,
    render_netpol_steering,
    unmount_under,
)
from energy_harness.localstack.node_install import (
    NETPOL_VERSION,
    PAUSE_IMAGE,
    NodeTools,
    netpol_source_dir,
)

from .test_kube_render import LAYOUT, PORTS, flag, flag_names

pytestmark = pytest.mark.unit

# As long as pytest's tmp_path can be: the node's sockets must not depend on its base directory.
NODE_LAYOUT = NodeLayout(Path("/tmp/pytest-of-someone/pytest-123") / ("deep-" * 20) / "node")
NODE_PORTS = NodePorts(
    kubelet_healthz=20001, proxy_healthz=20002, proxy_metrics=20003, coredns_health=20004,
    coredns_ready=20005, netpol_metrics=20006,
)
TOOLS = NodeTools(
    containerd=Path("/usr/bin/containerd"),
    containerd_shim_dir=Path("/usr/bin"),
    runc=Path("/usr/sbin/runc"),
    ctr=Path("/usr/bin/ctr"),
    cni_bin_dir=Path("/usr/lib/cni"),
    coredns=Path("/cache/coredns-v1.15.0/bin/coredns"),
    netpol=Path("/cache/netpol-v0.8.0/bin/netpol"),
    nft=Path("/usr/sbin/nft"),
    pause_image=Path("/cache/pause-3.10/pause.tar"),
    iptables=Path("/usr/sbin/iptables"),
    conntrack=Path("/usr/sbin/conntrack"),
    path_dirs=(Path("/usr/bin"), Path("/usr/sbin"), Path("/usr/lib/cni")),
)
CLUSTER = ClusterFacts(
    server=f"https://{NODE_IP}:6443",
    ca_file=Path("/tmp/plane/pki/ca.crt"),
    kubelet_kubeconfig=Path("/tmp/plane/kubelet.kubeconfig"),
    kubelet_cert=Path("/tmp/plane/pki/kubelet-server.crt"),
    kubelet_key=Path("/tmp/plane/pki/kubelet-server.key"),
    proxy_kubeconfig=Path("/tmp/plane/kube-proxy.kubeconfig"),
    coredns_kubeconfig=Path("/tmp/plane/admin.kubeconfig"),
    netpol_kubeconfig=Path("/tmp/plane/admin.kubeconfig"),
    cluster_domain=CLUSTER_DOMAIN,
    pod_cidr=POD_CIDR,
)
CRI = "io.containerd.grpc.v1.cri"
# sun_path is 108 bytes including its terminating NUL; a longer path fails to bind.
UNIX_PATH_MAX = 108


# ---------------------------------------------------------------------------------------------
# containerd
# ---------------------------------------------------------------------------------------------

def containerd_config() -> dict:
    # tomllib also raises on a table defined twice, which containerd would refuse to load.
    return tomllib.loads(render_containerd_config(NODE_LAYOUT, TOOLS))


def test_containerd_config_is_version_2_with_our_own_paths() -> None:
    config = containerd_config()
    assert config["version"] == 2
    assert config["root"] == str(NODE_LAYOUT.containerd_root)
    assert config["state"] == str(NODE_LAYOUT.containerd_state)
    assert config["grpc"]["address"] == str(NODE_LAYOUT.containerd_socket)
    # Never the machine's own containerd (Docker's), which listens on the default socket.
    assert config["grpc"]["address"] != "/run/containerd/containerd.sock"
    assert config["ttrpc"]["address"] != config["grpc"]["address"]


def test_containerd_tables_are_each_opened_once() -> None:
    headers = [
        line.strip() for line in render_containerd_config(NODE_LAYOUT, TOOLS).splitlines()
        if line.strip().startswith("[")
    ]
    assert len(headers) == len(set(headers)), headers


def test_sockets_and_state_are_short_paths_under_run_dir() -> None:
    config = containerd_config()
    for socket in (config["grpc"]["address"], config["ttrpc"]["address"]):
        assert Path(socket).is_relative_to(RUN_DIR)
        assert len(os.fsencode(socket)) < UNIX_PATH_MAX, socket
    # Pods' network namespaces are mounted under the state directory; a cleanup before any
    # layout is known (prepare() after a kill -9) unmounts below RUN_DIR only.
    assert NODE_LAYOUT.containerd_state.is_relative_to(RUN_DIR)


def test_containerd_cri_settings() -> None:
    cri = containerd_config()["plugins"][CRI]
    # Imported from our own build: the kubelet's and containerd's sandbox image must agree.
    assert cri["sandbox_image"] == PAUSE_IMAGE
    # This machine withholds CAP_SYS_RESOURCE, so lowering an oom_score_adj fails: without the
    # clamp every pod's sandbox (and each Burstable/Guaranteed container) would fail to start.
    assert cri["restrict_oom_score_adj"] is True
    # Netns mounts stay under our state directory instead of the machine's /run/netns.
    assert cri["netns_mounts_under_state_dir"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert cri["containerd"]["default_runtime_name"] == "runc"
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    # The kubelet's cgroupfs driver: both must agree or pods' cgroups land elsewhere.
    assert runc["options"]["SystemdCgroup"] is False
    assert runc["options"]["BinaryName"] == str(TOOLS.runc)
    assert cri["cni"]["bin_dir"] == str(TOOLS.cni_bin_dir)
    assert cri["cni"]["conf_dir"] == str(NODE_LAYOUT.cni_conf_dir)


def test_component_env_puts_the_node_tools_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/bin")
    path = component_env(TOOLS)["PATH"].split(os.pathsep)
    # containerd finds its shim, kube-proxy iptables-save/-restore, by name on PATH.
    assert path[: len(TOOLS.path_dirs)] == [str(d) for d in TOOLS.path_dirs]
    assert path[-1] == "/bin"


# ---------------------------------------------------------------------------------------------
# CNI
# ---------------------------------------------------------------------------------------------

def test_cni_conflist_is_one_bridge_with_firewall_and_portmap() -> None:
    conflist = json.loads(json.dumps(render_cni_conflist(NODE_LAYOUT)))
    assert conflist["name"] == CNI_NETWORK
    bridge, firewall, portmap = conflist["plugins"]
    # Pod-to-pod packets cross the FORWARD chain (bridge-nf-call-iptables), whose policy a
    # Docker engine sets to DROP: without these ACCEPT rules Kafka's voters never meet.
    assert firewall == {"type": "firewall", "backend": "iptables"}
    assert bridge["type"] == "bridge"
    assert bridge["bridge"] == BRIDGE
    assert bridge["isGateway"] is True
    # Nothing leaves the machine: no masquerading, and no bridge-plugin chains to clean up.
    assert bridge["ipMasq"] is False
    [[pod_range]] = bridge["ipam"]["ranges"]
    assert pod_range == {"subnet": POD_SUBNET, "gateway": NODE_IP}
    assert bridge["ipam"]["dataDir"] == str(NODE_LAYOUT.cni_ipam_dir)
    assert Path(bridge["ipam"]["dataDir"]).is_relative_to(NODE_LAYOUT.base_dir)
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}


def test_node_addresses_fit_the_cluster_and_avoid_kwok() -> None:
    subnet = ipaddress.ip_network(POD_SUBNET)
    node_ip = ipaddress.ip_address(NODE_IP)
    assert node_ip in subnet
    assert node_ip not in (subnet.network_address, subnet.broadcast_address)
    assert subnet.subnet_of(ipaddress.ip_network(POD_CIDR))
    # kwok hands out fake pod IPs from its --cidr start upward; the real pods' subnet must be
    # far above it, or a kwok pod and a real one could share an address.
    kwok_start = ipaddress.ip_address(flag(render_kwok_args(LAYOUT, PORTS), "--cidr").split("/")[0])
    assert kwok_start == ipaddress.ip_address("10.244.0.1")
    assert kwok_start not in subnet
    assert int(subnet.network_address) - int(kwok_start) > 10_000


# ---------------------------------------------------------------------------------------------
# kubelet
# ---------------------------------------------------------------------------------------------

def test_kubelet_config() -> None:
    config = render_kubelet_config(NODE_LAYOUT, NODE_PORTS, CLUSTER)
    # Written with yaml.safe_dump: it must hold nothing but plain data.
    assert yaml.safe_load(yaml.safe_dump(config)) == config
    assert config["kind"] == "KubeletConfiguration"
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == f"/{CGROUP_PARENT}"
    assert config["address"] == NODE_IP
    assert config["clusterDNS"] == [NODE_IP]
    assert config["clusterDomain"] == CLUSTER_DOMAIN
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authentication"]["webhook"]["enabled"] is True
    assert config["authentication"]["x509"]["clientCAFile"] == str(CLUSTER.ca_file)
    assert config["authorization"]["mode"] == "Webhook"
    assert config["containerRuntimeEndpoint"] == f"unix://{NODE_LAYOUT.containerd_socket}"
    assert config["healthzBindAddress"] == "127.0.0.1"
    assert config["healthzPort"] == NODE_PORTS.kubelet_healthz
    # Images are imported, never pulled: image GC must never delete one.
    assert config["imageGCHighThresholdPercent"] == 100
    assert config["imageGCLowThresholdPercent"] < 100
    # This machine has cgroup v1; kubelet 1.33 refuses to start on it unless told not to fail.
    assert config["failCgroupV1"] is False
    assert config["tlsCertFile"] == str(CLUSTER.kubelet_cert)
    assert config["tlsPrivateKeyFile"] == str(CLUSTER.kubelet_key)
    assert config["staticPodPath"] == ""


def test_kubelet_config_agrees_with_containerd() -> None:
    config = render_kubelet_config(NODE_LAYOUT, NODE_PORTS, CLUSTER)
    runc = containerd_config()["plugins"][CRI]["containerd"]["runtimes"]["runc"]
    assert config["containerRuntimeEndpoint"] == f"unix://{containerd_config()['grpc']['address']}"
    assert (config["cgroupDriver"] == "systemd") == runc["options"]["SystemdCgroup"]


def test_kubelet_args() -> None:
    args = render_kubelet_args(NODE_LAYOUT, CLUSTER)
    assert len(flag_names(args)) == len(set(flag_names(args)))
    assert flag(args, "--hostname-override") == NODE_NAME
    assert flag(args, "--node-ip") == NODE_IP
    assert flag(args, "--node-labels") == f"{REAL_NODE_LABEL}=true"
    assert flag(args, "--config") == str(NODE_LAYOUT.kubelet_config)
    assert flag(args, "--kubeconfig") == str(CLUSTER.kubelet_kubeconfig)
    assert flag(args, "--root-dir") == str(NODE_LAYOUT.kubelet_root)


# ---------------------------------------------------------------------------------------------
# kube-proxy and CoreDNS
# ---------------------------------------------------------------------------------------------

def test_kube_proxy_args() -> None:
    args = render_kube_proxy_args(NODE_PORTS, CLUSTER)
    assert len(flag_names(args)) == len(set(flag_names(args)))
    assert flag(args, "--proxy-mode") == "iptables"
    assert flag(args, "--hostname-override") == NODE_NAME
    assert flag(args, "--cluster-cidr") == POD_CIDR
    assert flag(args, "--kubeconfig") == str(CLUSTER.proxy_kubeconfig)
    assert flag(args, "--healthz-bind-address") == f"127.0.0.1:{NODE_PORTS.proxy_healthz}"
    assert flag(args, "--metrics-bind-address") == f"127.0.0.1:{NODE_PORTS.proxy_metrics}"
    # 0 leaves the machine's conntrack table size and timeouts as they are (writing them
    # needs privileges, and they are shared with everything else on the machine).
    conntrack = [name for name in flag_names(args) if name.startswith("--conntrack-")]
    assert conntrack
    for name in conntrack:
        assert flag(args, name) == "0", name


def test_netpol_args_name_our_node_table_and_queue() -> None:
    args = render_netpol_args(NODE_PORTS, CLUSTER)
    assert len(flag_names(args)) == len(set(flag_names(args)))
    assert flag(args, "--kubeconfig") == str(CLUSTER.netpol_kubeconfig)
    assert flag(args, "--hostname-override") == NODE_NAME
    assert flag(args, "--metrics-bind-address") == f"127.0.0.1:{NODE_PORTS.netpol_metrics}"
    # Our own table and queue: a leftover is recognisably ours, and clean_machine removes it.
    assert flag(args, "--nftables-table") == NETPOL_TABLE == "energy-node-netpol"
    assert flag(args, "--nfqueue-id") == str(NETPOL_QUEUE)


def test_netpol_steering_queues_new_pod_connections_but_not_dns_root_or_established() -> None:
    rules = render_netpol_steering(CLUSTER)
    assert all(rule[:2] == ["-t", "mangle"] for rule in rules)
    assert rules[0][2:] == ["-N", NETPOL_CHAIN]
    # Hooked in last, when the chain is complete.
    assert rules[-1][2:] == ["-A", "POSTROUTING", "-j", NETPOL_CHAIN]
    body = [" ".join(rule[4:]) for rule in rules[1:-1]]
    queue = f"-j NFQUEUE --queue-num {NETPOL_QUEUE}"
    assert body == [
        "-p udp --dport 53 -j RETURN",
        "-m owner --uid-owner 0 -j RETURN",
        "-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
        f"-s {POD_CIDR} {queue}",
        f"-d {POD_CIDR} {queue}",
    ]
    # No --queue-bypass: with the enforcer down, pod connections fail closed.
    assert "--queue-bypass" not in " ".join(body)


def test_netpol_wrapper_pins_the_release_node_install_names() -> None:
    go_mod = (netpol_source_dir() / "go.mod").read_text()
    assert re.search(
        rf"^\s*sigs\.k8s\.io/kube-network-policies {re.escape(NETPOL_VERSION)}$", go_mod, re.M)


def test_corefile_serves_the_cluster_domain_on_the_node_address() -> None:
    corefile = render_corefile(NODE_PORTS, CLUSTER)
    lines = [line.strip() for line in corefile.splitlines()]
    assert corefile.count("{") == corefile.count("}")
    assert f"bind {NODE_IP}" in lines
    assert f"health 127.0.0.1:{NODE_PORTS.coredns_health}" in lines
    assert f"ready 127.0.0.1:{NODE_PORTS.coredns_ready}" in lines
    [kubernetes] = [line for line in lines if line.startswith("kubernetes ")]
    assert kubernetes.split()[1] == CLUSTER_DOMAIN
    assert f"kubeconfig {CLUSTER.coredns_kubeconfig} energy" in lines
    # No upstream resolver is reachable here: a `forward` would only time out every lookup.
    assert not any(line.split()[0] == "forward" for line in lines if line)


# ---------------------------------------------------------------------------------------------
# The control plane's side: API server flags and certificates
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("real_node", "address", "reconciler", "privileged"),
    [(True, NODE_IP, "lease", "false"), (False, "127.0.0.1", "none", "true")],
)
def test_apiserver_args_with_and_without_a_real_node(
    real_node: bool, address: str, reconciler: str, privileged: str
) -> None:
    args = render_apiserver_args(LAYOUT, PORTS, real_node)
    assert len(flag_names(args)) == len(set(flag_names(args)))
    assert flag(args, "--bind-address") == address
    assert flag(args, "--advertise-address") == address
    assert flag(args, "--endpoint-reconciler-type") == reconciler
    assert flag(args, "--allow-privileged") == privileged
    assert flag(args, "--kubelet-client-certificate") == str(
        LAYOUT.cert("apiserver-kubelet-client"))
    # Only the real kubelet serves a certificate from our CA; kwok's is its own.
    has_kubelet_ca = "--kubelet-certificate-authority" in flag_names(args)
    assert has_kubelet_ca == real_node
    if real_node:
        assert flag(args, "--kubelet-certificate-authority") == str(LAYOUT.cert("ca"))


def test_cert_specs_for_the_real_node() -> None:
    specs = {spec.name: spec for spec in render_cert_specs()}
    assert NODE_IP in specs["apiserver"].ips
    # The Node authorizer and NodeRestriction scope system:node:<name> to the Node of that
    # name: it must be the name the kubelet registers (--hostname-override).
    kubelet_client = specs["kubelet-client"]
    assert kubelet_client.subject == f"/O=system:nodes/CN=system:node:{NODE_NAME}"
    assert kubelet_client.client and not kubelet_client.server
    hostname = flag(render_kubelet_args(NODE_LAYOUT, CLUSTER), "--hostname-override")
    assert kubelet_client.common_name == f"system:node:{hostname}"
    # The apiserver reaches the kubelet at its address and checks the certificate's SANs.
    kubelet_server = specs["kubelet-server"]
    assert kubelet_server.server
    kubelet_address = render_kubelet_config(NODE_LAYOUT, NODE_PORTS, CLUSTER)["address"]
    assert kubelet_address in kubelet_server.ips
    assert NODE_NAME in kubelet_server.dns_names
    assert specs["kube-proxy"].subject == "/CN=system:kube-proxy"
    assert specs["kube-proxy"].client
    assert specs["apiserver-kubelet-client"].client


# ---------------------------------------------------------------------------------------------
# Cleanup: what is parsed from the machine's state, and the commands that follow
# ---------------------------------------------------------------------------------------------

NAT_DUMP = """\
# Generated by iptables-save v1.8.9 (nf_tables) on Mon Jan  1 00:00:00 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:DOCKER - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-NPX46M4PTMTKRN6Y - [0:0]
:MY-KUBE-CHAIN - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A MY-KUBE-CHAIN -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster \
IP" -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
COMMIT
# Completed on Mon Jan  1 00:00:00 2026
"""
PORTALS = ["-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"]


def test_iptables_save_parsing_finds_our_chains_and_the_jumps_into_them() -> None:
    chains, jumps = parse_iptables_save(NAT_DUMP, ("KUBE-", "CNI-"))
    # By prefix only: Docker's and anyone else's chains stay.
    assert chains == {
        "CNI-HOSTPORT-DNAT", "KUBE-POSTROUTING", "KUBE-SERVICES", "KUBE-SVC-NPX46M4PTMTKRN6Y",
    }
    # Rules inside our chains go with the flush; quoted comments come back as one argument.
    assert jumps == [
        ("PREROUTING", PORTALS),
        ("PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"]),
        ("OUTPUT", PORTALS),
        ("POSTROUTING",
         ["-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING"]),
        ("MY-KUBE-CHAIN", ["-j", "KUBE-SERVICES"]),
    ]


def test_iptables_save_parsing_without_our_chains() -> None:
    assert parse_iptables_save(NAT_DUMP, ("CILIUM-",)) == (set(), [])
    assert parse_iptables_save("", ("KUBE-",)) == (set(), [])


def test_delete_iptables_chains_unhooks_before_flushing_and_deleting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: Sequence[str], check: bool = True, timeout: float = 60,
                 env: object = None) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        dump = NAT_DUMP if argv[:3] == ["/sbin/iptables-save", "-t", "nat"] else ""
        return subprocess.CompletedProcess(list(argv), 0, dump, "")

    monkeypatch.setattr(node, "_run", fake_run)
    delete_iptables_chains(("KUBE-", "CNI-"), Path("/sbin/iptables"))
    # Every table of both families is read from the tools beside `iptables`.
    saves = [call for call in calls if call[0].endswith("-save")]
    assert {(call[0], call[2]) for call in saves} == {
        (f"/sbin/{family}-save", table)
        for family in ("iptables", "ip6tables") for table in ("mangle", "nat", "filter")
    }
    changes = [call for call in calls if not call[0].endswith("-save")]
    assert all(call[:3] == ["/sbin/iptables", "-t", "nat"] for call in changes)
    actions = [call[3] for call in changes]
    # A chain still jumped to cannot be deleted, nor one that still has rules.
    assert actions == ["-D"] * 5 + ["-F"] * 4 + ["-X"] * 4
    assert changes[0][4:] == ["PREROUTING", *PORTALS]
    assert {call[4] for call in changes if call[3] == "-X"} == {
        "CNI-HOSTPORT-DNAT", "KUBE-POSTROUTING", "KUBE-SERVICES", "KUBE-SVC-NPX46M4PTMTKRN6Y",
    }


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:22 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw
301 25 0:4 net:[4026532999] /run/energy-node/containerd-state/netns/cni-1234 rw shared:140 \
- nsfs nsfs rw
302 25 0:51 / /run/energy-node/containerd-state/io.containerd.grpc.v1.cri/sandboxes/abc/shm \
rw,nosuid,nodev,noexec,relatime shared:141 - tmpfs shm rw,size=65536k
303 25 0:52 / /run/energy-node-other/x rw shared:142 - tmpfs tmpfs rw
304 22 0:53 / /work/base\\040dir/kubelet/pods/uid/volumes/kubernetes.io~projected/token \
rw,relatime shared:143 - tmpfs tmpfs rw
305 22 0:54 / /work/base\\040dir-2/y rw shared:144 - tmpfs tmpfs rw
306 25 0:55 / /run/energy-node rw shared:145 - tmpfs tmpfs rw
"""


def test_mountinfo_parsing_unescapes_and_matches_whole_path_components() -> None:
    mounts = parse_mounts_under(MOUNTINFO, [RUN_DIR, Path("/work/base dir")])
    assert mounts == [
        "/run/energy-node/containerd-state/netns/cni-1234",
        "/run/energy-node/containerd-state/io.containerd.grpc.v1.cri/sandboxes/abc/shm",
        "/work/base dir/kubelet/pods/uid/volumes/kubernetes.io~projected/token",
        "/run/energy-node",
    ]
    assert parse_mounts_under(MOUNTINFO, []) == []


def test_unmount_deepest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(
        node, "_mounts_under",
        lambda prefixes: parse_mounts_under(MOUNTINFO + MOUNTINFO, prefixes),
    )
    monkeypatch.setattr(
        node, "_run",
        lambda argv, check=True: calls.append(list(argv)) or subprocess.CompletedProcess(argv, 0),
    )
    unmount_under([RUN_DIR])
    points = [call[-1] for call in calls]
    # Each once (mounted twice or not), lazily, a parent never before what is below it.
    assert all(call[:2] == ["umount", "-l"] for call in calls)
    assert sorted(points) == sorted(set(points)) and len(points) == 3
    assert points[-1] == str(RUN_DIR)
