"""The test control plane's pure parts: build flags, certificates, kubeconfigs, nodes, flags."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest
from energy_harness.localstack import kube_install
from energy_harness.localstack.kube import (
    KUBERNETES_SERVICE_IP,
    KWOK_NODE_ANNOTATION,
    KWOK_NODE_ANNOTATION_VALUE,
    Layout,
    Ports,
    generate_pki,
    node_is_ready,
    node_names,
    render_apiserver_args,
    render_cert_specs,
    render_controller_manager_args,
    render_etcd_args,
    render_fake_node,
    render_kubeconfig,
    render_kwok_args,
    render_openssl_cert_argv,
    render_scheduler_args,
)
from energy_harness.localstack.kube_install import (
    ETCD_VERSION,
    KUBE_VERSION,
    parse_go_version,
    render_go_install_argv,
    render_version_ldflags,
    render_wrapper_build_argv,
)

pytestmark = pytest.mark.unit

PORTS = Ports(
    etcd_client=2379, etcd_peer=2380, apiserver=6443, controller_manager=10257,
    scheduler=10259, kwok=10247,
)
LAYOUT = Layout(Path("/tmp/plane"))


def flag_names(args: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in args]


def flag(args: list[str], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} given {len(values)} times in {args}"
    return values[0]


def test_version_ldflags_set_both_version_packages() -> None:
    flags = render_version_ldflags("v1.33.13")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.33.13" in flags
        assert f"-X {package}.gitMajor=1" in flags
        assert f"-X {package}.gitMinor=33" in flags


@pytest.mark.parametrize("bad", ["1.33.13", "v1.33", "v1.33.13-rc.0", ""])
def test_version_ldflags_reject_non_release_versions(bad: str) -> None:
    with pytest.raises(ValueError):
        render_version_ldflags(bad)


def test_build_argv_is_stripped_and_trimmed() -> None:
    argv = render_wrapper_build_argv(
        Path("/usr/local/go/bin/go"), Path("/c/bin/kube"), render_version_ldflags("v1.33.13"))
    assert argv[:3] == ["/usr/local/go/bin/go", "build", "-trimpath"]
    ldflags = argv[argv.index("-ldflags") + 1]
    assert ldflags.startswith("-s -w ")
    assert "k8s.io/component-base/version.gitVersion=v1.33.13" in ldflags
    assert argv[-3:] == ["-o", "/c/bin/kube", "."]


def test_go_install_argv_pins_the_version() -> None:
    argv = render_go_install_argv(Path("go"), "sigs.k8s.io/kwok/cmd/kwok", "v0.7.0", [])
    assert argv[-1] == "sigs.k8s.io/kwok/cmd/kwok@v0.7.0"
    assert "-trimpath" in argv
    assert "-tags" not in argv


def test_go_install_argv_passes_build_tags_as_one_list() -> None:
    argv = render_go_install_argv(
        Path("go"), "github.com/influxdata/telegraf/cmd/telegraf", "v1.37.2", [],
        ("custom", "inputs.mqtt_consumer", "outputs.kafka"),
    )
    assert argv[argv.index("-tags") + 1] == "custom,inputs.mqtt_consumer,outputs.kafka"
    assert argv[-1] == "github.com/influxdata/telegraf/cmd/telegraf@v1.37.2"


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("go version go1.26.8 linux/amd64", (1, 26)),
        ("go version go1.24rc1 linux/amd64", (1, 24)),
        ("bash: go: command not found", None),
    ],
)
def test_parse_go_version(output: str, expected: tuple[int, int] | None) -> None:
    assert parse_go_version(output) == expected


def test_build_env_is_static_and_never_rewrites_go_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOFLAGS", "-mod=mod")
    env = kube_install.go_build_env(Path("/opt/go/bin/go"), {"GOBIN": "/x"})
    assert env["CGO_ENABLED"] == "0"
    assert "-mod=readonly" in env["GOFLAGS"]
    assert env["PATH"].startswith("/opt/go/bin")
    assert env["GOBIN"] == "/x"


def test_wrapper_go_mod_matches_the_pinned_versions() -> None:
    go_mod = (kube_install.wrapper_source_dir() / "go.mod").read_text()
    assert re.search(rf"^\s*k8s\.io/kubernetes {re.escape(KUBE_VERSION)}$", go_mod, re.M)
    assert re.search(rf"^\s*go\.etcd\.io/etcd/server/v3 {re.escape(ETCD_VERSION)}$", go_mod, re.M)
    staging = "v0." + KUBE_VERSION.split(".", 1)[1]
    replaces = re.findall(r"^\s*(k8s\.io/\S+) => (k8s\.io/\S+) (\S+)$", go_mod, re.M)
    assert len(replaces) > 20
    for old, new, version in replaces:
        assert old == new
        assert version == staging, f"{old} pinned to {version}, expected {staging}"


def test_wrapper_source_hash_changes_with_sources(tmp_path: Path) -> None:
    for name in ("go.mod", "go.sum", "main.go"):
        (tmp_path / name).write_text(name)
    before = kube_install.wrapper_source_hash(tmp_path)
    (tmp_path / "main.go").write_text("package main // changed")
    assert kube_install.wrapper_source_hash(tmp_path) != before


def test_cert_specs_cover_every_identity() -> None:
    specs = {spec.name: spec for spec in render_cert_specs()}
    assert specs["admin"].subject == "/O=system:masters/CN=kubernetes-admin"
    assert specs["controller-manager"].subject == "/CN=system:kube-controller-manager"
    assert specs["scheduler"].subject == "/CN=system:kube-scheduler"
    apiserver = specs["apiserver"]
    assert apiserver.server and not apiserver.client
    assert {"127.0.0.1", KUBERNETES_SERVICE_IP} <= set(apiserver.ips)
    assert "kubernetes.default.svc.cluster.local" in apiserver.dns_names


def test_openssl_argv_for_server_cert_has_sans_and_usage() -> None:
    spec = next(s for s in render_cert_specs() if s.name == "apiserver")
    argv = render_openssl_cert_argv("openssl", Path("/p"), spec)
    extensions = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-addext"]
    assert "extendedKeyUsage=serverAuth" in extensions
    san = next(e for e in extensions if e.startswith("subjectAltName="))
    assert "IP:127.0.0.1" in san and f"IP:{KUBERNETES_SERVICE_IP}" in san
    assert argv[argv.index("-CA") + 1] == "/p/ca.crt"
    front_proxy = next(s for s in render_cert_specs() if s.name == "front-proxy-client")
    argv = render_openssl_cert_argv("openssl", Path("/p"), front_proxy)
    assert argv[argv.index("-CA") + 1] == "/p/front-proxy-ca.crt"


def test_generated_pki_verifies_against_its_ca(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    generate_pki(pki)
    for spec in render_cert_specs():
        result = subprocess.run(
            ["openssl", "verify", "-CAfile", str(pki / f"{spec.issuer}.crt"),
             str(pki / f"{spec.name}.crt")],
            capture_output=True, text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert (pki / "sa.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    # Idempotent: a second call keeps the same CA instead of invalidating issued certs.
    ca = (pki / "ca.crt").read_bytes()
    generate_pki(pki)
    assert (pki / "ca.crt").read_bytes() == ca


def test_kubeconfig_embeds_credentials() -> None:
    config = render_kubeconfig("https://127.0.0.1:6443", b"CA", b"CERT", b"KEY", "kubernetes-admin")
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(user["client-certificate-data"]) == b"CERT"
    assert base64.b64decode(user["client-key-data"]) == b"KEY"
    context = config["contexts"][0]
    assert config["current-context"] == context["name"]
    assert context["context"]["user"] == "kubernetes-admin"


def test_node_names_follow_kind() -> None:
    assert node_names(3) == ["energy-worker", "energy-worker2", "energy-worker3"]


def test_fake_node_is_managed_by_kwok_and_labelled_like_kind() -> None:
    node = render_fake_node("energy-worker2")
    meta = node["metadata"]
    assert meta["annotations"][KWOK_NODE_ANNOTATION] == KWOK_NODE_ANNOTATION_VALUE
    assert meta["labels"]["kubernetes.io/hostname"] == "energy-worker2"
    assert meta["labels"]["kubernetes.io/os"] == "linux"
    assert meta["labels"]["kubernetes.io/arch"] == "amd64"
    assert "node-role.kubernetes.io/worker" in meta["labels"]
    assert not node["spec"].get("taints")
    assert node["status"]["allocatable"]["pods"] == "110"
    # kwok's selector flag must select exactly these nodes.
    selector = flag(render_kwok_args(LAYOUT, PORTS), "--manage-nodes-with-annotation-selector")
    assert selector == f"{KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}"


def test_node_is_ready() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    not_ready = {"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    assert node_is_ready(ready)
    assert not node_is_ready(not_ready)
    assert not node_is_ready({"status": {}})


@pytest.mark.parametrize(
    "render",
    [
        render_etcd_args,
        render_apiserver_args,
        render_controller_manager_args,
        render_scheduler_args,
        render_kwok_args,
    ],
)
def test_no_flag_is_given_twice(render) -> None:
    names = flag_names(render(LAYOUT, PORTS))
    assert len(names) == len(set(names))


def test_components_listen_on_loopback_only() -> None:
    etcd = render_etcd_args(LAYOUT, PORTS)
    assert flag(etcd, "--listen-client-urls") == "http://127.0.0.1:2379"
    assert flag(etcd, "--initial-cluster") == "default=http://127.0.0.1:2380"
    for args in (
        render_apiserver_args(LAYOUT, PORTS),
        render_controller_manager_args(LAYOUT, PORTS),
        render_scheduler_args(LAYOUT, PORTS),
    ):
        assert flag(args, "--bind-address") == "127.0.0.1"
    assert flag(render_kwok_args(LAYOUT, PORTS), "--server-address") == "127.0.0.1:10247"
    assert flag(render_kwok_args(LAYOUT, PORTS), "--node-ip") == "127.0.0.1"


def test_apiserver_flags() -> None:
    args = render_apiserver_args(LAYOUT, PORTS)
    assert flag(args, "--etcd-servers") == "http://127.0.0.1:2379"
    assert flag(args, "--secure-port") == "6443"
    assert "RBAC" in flag(args, "--authorization-mode").split(",")
    assert flag(args, "--client-ca-file") == "/tmp/plane/pki/ca.crt"
    assert flag(args, "--service-account-signing-key-file") == "/tmp/plane/pki/sa.key"


def test_controllers_run_without_leader_election() -> None:
    for render in (render_controller_manager_args, render_scheduler_args):
        args = render(LAYOUT, PORTS)
        assert flag(args, "--leader-elect") == "false"
        assert flag(args, "--kubeconfig").endswith(".kubeconfig")
    manager = render_controller_manager_args(LAYOUT, PORTS)
    assert flag(manager, "--secure-port") == "10257"
    assert flag(render_scheduler_args(LAYOUT, PORTS), "--secure-port") == "10259"
