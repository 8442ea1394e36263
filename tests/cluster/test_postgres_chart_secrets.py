"""charts/postgres's one Secret per role against a real API server, where `lookup` answers:
an install next to the single Secret of earlier chart versions (kept on uninstall with
persistence) takes its passwords over, so a data directory initialised with them still
lets every role in; an upgrade keeps the generated ones."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from energy_harness.localstack.kube import KubeControlPlane
from kubernetes import client

pytestmark = pytest.mark.cluster

CHART = Path(__file__).resolve().parents[2] / "charts" / "postgres"
RELEASE = "energy"
# What the single Secret <fullname> of earlier versions held (and still holds on clusters
# that installed them: it carried helm.sh/resource-policy: keep).
LEGACY = {"postgres-password": "legacy-superuser-pw", "password": "legacy-app-pw",
          "reader-password": "legacy-reader-pw"}


@pytest.fixture
def namespace(kube: KubeControlPlane) -> Iterator[str]:
    name = f"pg-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube.helm("uninstall", RELEASE, "--namespace", name, "--wait", check=False)
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def secret(kube: KubeControlPlane, namespace: str, name: str) -> dict[str, str]:
    data = client.CoreV1Api(kube.api_client).read_namespaced_secret(name, namespace).data
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_the_split_secrets_take_over_the_single_secrets_passwords_and_keep_them(
    kube: KubeControlPlane, namespace: str
) -> None:
    kube.kubectl("create", "secret", "generic", "energy-postgres", "--namespace", namespace,
                 *(f"--from-literal={k}={v}" for k, v in LEGACY.items()))
    # No --wait: kwok runs no container, and only the Secrets matter here.
    kube.helm("install", RELEASE, str(CHART), "--namespace", namespace,
              "--set", "persistence.enabled=false")
    host = f"energy-postgres.{namespace}.svc:5432/energy"
    installed = {role: secret(kube, namespace, f"energy-postgres-{role}")
                 for role in ("superuser", "app", "reader")}
    assert installed == {
        "superuser": {"username": "postgres", "password": "legacy-superuser-pw"},
        "app": {"username": "energy", "password": "legacy-app-pw",
                "DATABASE_URL": f"postgresql://energy:legacy-app-pw@{host}"},
        "reader": {"username": "grafana_reader", "password": "legacy-reader-pw",
                   "DATABASE_URL": f"postgresql://grafana_reader:legacy-reader-pw@{host}"},
    }
    # The old Secret is gone now; an upgrade keeps what the new ones hold.
    kube.kubectl("delete", "secret", "energy-postgres", "--namespace", namespace)
    kube.helm("upgrade", RELEASE, str(CHART), "--namespace", namespace,
              "--set", "persistence.enabled=false")
    assert {role: secret(kube, namespace, f"energy-postgres-{role}")
            for role in ("superuser", "app", "reader")} == installed
