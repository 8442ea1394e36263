"""`energy-pipeline platform-secrets`: the TLS Secrets of a platform install, made once.

The energy-platform chart runs this as a pre-install and pre-upgrade hook Job, so that the
servers it installs (PostgreSQL today) start with TLS on without the user making a
certificate first, and so that nothing is generated at render time: `helm template`,
`--dry-run` and GitOps tools render the same manifests every time, and a Secret, once made,
is never made again by a later render.

- The CA: Secret `--ca-secret` (tls.crt, tls.key). Made on the first run if absent; a CA the
  user created there beforehand (`kubectl create secret tls NAME --cert=ca.crt --key=ca.key`)
  is used as it is. Never regenerated: a new CA would cut every client off that verifies
  against the old one; deleting the Secret (and the certificates) is how to ask for one.
- Each `--certificate SECRET=NAME[,NAME...][;cn=CN][;peer]`: a kubernetes.io/tls Secret
  (tls.crt, tls.key, ca.crt, cert-manager's layout) with a server certificate for the NAMEs
  (subject CN: the first NAME, or CN; `peer`: usable for client authentication too, as
  Kafka's brokers present theirs to each other). Issued when missing, unreadable, signed by
  another CA, naming other names, with another CN or usage, or past two thirds of its
  lifetime; otherwise left alone, so a run that finds everything in order writes nothing.
- Each `--passwords SECRET=USER[,USER...]`: an Opaque Secret with `<user>-username` and
  `<user>-password` (32 random letters and digits) per user, the layout of the kafka
  chart's users Secret. A user missing from it is added; a password once made is never
  changed here (rotating is the user's: edit the Secret).
- Each `--login SECRET=USER[;url=HOST:PORT/DATABASE][;keys=USERKEY,PASSWORDKEY]`: an Opaque
  Secret with one user's name and a random password (keys `username` and `password` unless
  `keys` names others), and with `url`, `DATABASE_URL` (postgresql://USER:PASSWORD@HOST:PORT/
  DATABASE), the layout of the postgres chart's role Secrets. The password is kept once made
  (the database was initialised with it); the URL follows the password and user in it.
- Each `--mqtt-users SECRET=USER:ACTIVITY:FILTER[,...]`: an Opaque Secret for HiveMQ and its
  clients: `users`, the credentials file of energy-pipeline's HiveMQ extension (one line per
  user with its one topic permission and a PBKDF2 hash of its password; the broker mounts
  this key only), and `<user>-username`, `<user>-password` for the clients. A password once
  made is kept; a hash is made again when it no longer matches its password (the user edited
  the password: that is how to rotate one) or the permission changed; users no longer listed
  are removed (their access revoked).

A Secret of one of these names that this command did not make (no
`app.kubernetes.io/managed-by: energy-pipeline` label: e.g. cert-manager's, or the user's) is
never touched.

Pure `plan_*` functions decide; `run` alone reads and writes through the Kubernetes API.
"""

from __future__ import annotations

import argparse
import base64
import logging
import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote

from energy_pipeline.core.errors import USAGE, CommandError

from energy_operator import certificates, mqtt_credentials
from energy_operator.certificates import KeyPair
from energy_operator.crd import DNS_SUBDOMAIN
from energy_operator.settings import SERVICE_ACCOUNT_NAMESPACE

log = logging.getLogger("energy_operator.platform_secrets")

MANAGED_BY = "energy-pipeline"
COMPONENT = "platform-secrets"
DEFAULT_LIFETIME_DAYS = 825
# What Kubernetes accepts as a Secret name (the CRD's pattern for Secret references).
_SECRET_NAME = re.compile(DNS_SUBDOMAIN)
_DNS_NAME = re.compile(r"^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$")


PASSWORD_LENGTH = 32
# Letters and digits only: kafka-configs.sh reads , [ ] = in a SCRAM password as syntax.
PASSWORD_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class WantedCertificate:
    secret: str
    names: tuple[str, ...]
    common_name: str = ""  # empty: the first name
    peer: bool = False  # client authentication too

    @property
    def subject(self) -> str:
        return self.common_name or self.names[0]

    @property
    def side(self) -> str:
        return "peer" if self.peer else "server"


@dataclass(frozen=True)
class WantedPasswords:
    secret: str
    users: tuple[str, ...]


@dataclass(frozen=True)
class WantedLogin:
    secret: str
    user: str
    url: str = ""  # HOST:PORT/DATABASE: the Secret holds DATABASE_URL too
    user_key: str = "username"
    password_key: str = "password"


@dataclass(frozen=True)
class WantedMqttUsers:
    secret: str
    permissions: tuple[mqtt_credentials.Permission, ...]


@dataclass(frozen=True)
class Write:
    """A Secret to create (no resourceVersion) or replace, and why."""
    manifest: dict[str, Any]
    replace: bool
    why: str

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


def _split(text: str, form: str, example: str) -> tuple[str, tuple[str, ...]]:
    """`SECRET=ITEM[,ITEM...]` into the Secret's name and the items; ValueError naming what
    is wrong."""
    secret, sep, items_text = text.partition("=")
    items = tuple(i.strip() for i in items_text.split(",") if i.strip())
    if not sep or not items:
        raise ValueError(f"{text!r}: expected {form}, e.g. {example}")
    if len(secret) > 253 or not _SECRET_NAME.match(secret):
        raise ValueError(f"{text!r}: {secret!r} is not a Secret name (lower-case letters, "
                         "digits, '-' and '.')")
    return secret, items


def parse_certificate(text: str) -> WantedCertificate:
    """`SECRET=NAME[,NAME...][;cn=CN][;peer]`; ValueError naming what is wrong."""
    head, *options = text.split(";")
    secret, names = _split(head, "SECRET=NAME[,NAME...][;cn=CN][;peer]",
                           "energy-postgres-tls=energy-postgres.db.svc,energy-postgres")
    bad = [n for n in names if not _DNS_NAME.match(n)]
    if bad:
        raise ValueError(f"{text!r}: not DNS names: {', '.join(bad)}")
    common_name, peer = "", False
    for option in (o.strip() for o in options):
        if option == "peer":
            peer = True
        elif option.startswith("cn=") and len(option) > 3:
            common_name = option[3:]
        else:
            raise ValueError(f"{text!r}: unknown option {option!r} (cn=CN or peer)")
    return WantedCertificate(secret, names, common_name, peer)


def parse_passwords(text: str) -> WantedPasswords:
    """`SECRET=USER[,USER...]`; ValueError naming what is wrong."""
    secret, users = _split(text, "SECRET=USER[,USER...]",
                           "energy-kafka-sasl=bridge,ingest,operator")
    bad = [u for u in users if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", u)]
    if bad:
        raise ValueError(f"{text!r}: user names are lower-case letters, digits and '-': "
                         f"{', '.join(bad)}")
    return WantedPasswords(secret, users)


_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_DATABASE_AT = re.compile(r"[A-Za-z0-9.-]+:[0-9]{1,5}/[A-Za-z0-9_]+")


def parse_login(text: str) -> WantedLogin:
    """`SECRET=USER[;url=HOST:PORT/DATABASE][;keys=USERKEY,PASSWORDKEY]`; ValueError naming
    what is wrong."""
    head, *options = text.split(";")
    form = "SECRET=USER[;url=HOST:PORT/DATABASE][;keys=USERKEY,PASSWORDKEY]"
    secret, users = _split(head, form, "energy-postgres-app=energy;url=energy-postgres.db.svc:"
                           "5432/energy")
    if len(users) != 1 or not re.fullmatch(r"[a-z_][a-z0-9_]*", users[0]):
        raise ValueError(f"{text!r}: one user, lower-case letters, digits and '_' ({form})")
    wanted = WantedLogin(secret, users[0])
    for option in (o.strip() for o in options):
        name, _, value = option.partition("=")
        if name == "url" and _DATABASE_AT.fullmatch(value):
            wanted = replace(wanted, url=value)
        elif name == "keys" and len(keys := value.split(",")) == 2 and all(
                _KEY.fullmatch(k) for k in keys) and keys[0] != keys[1]:
            wanted = replace(wanted, user_key=keys[0], password_key=keys[1])
        else:
            raise ValueError(f"{text!r}: {option!r} is not url=HOST:PORT/DATABASE or "
                             "keys=USERKEY,PASSWORDKEY")
    return wanted


def parse_mqtt_users(text: str) -> WantedMqttUsers:
    """`SECRET=USER:ACTIVITY:FILTER[,...]`; ValueError naming what is wrong."""
    secret, items = _split(text, "SECRET=USER:publish|subscribe:FILTER[,...]",
                           "energy-mqtt-users=bridge:subscribe:$share/bridge/energy/#,"
                           "building-7:publish:energy/site-007/#")
    permissions = tuple(mqtt_credentials.parse_permission(item) for item in items)
    users = [p.user for p in permissions]
    twice = sorted({u for u in users if users.count(u) > 1})
    if twice:
        raise ValueError(f"{text!r}: listed more than once: {', '.join(twice)}")
    return WantedMqttUsers(secret, permissions)


def labels(instance: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": MANAGED_BY,
            "app.kubernetes.io/component": COMPONENT,
            "app.kubernetes.io/instance": instance,
            "app.kubernetes.io/part-of": "energy-pipeline"}


def ours(secret: Mapping[str, Any] | None) -> bool:
    labels = ((secret or {}).get("metadata") or {}).get("labels") or {}
    return labels.get("app.kubernetes.io/managed-by") == MANAGED_BY


def _manifest(name: str, namespace: str, instance: str, data: Mapping[str, str],
              existing: Mapping[str, Any] | None, annotations: Mapping[str, str],
              kind: str = "kubernetes.io/tls") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels(instance),
                                "annotations": dict(annotations)}
    if existing is not None:  # optimistic locking: a concurrent writer makes the PUT fail
        metadata["resourceVersion"] = existing["metadata"]["resourceVersion"]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": kind,
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _identity_reason(data: Mapping[str, str], wanted: WantedCertificate) -> str | None:
    """Why a readable certificate's subject or usage is not what `wanted` asks for."""
    cert = KeyPair(data["tls.crt"], data["tls.key"]).certificate()
    if certificates.common_name(cert) != wanted.subject:
        return "its subject changed"
    if certificates.client_auth(cert) != wanted.peer:
        return "its usage changed"
    return None


def plan_ca(existing: Mapping[str, Any] | None, name: str, namespace: str, instance: str,
            now: datetime) -> tuple[KeyPair, Write | None]:
    """The CA to sign with, and the Secret to create when there is none.
    ValueError when the Secret exists but holds no usable CA (never overwritten)."""
    if existing is not None:
        try:
            return certificates.read_ca(certificates.secret_data(existing)), None
        except ValueError as exc:
            raise ValueError(f"Secret {namespace}/{name} holds no usable CA: {exc}") from exc
    ca = certificates.new_ca(f"{namespace}/{instance} platform CA", now)
    return ca, Write(_manifest(name, namespace, instance, {"tls.crt": ca.cert, "tls.key": ca.key},
                               None, {}), replace=False, why="no CA yet")


def plan_certificate(existing: Mapping[str, Any] | None, wanted: WantedCertificate,
                     ca: KeyPair, namespace: str, instance: str, lifetime: timedelta,
                     now: datetime) -> Write | str:
    """The Secret to write for `wanted`, or why it is left as it is."""
    if existing is not None and not ours(existing):
        return "not made by energy-pipeline (no managed-by label): left to its owner"
    data = certificates.secret_data(existing)
    reason = certificates.reissue_reason(data, ca, list(wanted.names), now)
    if reason is None:
        reason = _identity_reason(data, wanted)
    if reason is None:
        return "valid"
    pair = certificates.issue(ca, wanted.subject, list(wanted.names), wanted.side, lifetime, now)
    renew = certificates.renew_after(pair.certificate())
    return Write(
        _manifest(wanted.secret, namespace, instance,
                  {"tls.crt": pair.cert, "tls.key": pair.key, "ca.crt": ca.cert}, existing,
                  {certificates.RENEW_ANNOTATION: f"{renew:%Y-%m-%dT%H:%M:%SZ}"}),
        replace=existing is not None, why=reason)


def new_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def plan_passwords(existing: Mapping[str, Any] | None, wanted: WantedPasswords,
                   namespace: str, instance: str) -> Write | str:
    """The users Secret with every wanted user in it, or why it is left as it is. Passwords
    already there are kept: this only ever adds."""
    if existing is not None and not ours(existing):
        return "not made by energy-pipeline (no managed-by label): left to its owner"
    data = certificates.secret_data(existing)
    missing = [u for u in wanted.users
               if not data.get(f"{u}-password") or data.get(f"{u}-username") != u]
    if not missing:
        return "valid"
    for user in missing:
        data[f"{user}-username"] = user
        data[f"{user}-password"] = data.get(f"{user}-password") or new_password()
    return Write(_manifest(wanted.secret, namespace, instance, data, existing, {}, "Opaque"),
                 replace=existing is not None,
                 why=f"{'made' if existing is None else 'added'} users {', '.join(missing)}")


def plan_login(existing: Mapping[str, Any] | None, wanted: WantedLogin, namespace: str,
               instance: str) -> Write | str:
    """The login Secret for `wanted`, or why it is left as it is. The password is kept once
    made; the user name and DATABASE_URL follow what is wanted and the password."""
    if existing is not None and not ours(existing):
        return "not made by energy-pipeline (no managed-by label): left to its owner"
    data = certificates.secret_data(existing)
    password = data.get(wanted.password_key) or new_password()
    want = {wanted.user_key: wanted.user, wanted.password_key: password}
    if wanted.url:
        # Quoted: a password set by hand may hold characters a URL gives meaning to (@ : /);
        # a generated one (letters and digits) reads the same as in the postgres chart's.
        want["DATABASE_URL"] = f"postgresql://{wanted.user}:{quote(password, safe='')}@{wanted.url}"
    if want == data:
        return "valid"
    why = ("made" if not data.get(wanted.password_key) else
           "changed: " + ", ".join(k for k in sorted(set(want) | set(data))
                                   if want.get(k) != data.get(k)))
    return Write(_manifest(wanted.secret, namespace, instance, want, existing, {}, "Opaque"),
                 replace=existing is not None, why=why)


def plan_mqtt_users(existing: Mapping[str, Any] | None, wanted: WantedMqttUsers,
                    namespace: str, instance: str) -> Write | str:
    """The MQTT users Secret holding exactly the wanted users, or why it is left as it is.
    Passwords already there are kept; a hash is kept while it matches its password and the
    permission is unchanged (so a second run writes nothing)."""
    if existing is not None and not ours(existing):
        return "not made by energy-pipeline (no managed-by label): left to its owner"
    data = certificates.secret_data(existing)
    hashed = mqtt_credentials.parse_file(data.get("users", ""))
    wanted_data: dict[str, str] = {}
    lines, changes = [], []
    for permission in wanted.permissions:
        user = permission.user
        password = data.get(f"{user}-password") or ""
        found = hashed.get(user)
        if not password:
            password, change = new_password(), "made"
        elif found is None:
            change = "hashed"
        elif found[0] != permission:
            change = "permission changed"
        elif not mqtt_credentials.matches(found[1], password):
            change = "password changed"
        else:
            change = ""
        hash_ = found[1] if found and not change else mqtt_credentials.hash_password(password)
        if change:
            changes.append(f"{user}: {change}")
        lines.append(mqtt_credentials.line(permission, hash_))
        wanted_data[f"{user}-username"] = user
        wanted_data[f"{user}-password"] = password
    wanted_data["users"] = mqtt_credentials.render_file(lines)
    listed = {p.user for p in wanted.permissions}
    removed = sorted(set(hashed) - listed)
    if removed:
        changes.append(f"removed {', '.join(removed)}")
    if wanted_data == data:
        return "valid"
    return Write(_manifest(wanted.secret, namespace, instance, wanted_data, existing, {},
                           "Opaque"),
                 replace=existing is not None,
                 why="; ".join(changes) or "tidied (keys of no listed user)")


# -- effects --------------------------------------------------------------------------------

def _namespace(given: str) -> str:
    if given:
        return given
    if SERVICE_ACCOUNT_NAMESPACE.exists():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    raise CommandError("no namespace", status=USAGE,
                       fix="give --namespace (outside a pod there is no namespace of its own)")


def run(args: argparse.Namespace) -> int:
    from kubernetes.config import ConfigException

    from energy_operator.kube import Kube, KubeError, new_api_client

    # Every argument checked before anything is read or written; all errors at once.
    parsed: dict[str, list[Any]] = {}
    errors = []
    for option, parse in (("certificate", parse_certificate), ("passwords", parse_passwords),
                          ("login", parse_login), ("mqtt_users", parse_mqtt_users)):
        parsed[option] = []
        for text in getattr(args, option) or ():
            try:
                parsed[option].append(parse(text))
            except ValueError as exc:
                errors.append(f"--{option.replace('_', '-')} {exc}")
    if errors:
        raise CommandError("; ".join(errors), status=USAGE)
    if args.lifetime_days < 2:
        raise CommandError(f"--lifetime-days {args.lifetime_days}: at least 2", status=USAGE)
    namespace = _namespace(args.namespace)
    try:
        kube = Kube(new_api_client())
    except ConfigException as exc:
        raise CommandError(f"no Kubernetes cluster: {exc}",
                           fix="run it in a pod, or set KUBECONFIG to a kubeconfig file") from exc
    now = datetime.now(UTC)
    lifetime = timedelta(days=args.lifetime_days)
    try:
        found = kube.get("v1", "Secret", namespace, args.ca_secret)
        try:
            ca, write = plan_ca(found, args.ca_secret, namespace, args.instance, now)
        except ValueError as exc:
            raise CommandError(str(exc), fix=f"delete it (kubectl -n {namespace} delete secret "
                               f"{args.ca_secret}) to have a new CA made, or put a CA's tls.crt "
                               "and tls.key in it") from exc
        writes = [write] if write else []
        # What decides each Secret, given what is there now.
        planners: list[tuple[str, Callable[[Mapping[str, Any] | None], Write | str]]] = [
            *((w.secret, partial(plan_certificate, wanted=w, ca=ca, namespace=namespace,
                                 instance=args.instance, lifetime=lifetime, now=now))
              for w in parsed["certificate"]),
            *((w.secret, partial(plan_passwords, wanted=w, namespace=namespace,
                                 instance=args.instance)) for w in parsed["passwords"]),
            *((w.secret, partial(plan_login, wanted=w, namespace=namespace,
                                 instance=args.instance)) for w in parsed["login"]),
            *((w.secret, partial(plan_mqtt_users, wanted=w, namespace=namespace,
                                 instance=args.instance)) for w in parsed["mqtt_users"]),
        ]
        for secret, plan in planners:
            decision = plan(kube.get("v1", "Secret", namespace, secret))
            if isinstance(decision, str):
                log.info("Secret %s/%s left as it is: %s", namespace, secret, decision)
            else:
                writes.append(decision)
        for w in writes:
            (kube.replace if w.replace else kube.create)(w.manifest)
            log.info("Secret %s/%s %s (%s)", namespace, w.name,
                     "replaced" if w.replace else "created", w.why)
    except KubeError as exc:
        raise CommandError(
            f"Kubernetes API: {exc.status} {exc.reason}: {exc.message}",
            fix="the ServiceAccount needs get, create and update on Secrets in "
                f"namespace {namespace}" if exc.status == 403 else
                "run it again (a 409 means another writer changed the Secret meanwhile)",
        ) from exc
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "platform-secrets",
        help="make the platform's CA and server certificates once (the chart's hook Job)",
        description=(
            "Makes the CA Secret (--ca-secret) if absent and, for each --certificate, a "
            "kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) with a server certificate "
            "signed by it; for each --passwords, a Secret with a random password per user; for "
            "each --mqtt-users, a Secret with HiveMQ's credentials file (hashes) and each "
            "user's password; for each --login, a Secret with one user's password (and "
            "database URL). A "
            "certificate is issued again only when missing, signed by another CA, naming "
            "other names or subject, or past two thirds of its lifetime; a password is never "
            "changed once made; Secrets it did not make are never touched. Uses the pod's "
            "ServiceAccount, or KUBECONFIG outside a pod. The energy-platform chart runs it "
            "before every install and upgrade."
        ),
        epilog=(
            "example:\n"
            "  energy-pipeline platform-secrets --namespace db --ca-secret energy-platform-ca \\\n"
            "    --certificate energy-postgres-tls=energy-postgres.db.svc,energy-postgres \\\n"
            "    --certificate 'energy-kafka-tls=*.energy-kafka-headless.db.svc.cluster.local,"
            "energy-kafka.db.svc;cn=kafka-broker;peer' \\\n"
            "    --passwords energy-kafka-sasl=bridge,ingest,operator \\\n"
            "    --mqtt-users 'energy-mqtt-users=bridge:subscribe:$share/bridge/energy/#,"
            "building-7:publish:energy/site-007/#'"
        ),
    )
    p.add_argument("--namespace", default="",
                   help="namespace of the Secrets (default: the pod's own)")
    p.add_argument("--ca-secret", required=True, help="Secret of the CA (tls.crt, tls.key)")
    p.add_argument("--certificate", action="append", metavar="SECRET=NAME,...[;cn=CN][;peer]",
                   help="a server certificate for these DNS names in Secret SECRET, with "
                   "subject CN (default: the first name), for client authentication too with "
                   "peer (repeatable; none: only the CA)")
    p.add_argument("--passwords", action="append", metavar="SECRET=USER,...",
                   help="a random password per user in Secret SECRET (keys <user>-username, "
                   "<user>-password), kept once made (repeatable)")
    p.add_argument("--login", action="append",
                   metavar="SECRET=USER[;url=HOST:PORT/DATABASE][;keys=UKEY,PKEY]",
                   help="one user's name and a random password in Secret SECRET (keys username, "
                   "password, or those of keys=), with url= also DATABASE_URL; the password is "
                   "kept once made (repeatable)")
    p.add_argument("--mqtt-users", action="append", metavar="SECRET=USER:ACTIVITY:FILTER,...",
                   help="MQTT users of energy-pipeline's HiveMQ extension in Secret SECRET: "
                   "`users` (the broker's credentials file, PBKDF2 hashes) and <user>-username, "
                   "<user>-password; each user may publish (a device) or subscribe (the "
                   "bridge) to one topic filter only (repeatable)")
    p.add_argument("--lifetime-days", type=int, default=DEFAULT_LIFETIME_DAYS,
                   help="validity of each certificate issued, in days")
    p.add_argument("--instance", default="energy-platform",
                   help="app.kubernetes.io/instance label of the Secrets (the Helm release)")
    p.set_defaults(func=run)
