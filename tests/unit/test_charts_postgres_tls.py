"""charts/postgres with TLS and one Secret per role, and everything that connects to it
(Grafana's datasource, the umbrella's EnergyPipeline), as `helm template` renders them.

Marked `cluster` like test_charts_render (the helm binary comes from the cached Kubernetes
tools build; no API server is started here).
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from unit.test_charts_render import (  # noqa: F401 - its fixtures and helpers
    by_kind,
    default_docs,
    grafana_provisioning,
    helm,
    platform_chart,
    render,
)

pytestmark = pytest.mark.cluster

TLS_VALUES = {
    "postgres": {"tls": {"enabled": True}},
    "grafana": {"database": {"sslmode": "verify-full"}},
}


@pytest.fixture(scope="module")
def tls_docs(helm: Path, platform_chart: Path,  # noqa: F811
             tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(helm, platform_chart, TLS_VALUES, tmp_path_factory.mktemp("tls"))


def template_error(helm: Path, chart: Path, values: dict[str, Any], tmp: Path) -> str:  # noqa: F811
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    done = subprocess.run([str(helm), "template", "energy", str(chart), "--namespace", "energy",
                           "--values", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, "rendered, but should have been refused"
    return done.stderr


def postgres_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    sts = by_kind(docs, "StatefulSet")["energy-postgres"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    return container


def server_args(docs: list[dict[str, Any]]) -> dict[str, str]:
    args = postgres_container(docs)["args"]
    assert args[::2] == ["-c"] * (len(args) // 2)
    return dict(a.split("=", 1) for a in args[1::2])


def secret_data(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode()
            for k, v in by_kind(docs, "Secret")[name]["data"].items()}


def test_one_secret_per_role_and_each_consumer_reads_its_own(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    """The postgres chart's own role Secrets (`auth.createSecrets`, Helm's `lookup`); the
    platform chart's hook makes the same layout by default (test_charts_render)."""
    docs = render(helm, platform_chart, {"postgres": {"auth": {"createSecrets": True}}},
                  tmp_path)
    secrets = {name: secret_data(docs, name) for name in by_kind(docs, "Secret")
               if name.startswith("energy-postgres")}
    assert set(secrets) == {"energy-postgres-superuser", "energy-postgres-app",
                            "energy-postgres-reader"}
    superuser, app, reader = (secrets[f"energy-postgres-{r}"] for r in ("superuser", "app",
                                                                        "reader"))
    assert set(superuser) == {"username", "password"} and superuser["username"] == "postgres"
    host = "energy-postgres.energy.svc:5432/energy"
    assert app["DATABASE_URL"] == f"postgresql://energy:{app['password']}@{host}"
    assert reader["DATABASE_URL"] == f"postgresql://grafana_reader:{reader['password']}@{host}"
    assert len({superuser["password"], app["password"], reader["password"]}) == 3
    # The server gets each role's password from that role's Secret.
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef")
           for e in postgres_container(docs)["env"]}
    assert (env["POSTGRES_PASSWORD"], env["APP_PASSWORD"], env["READER_PASSWORD"]) == (
        {"name": "energy-postgres-superuser", "key": "password"},
        {"name": "energy-postgres-app", "key": "password"},
        {"name": "energy-postgres-reader", "key": "password"},
    )
    # Grafana: the reader's Secret only. The example pipeline: the app's.
    grafana = by_kind(docs, "Deployment")["energy-grafana"]
    genv = {e["name"]: e for e in grafana["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert genv["ENERGY_DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "energy-postgres-reader", "key": "password"}
    spec = by_kind(docs, "EnergyPipeline")["energy"]["spec"]
    assert spec["database"] == {"urlSecret": {"name": "energy-postgres-app",
                                              "key": "DATABASE_URL"},
                                "caSecret": {"name": "energy-postgres-tls", "key": "ca.crt"}}
    # Nothing refers to the single Secret of before.
    text = yaml.safe_dump_all(docs)
    assert "name: energy-postgres\n" not in text.replace("name: energy-postgres\n  namespace", "")


HOOK = {"helm.sh/hook": "pre-install,pre-upgrade",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded"}


def test_tls_is_on_by_default_with_the_certificate_a_hook_job_makes(
    default_docs: list[dict[str, Any]],  # noqa: F811
) -> None:
    assert server_args(default_docs)["ssl"] == "on"
    assert grafana_provisioning(default_docs)["datasources"][0]["jsonData"]["sslmode"] == (
        "verify-full")
    assert by_kind(default_docs, "EnergyPipeline")["energy"]["spec"]["database"][
        "caSecret"] == {"name": "energy-postgres-tls", "key": "ca.crt"}
    # No certificate is rendered (it would change with each render): a hook Job makes it.
    assert "energy-postgres-tls" not in by_kind(default_docs, "Secret")
    job = by_kind(default_docs, "Job")["energy-platform-secrets"]
    assert {k: job["metadata"]["annotations"][k] for k in HOOK} == HOOK
    assert job["metadata"]["annotations"]["helm.sh/hook-weight"] == "-10"
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "energy-platform-secrets"
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/energy-pipeline/energy-pipeline:0.1.0"
    assert container["args"][:6] == [
        "platform-secrets", "--namespace=energy", "--instance=energy",
        "--ca-secret=energy-platform-ca", "--lifetime-days=825",
        "--certificate=energy-postgres-tls=energy-postgres.energy.svc,"
        "energy-postgres.energy.svc.cluster.local,energy-postgres.energy,energy-postgres"]
    # Then Kafka's and HiveMQ's certificates, Kafka's users (test_charts_render), the role
    # Secrets and Grafana's admin (test_charts_render) and the MQTT users
    # (test_charts_mqtt_tls).
    assert [a.split("=")[0] for a in container["args"][6:]] == [
        "--certificate", "--certificate", "--passwords", "--login", "--login", "--login",
        "--login", "--mqtt-users"]
    # Its ServiceAccount, Role and RoleBinding exist before it (lower weight) and only for it.
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        meta = by_kind(default_docs, kind)["energy-platform-secrets"]["metadata"]
        assert meta["annotations"] == {**HOOK, "helm.sh/hook-weight": "-20"}, kind
    role = by_kind(default_docs, "Role")["energy-platform-secrets"]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"],
         "resourceNames": ["energy-platform-ca", "energy-postgres-tls", "energy-kafka-tls",
                           "energy-hivemq-tls", "energy-kafka-sasl",
                           "energy-postgres-superuser", "energy-postgres-app",
                           "energy-postgres-reader", "energy-grafana-admin",
                           "energy-mqtt-users"],
         "verbs": ["get", "update"]},
    ]
    binding = by_kind(default_docs, "RoleBinding")["energy-platform-secrets"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "energy-platform-secrets",
                                    "namespace": "energy"}]


def test_tls_off_knowingly_renders_plain_tcp_and_no_postgres_certificate(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    docs = render(helm, platform_chart, {"postgres": {"tls": {"enabled": False}},
                                         "grafana": {"database": {"sslmode": "disable"}}},
                  tmp_path)
    assert not {"ssl", "hba_file", "ssl_cert_file"} & set(server_args(docs))
    assert "energy-postgres-hba" not in by_kind(docs, "ConfigMap")
    assert grafana_provisioning(docs)["datasources"][0]["jsonData"]["sslmode"] == "disable"
    assert "caSecret" not in by_kind(docs, "EnergyPipeline")["energy"]["spec"]["database"]
    args = by_kind(docs, "Job")["energy-platform-secrets"]["spec"]["template"]["spec"][
        "containers"][0]["args"]
    # No certificate; the role Secrets still (they are not TLS).
    assert [a for a in args if "postgres" in a] == [
        a for a in args if a.startswith("--login=energy-postgres-")]


def test_a_certificate_of_your_own_is_not_made_by_the_hook(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    error = template_error(helm, platform_chart,
                           {"postgres": {"tls": {"existingSecret": "pg-cert"}}}, tmp_path)
    assert ('postgres.tls.existingSecret is "pg-cert": set grafana.database.caSecret to it '
            "too") in error
    docs = render(helm, platform_chart, {"postgres": {"tls": {"existingSecret": "pg-cert"}},
                                         "grafana": {"database": {"caSecret": "pg-cert"}}},
                  tmp_path)
    args = by_kind(docs, "Job")["energy-platform-secrets"]["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert not [a for a in args if "postgres-tls" in a or "pg-cert" in a]
    assert by_kind(docs, "EnergyPipeline")["energy"]["spec"]["database"]["caSecret"] == {
        "name": "pg-cert", "key": "ca.crt"}


def test_tls_serves_the_secrets_certificate_and_admits_tcp_clients_only_over_it(
    tls_docs: list[dict[str, Any]],
) -> None:
    args = server_args(tls_docs)
    assert {k: args[k] for k in ("ssl", "ssl_cert_file", "ssl_key_file",
                                 "ssl_min_protocol_version", "hba_file")} == {
        "ssl": "on",
        "ssl_cert_file": "/etc/postgresql/tls/tls.crt",
        "ssl_key_file": "/etc/postgresql/tls/tls.key",
        "ssl_min_protocol_version": "TLSv1.2",
        "hba_file": "/etc/postgresql/hba/pg_hba.conf",
    }
    hba = by_kind(tls_docs, "ConfigMap")["energy-postgres-hba"]["data"]["pg_hba.conf"]
    rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    # TCP only through hostssl, with a password; no `host` (plain or TLS) line at all.
    assert rules == [["local", "all", "all", "trust"],
                     ["hostssl", "all", "all", "all", "scram-sha-256"]]
    sts = by_kind(tls_docs, "StatefulSet")["energy-postgres"]
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"] == {
        "secretName": "energy-postgres-tls",
        "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}],
        "defaultMode": 0o640,
    }
    assert volumes["hba"]["configMap"] == {"name": "energy-postgres-hba"}
    mounts = {m["name"]: m for m in postgres_container(tls_docs)["volumeMounts"]}
    assert mounts["tls"] == {"name": "tls", "mountPath": "/etc/postgresql/tls", "readOnly": True}
    assert mounts["hba"] == {"name": "hba", "mountPath": "/etc/postgresql/hba", "readOnly": True}
    # A changed pg_hba.conf restarts the server, which reads it at start.
    assert "checksum/hba" in sts["spec"]["template"]["metadata"]["annotations"]


def test_with_tls_grafana_and_the_pipeline_verify_the_server(
    tls_docs: list[dict[str, Any]],
) -> None:
    source = grafana_provisioning(tls_docs)["datasources"][0]
    assert {k: source["jsonData"][k] for k in ("sslmode", "tlsConfigurationMethod",
                                               "sslRootCertFile")} == {
        "sslmode": "verify-full", "tlsConfigurationMethod": "file-path",
        "sslRootCertFile": "/etc/grafana/database-ca/ca.crt"}
    # verify-full checks the datasource's host name against the certificate's names.
    assert source["url"] == "energy-postgres:5432"
    pod = by_kind(tls_docs, "Deployment")["energy-grafana"]["spec"]["template"]["spec"]
    assert {"name": "database-ca", "secret": {
        "secretName": "energy-postgres-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
    } in pod["volumes"]
    assert {"name": "database-ca", "mountPath": "/etc/grafana/database-ca", "readOnly": True} in (
        pod["containers"][0]["volumeMounts"])
    spec = by_kind(tls_docs, "EnergyPipeline")["energy"]["spec"]
    assert spec["database"] == {
        "urlSecret": {"name": "energy-postgres-app", "key": "DATABASE_URL"},
        "caSecret": {"name": "energy-postgres-tls", "key": "ca.crt"},
    }


def test_tls_without_a_verifying_grafana_is_refused(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    error = template_error(helm, platform_chart, {"grafana": {"database": {"sslmode": "disable"}}},
                           tmp_path)
    assert ("postgres.tls.enabled admits TLS clients only: set grafana.database.sslmode to "
            'verify-full (now "disable")') in error


def test_the_single_secret_of_before_is_refused_with_what_replaces_it(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    error = template_error(helm, platform_chart.parent / "postgres",
                           {"auth": {"existingSecret": "mine"}}, tmp_path)
    assert "auth.existingSecret (one Secret for all roles) is now auth.existingSecrets" in error


def test_secrets_of_your_own_replace_the_generated_ones(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    docs = render(helm, platform_chart.parent / "postgres", {
        "auth": {"existingSecrets": {"superuser": "su", "app": "app", "reader": "ro"}},
        "tls": {"enabled": True, "existingSecret": "pg-cert"},
    }, tmp_path)
    assert "Secret" not in {d["kind"] for d in docs}
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef")
           for e in postgres_container(docs)["env"]}
    assert [env[k]["name"] for k in ("POSTGRES_PASSWORD", "APP_PASSWORD", "READER_PASSWORD")] == [
        "su", "app", "ro"]
    volumes = {v["name"]: v for v in by_kind(docs, "StatefulSet")["energy-postgres"][
        "spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "pg-cert"
