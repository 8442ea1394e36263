"""charts/postgres's one Secret per role against a real API server, where `lookup` answers:
an install next to the single Secret of earlier chart versions (kept on uninstall with
persistence) takes its passwords over, so a data directory initialised with them still
lets every role in; an upgrade keeps the generated ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from energy_harness.localstack.kube import KubeControlPlane

pytestmark = pytest.mark.cluster

RELEASE = "energy"  # the release tests/cluster/conftest.py:release_namespace uninstalls

CHART = Path(__file__).resolve().parents[2] / "charts" / "postgres"
# What the single Secret <fullname> of earlier versions held (and still holds on clusters
# that installed them: it carried helm.sh/resource-policy: keep).
LEGACY = {"postgres-password": "legacy-superuser-pw", "password": "legacy-app-pw",
          "reader-password": "legacy-reader-pw"}


def test_the_split_secrets_take_over_the_single_secrets_passwords_and_keep_them(
    kube: KubeControlPlane, release_namespace: str
) -> None:
    kube.kubectl("create", "secret", "generic", "energy-postgres", "--namespace", release_namespace,
                 *(f"--from-literal={k}={v}" for k, v in LEGACY.items()))
    # No --wait: kwok runs no container, and only the Secrets matter here.
    kube.helm("install", RELEASE, str(CHART), "--namespace", release_namespace,
              "--set", "persistence.enabled=false")
    host = f"energy-postgres.{release_namespace}.svc:5432/energy"
    installed = {role: kube.secret_data(release_namespace, f"energy-postgres-{role}")
                 for role in ("superuser", "app", "reader")}
    assert installed == {
        "superuser": {"username": "postgres", "password": "legacy-superuser-pw"},
        "app": {"username": "energy", "password": "legacy-app-pw",
                "DATABASE_URL": f"postgresql://energy:legacy-app-pw@{host}"},
        "reader": {"username": "grafana_reader", "password": "legacy-reader-pw",
                   "DATABASE_URL": f"postgresql://grafana_reader:legacy-reader-pw@{host}"},
    }
    # The old Secret is gone now; an upgrade keeps what the new ones hold.
    kube.kubectl("delete", "secret", "energy-postgres", "--namespace", release_namespace)
    kube.helm("upgrade", RELEASE, str(CHART), "--namespace", release_namespace,
              "--set", "persistence.enabled=false")
    assert {role: kube.secret_data(release_namespace, f"energy-postgres-{role}")
            for role in ("superuser", "app", "reader")} == installed
