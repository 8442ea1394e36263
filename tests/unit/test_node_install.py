"""What the real node is installed from: the pause image archive, CoreDNS, the packages."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from energy_harness.localstack import node_install
from energy_harness.localstack.install import SystemDependency, cache_dir
from energy_harness.localstack.kube_install import KUBE_VERSION
from energy_harness.localstack.node_install import (
    CNI_PLUGINS,
    COREDNS_VERSION,
    NODE_SYSTEM_DEPENDENCIES,
    PAUSE_BUILD_DEPENDENCIES,
    PAUSE_IMAGE,
    render_coredns_install_argv,
    render_pause_build_argv,
    render_pause_image,
    write_oci_archive,
)

pytestmark = pytest.mark.unit

FAKE_PAUSE = b"\x7fELF not really pause"


def blob(files: dict[str, bytes], descriptor: dict[str, object]) -> bytes:
    digest = str(descriptor["digest"])
    assert digest.startswith("sha256:")
    content = files["blobs/sha256/" + digest.removeprefix("sha256:")]
    assert hashlib.sha256(content).hexdigest() == digest.removeprefix("sha256:")
    assert len(content) == descriptor["size"]
    return content


def image(files: dict[str, bytes]) -> tuple[dict, dict, dict, bytes]:
    """index entry, manifest, config and the uncompressed layer, each reached by digest."""
    index = json.loads(files["index.json"])
    assert index["schemaVersion"] == 2
    [entry] = index["manifests"]
    manifest = json.loads(blob(files, entry))
    [layer_descriptor] = manifest["layers"]
    config = json.loads(blob(files, manifest["config"]))
    layer = gzip.decompress(blob(files, layer_descriptor))
    return entry, manifest, config, layer


def test_every_blob_is_stored_under_its_digest() -> None:
    files = render_pause_image(FAKE_PAUSE, architecture="amd64")
    blobs = {name: data for name, data in files.items() if name.startswith("blobs/sha256/")}
    assert len(blobs) == 3  # layer, config, manifest
    for name, data in blobs.items():
        assert name.removeprefix("blobs/sha256/") == hashlib.sha256(data).hexdigest()
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}


def test_index_names_the_image_for_containerd_and_by_the_oci_tag() -> None:
    entry, manifest, _, _ = image(render_pause_image(FAKE_PAUSE, architecture="amd64"))
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert entry["annotations"] == {
        "io.containerd.image.name": PAUSE_IMAGE,
        "org.opencontainers.image.ref.name": "3.10",
    }
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    assert manifest["mediaType"] == entry["mediaType"]
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"


def test_tag_of_a_ref_with_a_registry_port() -> None:
    entry, *_ = image(render_pause_image(FAKE_PAUSE, "localhost:5000/pause:9.9", "arm64"))
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "9.9"
    assert entry["annotations"]["io.containerd.image.name"] == "localhost:5000/pause:9.9"


def test_config_runs_pause_as_nobody_from_the_single_layer() -> None:
    _, _, config, layer = image(render_pause_image(FAKE_PAUSE, architecture="amd64"))
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert config["config"]["User"] == "65535:65535"
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["rootfs"] == {
        "type": "layers",
        "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()],
    }
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        [member] = tar.getmembers()
        assert (member.name, member.mode, member.uid, member.gid) == ("pause", 0o755, 0, 0)
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == FAKE_PAUSE


def test_image_is_reproducible_and_follows_the_binary() -> None:
    first = render_pause_image(FAKE_PAUSE, architecture="amd64")
    assert render_pause_image(FAKE_PAUSE, architecture="amd64") == first
    assert render_pause_image(FAKE_PAUSE + b"!", architecture="amd64") != first


def test_archive_holds_the_layout(tmp_path: Path) -> None:
    files = render_pause_image(FAKE_PAUSE, architecture="amd64")
    archive = tmp_path / "pause.tar"
    write_oci_archive(files, archive)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert names[:2] == ["blobs", "blobs/sha256"]
        assert sorted(names[2:]) == sorted(files)
        for name, content in files.items():
            member = tar.extractfile(name)
            assert member is not None and member.read() == content


def test_oci_architecture_names() -> None:
    assert node_install.oci_architecture("x86_64") == "amd64"
    assert node_install.oci_architecture("aarch64") == "arm64"
    with pytest.raises(node_install.ServiceError, match="s390"):
        node_install.oci_architecture("s390")


def test_pause_is_compiled_like_upstream(tmp_path: Path) -> None:
    argv = render_pause_build_argv("/usr/bin/gcc", tmp_path / "pause.c", tmp_path / "pause")
    assert argv[0] == "/usr/bin/gcc"
    assert {"-Os", "-Wall", "-Werror", "-static", "-s"} <= set(argv)
    assert f"-DVERSION=v3.10-{KUBE_VERSION}" in argv
    assert argv[argv.index("-o") + 1] == str(tmp_path / "pause")
    assert argv[-1] == str(tmp_path / "pause.c")


def test_coredns_go_install_argv_pins_the_version() -> None:
    argv = render_coredns_install_argv(Path("/usr/local/go/bin/go"))
    assert argv[:3] == ["/usr/local/go/bin/go", "install", "-trimpath"]
    assert argv[-1] == f"github.com/coredns/coredns@{COREDNS_VERSION}"
    assert argv[argv.index("-ldflags") + 1] == "-s -w"


def test_built_pieces_are_cached_by_version() -> None:
    assert node_install.coredns_dir() == cache_dir() / f"coredns-{COREDNS_VERSION}"
    assert node_install.pause_dir() == cache_dir() / "pause-3.10"


def test_node_packages() -> None:
    packages = {dep.name: dep.debian_package for dep in NODE_SYSTEM_DEPENDENCIES}
    assert packages == {
        "containerd": "containerd",
        "containerd-shim-runc-v2": "containerd",
        "ctr": "containerd",
        "runc": "runc",
        "iptables": "iptables",
        "iptables-save": "iptables",
        "iptables-restore": "iptables",
        "conntrack": "conntrack",
        "nft": "nftables",
        **dict.fromkeys(CNI_PLUGINS, "containernetworking-plugins"),
    }
    assert set(CNI_PLUGINS) == {"bridge", "host-local", "loopback", "firewall", "portmap"}
    # The CNI plugins are not on PATH: Debian puts them in /usr/lib/cni.
    assert all(
        "/usr/lib/cni" in dep.directories
        for dep in NODE_SYSTEM_DEPENDENCIES
        if dep.debian_package == "containernetworking-plugins"
    )
    assert {dep.debian_package for dep in PAUSE_BUILD_DEPENDENCIES} == {"gcc", "libc6-dev"}


def test_dependency_in_directories_is_found_by_glob(tmp_path: Path) -> None:
    (tmp_path / "x86_64-linux-gnu").mkdir()
    (tmp_path / "x86_64-linux-gnu" / "libc.a").write_bytes(b"!<arch>\n")
    dep = SystemDependency("libc.a", "libc6-dev", directories=(str(tmp_path / "*-linux-gnu"),))
    assert dep.locate() == str(tmp_path / "x86_64-linux-gnu" / "libc.a")
    assert SystemDependency("bridge", "x", directories=(str(tmp_path),)).locate() is None
