"""The Kafka UI's Secrets where Helm's `lookup` answers (a real API server): the kafka-ui chart
on its own keeps the login password it generated across upgrades, and an upgrade of the kafka
chart leaves the kafka-ui keys a user added to its own users Secret (the optional user exists
while they are there; Helm's three-way merge keeps keys it never rendered)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from energy_harness.localstack.kube import KubeControlPlane

pytestmark = pytest.mark.cluster

RELEASE = "energy"  # the release tests/cluster/conftest.py:release_namespace uninstalls

CHARTS = Path(__file__).resolve().parents[2] / "charts"


def test_the_ui_charts_login_is_generated_once(
    kube: KubeControlPlane, release_namespace: str
) -> None:
    # No --wait: kwok runs no container, and only the Secret matters here.
    kube.helm("install", RELEASE, str(CHARTS / "kafka-ui"), "--namespace", release_namespace)
    made = kube.secret_data(release_namespace, "energy-kafka-ui-login")
    assert made["username"] == "admin" and len(made["password"]) == 24
    kube.helm("upgrade", RELEASE, str(CHARTS / "kafka-ui"), "--namespace", release_namespace)
    assert kube.secret_data(release_namespace, "energy-kafka-ui-login") == made


def test_the_kafka_charts_own_secret_keeps_the_ui_user_added_to_it(
    kube: KubeControlPlane, release_namespace: str
) -> None:
    args = ("--namespace", release_namespace, "--set", "persistence.enabled=false",
            "--set", "auth.tls.enabled=true", "--set", "auth.sasl.enabled=true")
    kube.helm("install", RELEASE, str(CHARTS / "kafka"), *args)
    made = kube.secret_data(release_namespace, "energy-kafka-sasl")
    assert sorted(made) == sorted(f"{u}-{k}" for u in ("bridge", "ingest", "operator")
                                  for k in ("username", "password"))
    patch = {"stringData": {"kafka-ui-username": "kafka-ui", "kafka-ui-password": "ui-pw-0123"}}
    kube.kubectl("patch", "secret", "energy-kafka-sasl", "--namespace", release_namespace,
                 "--type", "merge", "-p", json.dumps(patch))
    kube.helm("upgrade", RELEASE, str(CHARTS / "kafka"), *args)
    kept = kube.secret_data(release_namespace, "energy-kafka-sasl")
    assert kept == {**made, **patch["stringData"]}
