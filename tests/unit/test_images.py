"""The image build's pure parts: the slim rules of the locally made base, the image table."""

from __future__ import annotations

from pathlib import Path

import pytest
from energy_harness.images import HERE, IMAGES, REPO, slim

pytestmark = pytest.mark.unit


def test_slim_drops_docs_and_caches_but_keeps_licences(tmp_path: Path) -> None:
    keep = ["usr/share/doc/libc6/copyright", "usr/share/locale/locale.alias", "usr/bin/bash"]
    drop = [
        "usr/share/doc/libc6/changelog.gz", "usr/share/man/man1/ls.1.gz",
        "usr/share/locale/de/LC_MESSAGES/dpkg.mo", "var/lib/apt/lists/deb_dists_bookworm",
        "var/cache/apt/archives/x.deb", "var/cache/apt/pkgcache.bin",
    ]  # fmt: skip
    for name in [*keep, *drop, "etc/dpkg/dpkg.cfg.d/.keep", "etc/apt/apt.conf.d/.keep"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    slim(tmp_path)
    assert [n for n in keep if not (tmp_path / n).exists()] == []
    assert [n for n in drop if (tmp_path / n).exists()] == []
    excludes = (tmp_path / "etc/dpkg/dpkg.cfg.d/docker-slim").read_text()
    assert "path-exclude /usr/share/doc/*" in excludes
    assert "path-include /usr/share/doc/*/copyright" in excludes
    assert "archives/*.deb" in (tmp_path / "etc/apt/apt.conf.d/docker-clean").read_text()


def test_every_image_has_its_dockerfile_in_the_repository() -> None:
    """Without assembling the contexts (they copy the cached jars): the sources exist."""
    assert set(IMAGES) == {"worker", "kafka", "postgres", "hivemq"}
    assert (REPO / IMAGES["worker"].dockerfile).is_file()
    for name in ("kafka", "postgres", "hivemq"):
        assert (HERE / name / "Dockerfile").is_file(), name
