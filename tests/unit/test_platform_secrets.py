"""`energy-pipeline platform-secrets`, the chart hook's planner: pure functions, no cluster.

The certificate is checked with Python's ssl module (OpenSSL) in a TLS handshake in memory,
with the host name the workers' DATABASE_URL uses, as libpq's verify-full does.
"""

from __future__ import annotations

import base64
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from energy_operator import certificates, mqtt_credentials, platform_secrets
from energy_operator.platform_secrets import WantedCertificate, Write

pytestmark = pytest.mark.unit

# Whole seconds (X.509 times have no fractions) and in the past: OpenSSL checks validity.
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
LIFETIME = timedelta(days=825)
NAMES = ("energy-postgres.db.svc", "energy-postgres.db.svc.cluster.local",
         "energy-postgres.db", "energy-postgres")
WANTED = WantedCertificate("energy-postgres-tls", NAMES)


def stored(write: Write, resource_version: str = "7") -> dict[str, Any]:
    """The Secret as the API server would return it after the write."""
    manifest = write.manifest
    return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": resource_version}}


def data(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def new_ca(now: datetime = NOW) -> tuple[certificates.KeyPair, dict[str, Any]]:
    ca, write = platform_secrets.plan_ca(None, "energy-platform-ca", "db", "energy", now)
    assert write is not None
    return ca, stored(write)


def _handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext,
               host: str) -> ssl.SSLObject:
    """A TLS handshake in memory; the server's end, or ssl.SSLError when one side refuses."""
    pipes = [ssl.MemoryBIO() for _ in range(2)]
    client = client_ctx.wrap_bio(pipes[0], pipes[1], server_hostname=host)
    server = server_ctx.wrap_bio(pipes[1], pipes[0], server_side=True)
    for _ in range(10):
        done = 0
        for side in (client, server):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        if done == 2:
            return server
    raise AssertionError("handshake did not finish")


def handshake(tmp_path: Path, server: dict[str, str], host: str) -> None:
    """The server presents `server`'s certificate; the client verifies it against ca.crt."""
    for key, value in server.items():
        (tmp_path / key).write_text(value)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(tmp_path / "ca.crt")
    _handshake(client_ctx, server_ctx, host)


def test_first_run_makes_a_ca_and_a_certificate_the_workers_host_name_verifies(
    tmp_path: Path,
) -> None:
    ca, ca_secret = new_ca()
    assert ca_secret["type"] == "kubernetes.io/tls" and set(data(ca_secret)) == {
        "tls.crt", "tls.key"}
    assert ca_secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "energy-pipeline"
    write = platform_secrets.plan_certificate(None, WANTED, ca, "db", "energy", LIFETIME, NOW)
    assert isinstance(write, Write) and not write.replace and write.why == "missing"
    secret = write.manifest
    assert secret["metadata"]["name"] == "energy-postgres-tls"
    assert "resourceVersion" not in secret["metadata"]
    files = data(secret)
    assert set(files) == {"tls.crt", "tls.key", "ca.crt"} and files["ca.crt"] == ca.cert
    for host in NAMES:
        handshake(tmp_path, files, host)
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        handshake(tmp_path, files, "energy-kafka.db.svc")
    cert = certificates.KeyPair(files["tls.crt"], files["tls.key"]).certificate()
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == LIFETIME + certificates.BACKDATE


def test_a_second_run_writes_nothing() -> None:
    ca, ca_secret = new_ca()
    again, write = platform_secrets.plan_ca(ca_secret, "energy-platform-ca", "db", "energy",
                                            NOW + timedelta(days=30))
    assert write is None and again == ca
    first = platform_secrets.plan_certificate(None, WANTED, ca, "db", "energy", LIFETIME, NOW)
    assert isinstance(first, Write)
    later = NOW + timedelta(days=500)  # before two thirds of 825 days
    assert platform_secrets.plan_certificate(stored(first), WANTED, ca, "db", "energy",
                                             LIFETIME, later) == "valid"


@pytest.mark.parametrize(("change", "why"), [
    ("renewal", "renewal due since"),
    ("names", "its names changed"),
    ("ca", "the CA changed"),
])
def test_a_certificate_is_issued_again_when_due_renamed_or_signed_by_another_ca(
    change: str, why: str, tmp_path: Path,
) -> None:
    ca, _ = new_ca()
    first = platform_secrets.plan_certificate(None, WANTED, ca, "db", "energy", LIFETIME, NOW)
    assert isinstance(first, Write)
    when, wanted, signer = NOW + timedelta(days=1), WANTED, ca
    if change == "renewal":
        when = NOW + timedelta(days=551)
    elif change == "names":
        wanted = WantedCertificate(WANTED.secret, (*NAMES, "pg.example"))
    else:
        signer, _ = new_ca(NOW + timedelta(seconds=1))
    write = platform_secrets.plan_certificate(stored(first), wanted, signer, "db", "energy",
                                              LIFETIME, when)
    assert isinstance(write, Write) and write.replace and write.why.startswith(why)
    # Replaced with the version read: a concurrent writer makes the PUT fail, not vanish.
    assert write.manifest["metadata"]["resourceVersion"] == "7"
    files = data(write.manifest)
    cert = certificates.KeyPair(files["tls.crt"], files["tls.key"]).certificate()
    assert cert.not_valid_before_utc == when - certificates.BACKDATE
    if change != "renewal":  # a certificate made 551 days from now is not valid yet today
        handshake(tmp_path, files, wanted.names[-1])


def test_a_secret_it_did_not_make_is_never_touched() -> None:
    ca, _ = new_ca()
    theirs = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": "energy-postgres-tls", "resourceVersion": "3",
                           "labels": {"controller.cert-manager.io/fao": "true"}},
              "data": {"tls.crt": base64.b64encode(b"not even PEM").decode()}}
    decision = platform_secrets.plan_certificate(theirs, WANTED, ca, "db", "energy", LIFETIME,
                                                 NOW)
    assert decision == "not made by energy-pipeline (no managed-by label): left to its owner"


def test_a_ca_of_the_users_own_is_used_and_a_broken_one_is_refused() -> None:
    users = certificates.new_ca("campus CA", NOW)
    secret = {"metadata": {"name": "campus-ca", "resourceVersion": "1"},
              "data": {"tls.crt": base64.b64encode(users.cert.encode()).decode(),
                       "tls.key": base64.b64encode(users.key.encode()).decode()}}
    ca, write = platform_secrets.plan_ca(secret, "campus-ca", "db", "energy", NOW)
    assert write is None and ca == users
    leaf = certificates.issue(users, "x", ["x"], "server", LIFETIME, NOW)
    broken = {"metadata": {"name": "campus-ca"},
              "data": {"tls.crt": base64.b64encode(leaf.cert.encode()).decode(),
                       "tls.key": base64.b64encode(leaf.key.encode()).decode()}}
    with pytest.raises(ValueError, match=r"Secret db/campus-ca holds no usable CA: tls.crt is "
                       r"not a CA certificate"):
        platform_secrets.plan_ca(broken, "campus-ca", "db", "energy", NOW)


@pytest.mark.parametrize(("text", "message"), [
    ("energy-postgres-tls", "expected SECRET=NAME"),
    ("energy-postgres-tls=", "expected SECRET=NAME"),
    ("Energy_TLS=pg", "is not a Secret name"),
    ("pg-tls=pg.db.svc,bad name", "not DNS names: bad name"),
])
def test_certificate_arguments_are_checked(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        platform_secrets.parse_certificate(text)
    assert platform_secrets.parse_certificate("pg-tls=a.b, c ") == WantedCertificate(
        "pg-tls", ("a.b", "c"))


KAFKA = platform_secrets.parse_certificate(
    "energy-kafka-tls=*.energy-kafka-headless.db.svc.cluster.local,energy-kafka.db.svc"
    ";cn=kafka-broker;peer")


def test_a_peer_certificate_serves_and_authenticates_a_broker_to_another(tmp_path: Path) -> None:
    """Kafka's brokers present the same certificate on both ends of a mutual-TLS connection,
    and their principal is its CN (the authorizer's super user)."""
    assert WantedCertificate(
        "energy-kafka-tls", ("*.energy-kafka-headless.db.svc.cluster.local",
                             "energy-kafka.db.svc"), "kafka-broker", True) == KAFKA
    ca, _ = new_ca()
    write = platform_secrets.plan_certificate(None, KAFKA, ca, "db", "energy", LIFETIME, NOW)
    assert isinstance(write, Write)
    files = data(write.manifest)
    cert = certificates.KeyPair(files["tls.crt"], files["tls.key"]).certificate()
    assert certificates.common_name(cert) == "kafka-broker" and certificates.client_auth(cert)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server.load_verify_locations(tmp_path / "ca.crt")
    server.verify_mode = ssl.CERT_REQUIRED  # Kafka's ssl.client.auth=required
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client.load_verify_locations(tmp_path / "ca.crt")
    far = _handshake(client, server,
                     "energy-kafka-2.energy-kafka-headless.db.svc.cluster.local")
    peer = far.getpeercert()
    assert peer is not None and dict(x[0] for x in peer["subject"])["commonName"] == "kafka-broker"


@pytest.mark.parametrize(("wanted", "why"), [
    (WantedCertificate(KAFKA.secret, KAFKA.names, "broker", True), "its subject changed"),
    (WantedCertificate(KAFKA.secret, KAFKA.names, "kafka-broker", False), "its usage changed"),
])
def test_a_certificate_with_another_subject_or_usage_is_issued_again(
    wanted: WantedCertificate, why: str,
) -> None:
    ca, _ = new_ca()
    first = platform_secrets.plan_certificate(None, KAFKA, ca, "db", "energy", LIFETIME, NOW)
    assert isinstance(first, Write)
    again = platform_secrets.plan_certificate(stored(first), wanted, ca, "db", "energy",
                                              LIFETIME, NOW + timedelta(hours=1))
    assert isinstance(again, Write) and again.why == why


USERS = platform_secrets.parse_passwords("energy-kafka-sasl=bridge,ingest,operator")


def test_passwords_are_made_once_and_a_missing_user_is_added_keeping_the_others() -> None:
    first = platform_secrets.plan_passwords(None, USERS, "db", "energy")
    assert isinstance(first, Write) and not first.replace
    assert first.manifest["type"] == "Opaque"
    made = data(first.manifest)
    assert set(made) == {f"{u}-{k}" for u in USERS.users for k in ("username", "password")}
    passwords = [made[f"{u}-password"] for u in USERS.users]
    assert all(len(p) == 32 and p.isalnum() for p in passwords) and len(set(passwords)) == 3
    assert platform_secrets.plan_passwords(stored(first), USERS, "db", "energy") == "valid"
    more = platform_secrets.parse_passwords("energy-kafka-sasl=bridge,ingest,operator,api")
    added = platform_secrets.plan_passwords(stored(first), more, "db", "energy")
    assert isinstance(added, Write) and added.replace and added.why == "added users api"
    after = data(added.manifest)
    assert {k: after[k] for k in made} == made and after["api-username"] == "api"
    assert added.manifest["metadata"]["resourceVersion"] == "7"
    theirs = {"metadata": {"name": "energy-kafka-sasl", "labels": {}}, "data": {}}
    assert platform_secrets.plan_passwords(theirs, USERS, "db", "energy") == (
        "not made by energy-pipeline (no managed-by label): left to its owner")


@pytest.mark.parametrize(("text", "message"), [
    ("k-tls=a.b;cn=", "unknown option 'cn='"),
    ("k-tls=a.b;client", "unknown option 'client'"),
])
def test_certificate_options_are_checked(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        platform_secrets.parse_certificate(text)


@pytest.mark.parametrize(("text", "message"), [
    ("k-sasl", "expected SECRET=USER"),
    ("k-sasl=Bridge", "user names are lower-case"),
])
def test_password_arguments_are_checked(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        platform_secrets.parse_passwords(text)


MQTT = platform_secrets.parse_mqtt_users(
    "energy-mqtt-users=bridge:subscribe:$share/bridge/energy/#,"
    "building-7:publish:energy/site-007/#")


def test_mqtt_users_get_a_password_and_a_hash_of_it_in_the_brokers_file() -> None:
    first = platform_secrets.plan_mqtt_users(None, MQTT, "energy", "energy")
    assert isinstance(first, Write) and not first.replace and first.manifest["type"] == "Opaque"
    made = data(first.manifest)
    assert set(made) == {"users", "bridge-username", "bridge-password", "building-7-username",
                         "building-7-password"}
    lines = [line.split() for line in made["users"].splitlines() if not line.startswith("#")]
    assert [f[:3] for f in lines] == [["bridge", "subscribe", "$share/bridge/energy/#"],
                                      ["building-7", "publish", "energy/site-007/#"]]
    for user, fields in zip(("bridge", "building-7"), lines, strict=True):
        password = made[f"{user}-password"]
        assert len(password) == 32 and password.isalnum()
        # The broker's file holds no password, only its PBKDF2 hash (the extension's format).
        assert password not in made["users"]
        assert fields[3].startswith(f"pbkdf2-sha256${mqtt_credentials.ITERATIONS}$")
        assert mqtt_credentials.matches(fields[3], password)
        assert not mqtt_credentials.matches(fields[3], password + "x")
    # A second run writes nothing: each hash still matches its password (fresh salts would
    # otherwise change the file at each upgrade and make HiveMQ reload it for nothing).
    assert platform_secrets.plan_mqtt_users(stored(first), MQTT, "energy", "energy") == "valid"


def test_an_edited_password_is_hashed_again_and_a_dropped_user_loses_access() -> None:
    first = stored(platform_secrets.plan_mqtt_users(None, MQTT, "energy", "energy"))
    old = data(first)
    rotated = {**old, "building-7-password": "a-new-password-set-by-hand"}
    first["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in rotated.items()}
    fewer = platform_secrets.parse_mqtt_users(
        "energy-mqtt-users=building-7:publish:energy/site-007/#")
    again = platform_secrets.plan_mqtt_users(first, fewer, "energy", "energy")
    assert isinstance(again, Write) and again.replace
    assert again.why == "building-7: password changed; removed bridge"
    after = data(again.manifest)
    assert set(after) == {"users", "building-7-username", "building-7-password"}
    (line,) = [x for x in after["users"].splitlines() if not x.startswith("#")]
    assert mqtt_credentials.matches(line.split()[3], "a-new-password-set-by-hand")
    moved = platform_secrets.parse_mqtt_users(
        "energy-mqtt-users=building-7:publish:energy/site-008/#")
    changed = platform_secrets.plan_mqtt_users(stored(again), moved, "energy", "energy")
    assert isinstance(changed, Write) and changed.why == "building-7: permission changed"
    theirs = {"metadata": {"name": "energy-mqtt-users", "labels": {}}, "data": {}}
    assert platform_secrets.plan_mqtt_users(theirs, MQTT, "energy", "energy") == (
        "not made by energy-pipeline (no managed-by label): left to its owner")


@pytest.mark.parametrize(("text", "message"), [
    ("m=bridge:read:energy/#", "'read' is not publish or subscribe"),
    ("m=Bridge:subscribe:energy/#", "user 'Bridge' is not lower-case"),
    ("m=dev:publish:$share/g/energy/#", r"\$share/<group>/<filter> is for subscribe users only"),
    ("m=dev:publish:", "the topic filter is empty"),
    ("m=dev:publish:a/#,dev:publish:b/#", "listed more than once: dev"),
    ("m", "expected SECRET=USER:publish|subscribe:FILTER"),
])
def test_mqtt_user_arguments_are_checked(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        platform_secrets.parse_mqtt_users(text)


def test_a_login_keeps_its_password_and_its_url_follows_it() -> None:
    wanted = platform_secrets.parse_login(
        "energy-postgres-app=energy;url=energy-postgres.db.svc:5432/energy")
    first = platform_secrets.plan_login(None, wanted, "db", "energy")
    assert isinstance(first, Write) and first.why == "made" and not first.replace
    made = data(first.manifest)
    password = made["password"]
    assert len(password) == 32 and password.isalnum()
    assert made == {"username": "energy", "password": password, "DATABASE_URL":
                    f"postgresql://energy:{password}@energy-postgres.db.svc:5432/energy"}
    assert platform_secrets.plan_login(stored(first), wanted, "db", "energy") == "valid"
    # A password edited by hand (the database's was changed with it) is kept; the URL follows.
    edited = stored(first)
    edited["data"]["password"] = base64.b64encode(b"changed/by:hand@").decode()
    again = platform_secrets.plan_login(edited, wanted, "db", "energy")
    assert isinstance(again, Write) and again.why == "changed: DATABASE_URL"
    url = data(again.manifest)["DATABASE_URL"]
    assert url == ("postgresql://energy:changed%2Fby%3Ahand%40@energy-postgres.db.svc:5432/"
                   "energy")
    # What libpq makes of it: the password as set.
    from psycopg2.extensions import parse_dsn
    assert parse_dsn(url)["password"] == "changed/by:hand@"
    grafana = platform_secrets.parse_login("g-admin=admin;keys=admin-user,admin-password")
    made = data(platform_secrets.plan_login(None, grafana, "db", "energy").manifest)
    assert set(made) == {"admin-user", "admin-password"} and made["admin-user"] == "admin"
    theirs = {"metadata": {"name": "energy-postgres-app", "labels": {}}, "data": {}}
    assert platform_secrets.plan_login(theirs, wanted, "db", "energy") == (
        "not made by energy-pipeline (no managed-by label): left to its owner")


@pytest.mark.parametrize(("text", "message"), [
    ("p=energy,reader", "one user"),
    ("p=Energy", "one user"),
    ("p=energy;url=host/db", "is not url=HOST:PORT/DATABASE"),
    ("p=energy;keys=a", "is not url=HOST:PORT/DATABASE or keys=USERKEY,PASSWORDKEY"),
    ("p=energy;keys=a,a", "keys=USERKEY,PASSWORDKEY"),
])
def test_login_arguments_are_checked(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        platform_secrets.parse_login(text)
