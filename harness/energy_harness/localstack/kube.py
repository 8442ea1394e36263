"""A real Kubernetes control plane as local processes, for tests and `make demo`.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler (Kubernetes v1.33, built by
`kube_install`) plus kwok, which plays the kubelets of three fake Nodes: pods are scheduled,
get IPs and turn Running/Ready, but no container ever runs. Charts install with `helm`, the
operator reconciles real objects, garbage collection and CEL validation are the real ones.

Certificates come from the `openssl` CLI (the venv has no `cryptography` package): one CA,
a serving cert for the apiserver, and client certs whose subjects are the identities
kubeadm uses, so the bootstrap RBAC policy grants each component what it needs.

All command-line flags of all components are set in the "Flags" section below, and only there.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from energy_harness.localstack.install import require
from energy_harness.localstack.kube_install import KUBE_VERSION, KubeTools, ensure_kube_tools
from energy_harness.localstack.node import (
    NODE_IP,
    NODE_NAME,
    ClusterFacts,
    RealNode,
    render_local_storage,
)
from energy_harness.localstack.process import (
    ManagedProcess,
    ServiceError,
    free_port,
    http_get,
    wait_until,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

# kind's defaults, so that manifests and charts see the addresses they would see on kind.
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
SERVICE_ACCOUNT_ISSUER = f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}"

CLUSTER_NAME = "energy"
# kwok manages only Nodes carrying this annotation; other Nodes (none today) stay untouched.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE = "fake"


# ---------------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CertSpec:
    """One leaf certificate signed by the cluster CA."""

    name: str
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    server: bool = False
    client: bool = False
    # The signing CA: "ca" for everything, except the aggregation layer's own trust root.
    issuer: str = "ca"

    @property
    def subject(self) -> str:
        return "".join(f"/O={org}" for org in self.organizations) + f"/CN={self.common_name}"


def render_cert_specs() -> list[CertSpec]:
    """Every certificate the control plane needs; client subjects follow kubeadm."""
    return [
        CertSpec(
            name="apiserver",
            common_name="kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
            ),
            # NODE_IP: where it serves when a real node runs (pods reach it there).
            ips=("127.0.0.1", KUBERNETES_SERVICE_IP, NODE_IP),
            server=True,
        ),
        # O=system:masters is bound to cluster-admin and bypasses authorization entirely.
        CertSpec(
            name="admin",
            common_name="kubernetes-admin",
            organizations=("system:masters",),
            client=True,
        ),
        # These names are the subjects of the bootstrap ClusterRoleBindings
        # system:kube-controller-manager and system:kube-scheduler.
        CertSpec(
            name="controller-manager", common_name="system:kube-controller-manager", client=True
        ),
        CertSpec(name="scheduler", common_name="system:kube-scheduler", client=True),
        # The real node's identities, as kubeadm issues them. The Node authorizer and the
        # NodeRestriction admission plugin scope system:node:<name> to its own objects.
        CertSpec(
            name="kubelet-client",
            common_name=f"system:node:{NODE_NAME}",
            organizations=("system:nodes",),
            client=True,
        ),
        CertSpec(
            name="kubelet-server", common_name=NODE_NAME, dns_names=(NODE_NAME,),
            ips=(NODE_IP,), server=True,
        ),
        # Bound to system:node-proxier by the bootstrap policy.
        CertSpec(name="kube-proxy", common_name="system:kube-proxy", client=True),
        # The apiserver's identity towards kubelets (logs, exec, port-forward).
        CertSpec(
            name="apiserver-kubelet-client",
            common_name="kube-apiserver-kubelet-client",
            organizations=("system:masters",),
            client=True,
        ),
        # The apiserver's identity towards aggregated API servers (requestheader auth). The
        # controller-manager and scheduler read this CA through delegated authentication
        # and log errors every second without it, as aggregated servers would fail.
        CertSpec(
            name="front-proxy-client",
            common_name="front-proxy-client",
            client=True,
            issuer="front-proxy-ca",
        ),
    ]


# kubeadm's two trust roots: clients of the apiserver, and the front proxy.
CA_NAMES = ("ca", "front-proxy-ca")


# A config file of our own: the system's openssl.cnf would add its own default extensions.
_OPENSSL_CONFIG = "[req]\ndistinguished_name = dn\n[dn]\n"
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def render_openssl_ca_argv(openssl: str, pki: Path, name: str, days: int = 3650) -> list[str]:
    return [
        openssl, "req", "-config", str(pki / "openssl.cnf"), "-x509", *_EC_KEY,
        "-keyout", str(pki / f"{name}.key"), "-out", str(pki / f"{name}.crt"),
        "-days", str(days), "-subj", f"/CN={CLUSTER_NAME}-test-{name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
    ]


def render_openssl_cert_argv(openssl: str, pki: Path, spec: CertSpec, days: int = 365) -> list[str]:
    """`openssl req -x509 -CA`: key, request and CA signature in one call (OpenSSL 3)."""
    usages = [u for u, on in (("serverAuth", spec.server), ("clientAuth", spec.client)) if on]
    argv = [
        openssl, "req", "-config", str(pki / "openssl.cnf"), "-x509", *_EC_KEY,
        "-keyout", str(pki / f"{spec.name}.key"), "-out", str(pki / f"{spec.name}.crt"),
        "-days", str(days), "-subj", spec.subject,
        "-CA", str(pki / f"{spec.issuer}.crt"), "-CAkey", str(pki / f"{spec.issuer}.key"),
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext", f"extendedKeyUsage={','.join(usages)}",
    ]
    alt_names = [f"DNS:{name}" for name in spec.dns_names] + [f"IP:{ip}" for ip in spec.ips]
    if alt_names:
        argv += ["-addext", f"subjectAltName={','.join(alt_names)}"]
    return argv


def issue_certificates(
    pki: Path, ca_names: Sequence[str], specs: Sequence[CertSpec],
    extra: Sequence[Sequence[str]] = (),
) -> None:
    """`<name>.crt`/`<name>.key` in `pki` for each CA, then each leaf signed by its issuer,
    with the `openssl` CLI; once per directory. The control plane's PKI (`generate_pki`), and
    any service's test CA and server certificate (e.g. PostgreSQL's TLS mode). `extra`:
    further openssl commands (their first element is replaced by the openssl path)."""
    if (pki / ".complete").exists():
        return
    openssl = require("openssl")
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    (pki / "openssl.cnf").write_text(_OPENSSL_CONFIG)
    commands = [render_openssl_ca_argv(openssl, pki, name) for name in ca_names]
    commands += [render_openssl_cert_argv(openssl, pki, spec) for spec in specs]
    commands += [[openssl, *argv[1:]] for argv in extra]
    for argv in commands:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise ServiceError(f"openssl failed: {' '.join(argv)}\n{result.stderr[-2000:]}")
    (pki / ".complete").write_text("ok\n")


def generate_pki(pki: Path) -> None:
    """CA, leaf certificates and the service-account signing key pair, once per directory."""
    # ES256 service-account tokens: the apiserver signs with the private key, verifies with
    # the public one; the controller-manager signs legacy token Secrets with the same key.
    sa_key = [
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", str(pki / "sa.key")],
        ["openssl", "pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")],
    ]
    issue_certificates(pki, CA_NAMES, render_cert_specs(), extra=sa_key)


# ---------------------------------------------------------------------------------------------
# Layout, ports, kubeconfigs, fake nodes
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def allocate(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port(), free_port())


@dataclass(frozen=True)
class Layout:
    """Where each file of one control plane lives under its base directory."""

    base_dir: Path

    @property
    def pki(self) -> Path:
        return self.base_dir / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.base_dir / "etcd"

    @property
    def logs(self) -> Path:
        return self.base_dir / "logs"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.base_dir / "admin.kubeconfig"

    def kubeconfig(self, component: str) -> Path:
        return self.base_dir / f"{component}.kubeconfig"

    def cert(self, name: str) -> Path:
        return self.pki / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.pki / f"{name}.key"


def render_kubeconfig(
    server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str
) -> dict[str, Any]:
    """A self-contained kubeconfig (certs embedded), usable after copying it anywhere."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(cert_pem),
                    "client-key-data": b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
    }


def node_names(count: int) -> list[str]:
    """kind's naming: energy-worker, energy-worker2, energy-worker3, ..."""
    return [f"{CLUSTER_NAME}-worker{'' if i == 1 else i}" for i in range(1, count + 1)]


def render_fake_node(
    name: str, cpu: str = "32", memory: str = "128Gi", pods: str = "110"
) -> dict[str, Any]:
    """A Node as kind would register it, marked for kwok; kwok fills in conditions and IPs."""
    resources = {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "200Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/worker": "",
                "type": "kwok",
            },
        },
        # No kwok taint: charts must schedule here without tolerations, as on kind.
        "spec": {},
        "status": {
            "allocatable": dict(resources),
            "capacity": dict(resources),
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                # What kind's kubelets would report; some tools compare it with the server.
                "kubeletVersion": KUBE_VERSION,
                "kubeProxyVersion": KUBE_VERSION,
                "containerRuntimeVersion": "kwok",
                "kernelVersion": "",
                "osImage": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
            "phase": "Running",
        },
    }


def node_is_ready(node: Mapping[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


# ---------------------------------------------------------------------------------------------
# Flags: every flag of every component, and why it is set
# ---------------------------------------------------------------------------------------------

def render_etcd_args(layout: Layout, ports: Ports) -> list[str]:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        "--name=default",
        f"--data-dir={layout.etcd_data}",
        # Loopback only, plain HTTP: nothing but our apiserver talks to it (envtest does the same).
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        # Throwaway data: skipping fsync is what makes etcd usable on a busy shared disk.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def render_apiserver_args(layout: Layout, ports: Ports, real_node: bool = False) -> list[str]:
    """Close to controller-runtime envtest's defaults; differences are commented.

    With a real node it serves on NODE_IP instead of loopback: pods reach it there through
    the `kubernetes` Service, whose endpoint it then maintains itself (as on kind).
    """
    pki = layout.pki
    address = NODE_IP if real_node else "127.0.0.1"
    return [
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        # Serving: one private address, our own CA; clients authenticate with its certs.
        f"--advertise-address={address}",
        f"--bind-address={address}",
        f"--secure-port={ports.apiserver}",
        f"--tls-cert-file={layout.cert('apiserver')}",
        f"--tls-private-key-file={layout.key('apiserver')}",
        f"--client-ca-file={pki / 'ca.crt'}",
        # As kind/kubeadm (envtest uses RBAC alone): RBAC is what charts and the operator's
        # Roles are tested against; Node is inert without kubelets but keeps kind's semantics.
        "--authorization-mode=Node,RBAC",
        # envtest disables the ServiceAccount admission plugin because it runs no
        # controller-manager; we run one, so pods get their service-account token as on kind.
        "--enable-admission-plugins=NodeRestriction",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Without a real node its only address is loopback, which Endpoints reject (envtest
        # logs that error every few seconds), and no in-cluster client exists.
        f"--endpoint-reconciler-type={'lease' if real_node else 'none'}",
        # kwok never runs a container, so charts may ask for privileged ones there (as on
        # kind). A real node cannot start them on this kernel, and nothing of ours needs one:
        # the API server refuses them, so a chart that asks fails loudly at admission.
        f"--allow-privileged={'false' if real_node else 'true'}",
        f"--kubelet-client-certificate={layout.cert('apiserver-kubelet-client')}",
        f"--kubelet-client-key={layout.key('apiserver-kubelet-client')}",
        # kwok's "kubelet" serves a certificate of its own making; the real one ours.
        *([f"--kubelet-certificate-authority={pki / 'ca.crt'}"] if real_node else []),
        "--kubelet-preferred-address-types=InternalIP",
        # The aggregation layer, as kubeadm configures it (see the front-proxy certs).
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={layout.cert('front-proxy-client')}",
        f"--proxy-client-key-file={layout.key('front-proxy-client')}",
        "--profiling=false",
    ]


def render_controller_manager_args(layout: Layout, ports: Ports) -> list[str]:
    kubeconfig = layout.kubeconfig("controller-manager")
    pki = layout.pki
    return [
        f"--kubeconfig={kubeconfig}",
        # Its own /healthz is served over HTTPS; delegated authn/authz go to the apiserver.
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.controller_manager}",
        f"--cert-dir={layout.base_dir / 'controller-manager-certs'}",
        # A single instance per test session: leader election would only add a delay.
        "--leader-elect=false",
        # Each controller acts as its own service account, so RBAC is exercised as on kubeadm.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        # Lets CertificateSigningRequests be approved and signed, as on kind.
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--cluster-cidr={POD_CIDR}",
        # kwok hands out pod IPs itself; node CIDR allocation would be a second, unused scheme.
        "--allocate-node-cidrs=false",
        "--controllers=*,bootstrapsigner,tokencleaner",
        # Its default is under /usr/libexec, which it would create on the host.
        f"--flex-volume-plugin-dir={layout.base_dir / 'flexvolume'}",
        "--profiling=false",
    ]


def render_scheduler_args(layout: Layout, ports: Ports) -> list[str]:
    kubeconfig = layout.kubeconfig("scheduler")
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.scheduler}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def render_kwok_args(layout: Layout, ports: Ports) -> list[str]:
    return [
        f"--kubeconfig={layout.admin_kubeconfig}",
        # Only the Nodes we create for it; a real Node (none today) would be left alone.
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}",
        # Pod IPs from kind's pod range. They are fictitious: nothing listens there, so
        # tests must never connect to pod or Service IPs (Endpoints reject loopback pod IPs).
        "--cidr=10.244.0.1/16",
        # The "kubelet" address: loopback and kwok's own port, so whatever the apiserver
        # sends to a kubelet (logs, exec) reaches kwok and never leaves the machine.
        "--node-ip=127.0.0.1",
        f"--node-port={ports.kwok}",
        f"--server-address=127.0.0.1:{ports.kwok}",
        # Node heartbeats through Leases, as kubelets do; 40 s is the kubelet default.
        "--node-lease-duration-seconds=40",
        # (KWOK_WORKDIR in its environment keeps it from reading ~/.kwok/kwok.yaml.)
    ]


# ---------------------------------------------------------------------------------------------
# Readiness probes
# ---------------------------------------------------------------------------------------------

def _insecure_context() -> ssl.SSLContext:
    # The controller-manager and scheduler serve /healthz with certs they make up themselves.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# ---------------------------------------------------------------------------------------------
# The control plane
# ---------------------------------------------------------------------------------------------

@dataclass
class KubeControlPlane:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok with `nodes` fake Nodes.

    `start()` returns when the API server is ready, every Node is Ready and the
    controller-manager has created the `default` ServiceAccount. `stop()` stops everything
    in reverse order; `cleanup()` also removes `base_dir`.
    """

    base_dir: Path
    nodes: int = 3
    # A real kubelet node (node.py) beside the `nodes` kwok ones.
    real_node: bool = False
    start_timeout: float = 90.0
    tools: KubeTools | None = None
    ports: Ports = field(default_factory=Ports.allocate)
    processes: list[ManagedProcess] = field(default_factory=list, init=False)
    node: RealNode | None = field(default=None, init=False)
    start_seconds: float | None = field(default=None, init=False)
    _api_client: ApiClient | None = field(default=None, init=False, repr=False)

    @property
    def layout(self) -> Layout:
        return Layout(self.base_dir)

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (O=system:masters): for tests, kubectl, helm and the operator."""
        return self.layout.admin_kubeconfig

    @property
    def address(self) -> str:
        return NODE_IP if self.real_node else "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.ports.apiserver}"

    @property
    def node_names(self) -> list[str]:
        return node_names(self.nodes) + ([NODE_NAME] if self.real_node else [])

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        if self.tools is None:
            self.tools = ensure_kube_tools()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.layout.logs.mkdir(exist_ok=True)
        (self.base_dir / "kwok").mkdir(exist_ok=True)
        try:
            generate_pki(self.layout.pki)
            self._write_kubeconfigs()
            if self.real_node:
                self.node = RealNode(
                    self.base_dir / "node",
                    kubelet=self.tools.component("kubelet"),
                    kube_proxy=self.tools.component("kube-proxy"),
                )
                # Takes the machine's node lock and makes NODE_IP, which the apiserver binds.
                self.node.prepare()
            self._start_etcd()
            self._start_apiserver()
            # All three need a serving apiserver; started together they warm up in parallel.
            self._start(
                "kube-controller-manager",
                self.tools.component("kube-controller-manager"),
                render_controller_manager_args(self.layout, self.ports),
            )
            self._start(
                "kube-scheduler",
                self.tools.component("kube-scheduler"),
                render_scheduler_args(self.layout, self.ports),
            )
            # No kwok without kwok nodes. Beside a real node it is worse than idle: kwok
            # v0.7.0 watches every node Lease, and when the kubelet's lapses (a busy moment)
            # it looks the node up by name, without its annotation selector, and from then on
            # fakes the status of the real node's pods (seen: a Job's pod marked Succeeded
            # while its container was still failing to connect).
            kwok = self._start(
                "kwok",
                self.tools.kwok,
                render_kwok_args(self.layout, self.ports),
                env={"KWOK_WORKDIR": str(self.base_dir / "kwok")},
            ) if self.nodes else None
            self._create_nodes()
            self._wait_components_healthy(kwok)
            if self.node is not None:
                self.node.start(self._cluster_facts(), timeout=self.start_timeout)
                self.node.wait_healthy(timeout=self.start_timeout)
            self._wait_nodes_ready()
            if self.node is not None:
                self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
                    render_local_storage(self.node.layout.volumes)))
            self._wait_default_service_account()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started

    def stop(self) -> None:
        if self._api_client is not None:
            with contextlib.suppress(Exception):
                self._api_client.close()
            self._api_client = None
        # The real node first, while the apiserver still answers its last calls.
        if self.node is not None:
            self.node.stop()
        # Reverse start order; the API clients (kwok, scheduler, controller-manager) stop
        # together, then the apiserver, then its storage.
        clients = [p for p in self.processes if p.name not in {"etcd", "kube-apiserver"}]
        for proc in reversed(clients):
            proc.request_stop()
        for proc in reversed(clients):
            proc.wait_stopped(15)
        for name in ("kube-apiserver", "etcd"):
            for proc in self.processes:
                if proc.name == name:
                    proc.stop(timeout=30)
        self.processes.clear()
        if self.node is not None:
            # The API server served on the node's address: remove it only now.
            self.node.release()
            self.node = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> KubeControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients --------------------------------------------------------------------------

    @property
    def api_client(self) -> ApiClient:
        """A `kubernetes.client.ApiClient` for the admin user, created on first use."""
        if self._api_client is None:
            from kubernetes import config

            self._api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        return self._api_client

    def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's values, decoded."""
        from kubernetes import client

        data = client.CoreV1Api(self.api_client).read_namespaced_secret(name, namespace).data
        return {k: base64.b64decode(v).decode() for k, v in (data or {}).items()}

    def env(self) -> dict[str, str]:
        """Environment for tools run against this cluster; their state stays in base_dir."""
        helm_home = self.base_dir / "helm"
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            # Discovery cache of kubectl and helm (client-go), else ~/.kube/cache.
            "KUBECACHEDIR": str(self.base_dir / "kube-cache"),
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; with `check`, failure raises with its stderr."""
        assert self.tools is not None, "start() first"
        argv = [
            str(self.tools.kubectl),
            f"--kubeconfig={self.kubeconfig}",
            *args,
        ]
        return self._run_tool(argv, input, check, timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        assert self.tools is not None, "start() first"
        argv = [str(self.tools.helm), f"--kubeconfig={self.kubeconfig}", *args]
        return self._run_tool(argv, input, check, timeout)

    def _run_tool(
        self, argv: list[str], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, env=self.env()
        )
        if check and result.returncode != 0:
            raise ServiceError(
                f"{' '.join(argv[:1] + argv[2:])} exited {result.returncode}:\n"
                f"{result.stderr[-3000:]}"
            )
        return result

    # -- steps ----------------------------------------------------------------------------

    def _start(
        self,
        name: str,
        executable: Path,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> ManagedProcess:
        proc = ManagedProcess(
            name=name,
            argv=[str(executable), *args],
            log_path=self.layout.logs / f"{name}.log",
            env={**os.environ, **(env or {})},
        )
        proc.start()
        self.processes.append(proc)
        return proc

    def _write_kubeconfigs(self) -> None:
        layout = self.layout
        ca = layout.cert("ca").read_bytes()
        for component, cert, user in (
            ("admin", "admin", "kubernetes-admin"),
            ("controller-manager", "controller-manager", "system:kube-controller-manager"),
            ("scheduler", "scheduler", "system:kube-scheduler"),
            ("kubelet", "kubelet-client", f"system:node:{NODE_NAME}"),
            ("kube-proxy", "kube-proxy", "system:kube-proxy"),
        ):
            config = render_kubeconfig(
                self.server, ca, layout.cert(cert).read_bytes(), layout.key(cert).read_bytes(), user
            )
            path = layout.kubeconfig(component)
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            path.chmod(0o600)

    def _cluster_facts(self) -> ClusterFacts:
        layout = self.layout
        return ClusterFacts(
            server=self.server,
            ca_file=layout.cert("ca"),
            kubelet_kubeconfig=layout.kubeconfig("kubelet"),
            kubelet_cert=layout.cert("kubelet-server"),
            kubelet_key=layout.key("kubelet-server"),
            proxy_kubeconfig=layout.kubeconfig("kube-proxy"),
            # CoreDNS reads Services, EndpointSlices and Namespaces of the whole cluster; the
            # admin identity is simplest for a test harness that runs it as a local process.
            coredns_kubeconfig=layout.admin_kubeconfig,
            # The NetworkPolicy enforcer watches Pods, Namespaces and NetworkPolicies of the
            # whole cluster; the same reasoning.
            netpol_kubeconfig=layout.admin_kubeconfig,
            cluster_domain=CLUSTER_DOMAIN,
            pod_cidr=POD_CIDR,
        )

    def _start_etcd(self) -> None:
        assert self.tools is not None
        etcd = self._start(
            "etcd", self.tools.component("etcd"), render_etcd_args(self.layout, self.ports)
        )

        def healthy() -> bool:
            status, body = http_get(self.ports.etcd_client, "/health")
            return status == 200 and json.loads(body).get("health") == "true"

        wait_until(
            healthy, timeout=self.start_timeout, what="waiting for etcd /health", process=etcd
        )

    def _admin_context(self) -> ssl.SSLContext:
        layout = self.layout
        context = ssl.create_default_context(cafile=str(layout.cert("ca")))
        context.load_cert_chain(str(layout.cert("admin")), str(layout.key("admin")))
        return context

    def _start_apiserver(self) -> None:
        assert self.tools is not None
        apiserver = self._start(
            "kube-apiserver",
            self.tools.component("kube-apiserver"),
            render_apiserver_args(self.layout, self.ports, self.real_node),
        )
        context = self._admin_context()

        def ready() -> bool:
            status, body = http_get(
                self.ports.apiserver, "/readyz", host=self.address, context=context
            )
            return status == 200 and body.strip() == "ok"

        wait_until(
            ready, timeout=self.start_timeout, what="waiting for kube-apiserver /readyz",
            process=apiserver, interval=0.5,
        )

    def _create_nodes(self) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.api_client)
        for name in self.node_names:
            try:
                core.create_node(render_fake_node(name))
            except ApiException as exc:
                if exc.status != 409:  # already there: a restart on the same data dir
                    raise

    def _process(self, name: str) -> ManagedProcess:
        return next(p for p in self.processes if p.name == name)

    def _wait_components_healthy(self, kwok: ManagedProcess | None) -> None:
        insecure = _insecure_context()
        for name, port in (
            ("kube-controller-manager", self.ports.controller_manager),
            ("kube-scheduler", self.ports.scheduler),
        ):

            def healthy(port: int = port) -> bool:
                status, body = http_get(port, "/healthz", context=insecure)
                return status == 200 and body.strip() == "ok"

            wait_until(
                healthy, timeout=self.start_timeout, what=f"waiting for {name} /healthz",
                process=self._process(name),
            )
        if kwok is not None:
            wait_until(
                lambda: http_get(self.ports.kwok, "/healthz")[0] == 200,
                timeout=self.start_timeout,
                what="waiting for kwok /healthz",
                process=kwok,
            )

    def _wait_nodes_ready(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api_client)
        wanted = set(self.node_names)

        def all_ready() -> bool:
            if self.node is not None:
                self.node.raise_if_exited()
            nodes = self.api_client.sanitize_for_serialization(core.list_node().items)
            ready = {n["metadata"]["name"] for n in nodes if node_is_ready(n)}
            return wanted <= ready

        wait_until(
            all_ready, timeout=self.start_timeout, what=f"waiting for nodes {sorted(wanted)} Ready",
            process=self._process("kwok") if self.nodes else None,
        )

    def _wait_default_service_account(self) -> None:
        """Pods in `default` are admitted only once the controller-manager made this account."""
        from kubernetes import client

        core = client.CoreV1Api(self.api_client)
        wait_until(
            lambda: core.read_namespaced_service_account("default", "default") is not None,
            timeout=self.start_timeout,
            what="waiting for the controller-manager to create ServiceAccount default/default",
            process=self._process("kube-controller-manager"),
        )
