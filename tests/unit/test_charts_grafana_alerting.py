"""Grafana's alert delivery and storage as `helm template` renders them (issue 19).

Contact points and the notification policy are provisioned from files that Grafana reads at
start; no Grafana server runs here (DESIGN: AGPL, no image), so the files are checked
against Grafana's documented provisioning format, with the setting keys its notifiers read
(sources named at CONTACT_POINT_SETTINGS), and what Grafana does with them is replayed:
its ${VARIABLE} interpolation over the environment the Deployment builds from the Secrets,
and the routing of the rules' alerts through the policy tree. The alert rules likewise:
Grafana's documented rule file format, one copy per pipeline (`pipelines`, a PostgreSQL
schema each), and the values that cannot work.

Marked `cluster` like test_charts_render (the helm binary comes from the cached Kubernetes
tools build; no API server is started here).
"""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from unit.test_charts_postgres_tls import template_error
from unit.test_charts_render import (  # noqa: F401 - its fixtures and helpers
    by_kind,
    helm,
    platform_chart,
    render,
    run_helm,
)

pytestmark = pytest.mark.cluster

CONFIGMAP = "energy-grafana-provisioning"
DEPLOYMENT = "energy-grafana"
ALERTING_DIR = "/etc/grafana/provisioning/alerting"

# The user's Secrets, as they would be in the cluster: the chart gets their names only.
# Sentinels that must reach Grafana's environment and never a ConfigMap; `$` inside, which
# Grafana's single-pass expansion must leave alone.
SECRETS: dict[str, dict[str, str]] = {
    "alerting-slack": {"url": "https://hooks.slack.example/services/T0/B0/SENTINEL-slack-$url",
                       "bot-token": "xoxb-SENTINEL-slack-token"},
    "alerting-hook": {"endpoint": "https://hooks.example/SENTINEL-webhook?token=$abc"},
    "alerting-pagerduty": {"routing-key": "SENTINEL0pagerduty0routing0key00"},
    "grafana-smtp": {"password": "SENTINEL-smtp-pa$$word"},
    # What the Deployment reads anyway (the platform hook and the postgres chart make them).
    "energy-grafana-admin": {"admin-user": "admin", "admin-password": "SENTINEL-admin-pw"},
    "energy-postgres-reader": {"password": "SENTINEL-reader-pw"},
}
SENTINELS = [v for data in SECRETS.values() for k, v in data.items() if k != "admin-user"]

SMTP = {"host": "smtp.example.com:587", "fromAddress": "grafana@example.com",
        "user": "grafana", "passwordSecret": {"name": "grafana-smtp", "key": "password"}}
CHANNELS: dict[str, dict[str, Any]] = {
    "email": {"enabled": True, "addresses": ["oncall@example.com", "ops$team@example.com"]},
    "slack": {"enabled": True, "secretName": "alerting-slack"},
    "webhook": {"enabled": True, "secretName": "alerting-hook", "urlKey": "endpoint",
                "httpMethod": "PUT"},
    "pagerduty": {"enabled": True, "secretName": "alerting-pagerduty"},
}
ALL_CHANNELS = {"smtp": SMTP, "alerts": {"contactPoints": CHANNELS}}

# What Grafana reads, per contact point type: the settings it requires and every key it
# knows. From grafana/alerting receivers/<type>/v1/config.go (the notifiers' NewConfig and
# their JSON tags) and Grafana's file-provisioning docs ("Provision contact points",
# docs/sources/alerting/set-up/provision-alerting-resources/file-provisioning/index.md).
CONTACT_POINT_SETTINGS: dict[str, tuple[tuple[frozenset[str], ...], frozenset[str]]] = {
    # (alternatives of required keys, known keys)
    "email": ((frozenset({"addresses"}),),
              frozenset({"addresses", "singleEmail", "message", "subject"})),
    "slack": ((frozenset({"url"}), frozenset({"token", "recipient"})),
              frozenset({"url", "token", "recipient", "endpointUrl", "text", "title",
                         "username", "icon_emoji", "icon_url", "mentionChannel",
                         "mentionUsers", "mentionGroups", "color", "footer"})),
    "webhook": ((frozenset({"url"}),),
                frozenset({"url", "httpMethod", "maxAlerts", "authorization_scheme",
                           "authorization_credentials", "username", "password", "title",
                           "message", "tlsConfig", "hmacConfig", "headers", "payload"})),
    "pagerduty": ((frozenset({"integrationKey"}),),
                  frozenset({"integrationKey", "severity", "details", "class", "component",
                             "group", "summary", "source", "client", "client_url", "url"})),
}
# grafana/alerting definition/alertmanager.go: Route's JSON keys and ObjectMatchers' types.
ROUTE_KEYS = frozenset({"receiver", "group_by", "match", "match_re", "matchers",
                        "object_matchers", "mute_time_intervals", "active_time_intervals",
                        "continue", "routes", "group_wait", "group_interval",
                        "repeat_interval"})
MATCH_TYPES = frozenset({"=", "!=", "=~", "!~"})
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Grafana's short UIDs (util.IsValidShortUID): at most 40 of these characters.
UID = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")
# Exists in every Grafana org unless deleted.
GRAFANA_DEFAULT_CONTACT_POINT = "grafana-default-email"


# -- Grafana's documented format, as a checker that lists what is wrong ----------------------

def contact_point_errors(doc: Any) -> list[str]:
    errors: list[str] = []
    if not isinstance(doc, dict) or doc.get("apiVersion") != 1:
        return ["apiVersion must be 1"]
    if set(doc) - {"apiVersion", "contactPoints"}:
        errors.append(f"unexpected top-level keys {set(doc) - {'apiVersion', 'contactPoints'}}")
    points = doc.get("contactPoints")
    if not isinstance(points, list) or not points:
        return [*errors, "contactPoints must be a non-empty list"]
    uids: list[str] = []
    for point in points:
        where = f"contact point {point.get('name')!r}"
        if set(point) - {"orgId", "name", "receivers"}:
            errors.append(f"{where}: unknown keys {set(point) - {'orgId', 'name', 'receivers'}}")
        if not isinstance(point.get("orgId", 1), int) or point.get("orgId", 1) < 1:
            errors.append(f"{where}: orgId must be an integer >= 1")
        if not isinstance(point.get("name"), str) or not point["name"].strip():
            errors.append(f"{where}: name is required")
        receivers = point.get("receivers")
        if not isinstance(receivers, list) or not receivers:
            errors.append(f"{where}: receivers must be a non-empty list")
            continue
        for receiver in receivers:
            extra = set(receiver) - {"uid", "type", "settings", "disableResolveMessage"}
            if extra:
                errors.append(f"{where}: unknown receiver keys {extra}")
            uid = receiver.get("uid")
            if not isinstance(uid, str) or not UID.match(uid):
                errors.append(f"{where}: uid {uid!r} is not a Grafana uid")
            uids.append(str(uid))
            kind = receiver.get("type")
            if kind not in CONTACT_POINT_SETTINGS:
                errors.append(f"{where}: type {kind!r} is not one of {set(CONTACT_POINT_SETTINGS)}")
                continue
            if not isinstance(receiver.get("disableResolveMessage", False), bool):
                errors.append(f"{where}: disableResolveMessage must be a boolean")
            settings = receiver.get("settings")
            if not isinstance(settings, dict) or not settings:
                errors.append(f"{where}: settings must be a non-empty mapping")
                continue
            required, known = CONTACT_POINT_SETTINGS[kind]
            if set(settings) - known:
                errors.append(f"{where}: {kind} does not read {set(settings) - known}")
            if not any(keys <= set(settings) for keys in required):
                errors.append(f"{where}: {kind} needs one of {[sorted(k) for k in required]}")
            for key, value in settings.items():
                if isinstance(value, str) and not value.strip():
                    errors.append(f"{where}: {kind} setting {key} is empty")
    if len(uids) != len(set(uids)):
        errors.append(f"receiver uids are not unique: {uids}")
    return errors


def route_errors(route: Any, receivers: set[str], where: str, root: bool) -> list[str]:
    errors: list[str] = []
    if not isinstance(route, dict):
        return [f"{where}: a route is a mapping"]
    if set(route) - ROUTE_KEYS - ({"orgId"} if root else set()):
        errors.append(f"{where}: unknown keys {set(route) - ROUTE_KEYS}")
    receiver = route.get("receiver")
    if root and not receiver:
        errors.append(f"{where}: the root route must name a receiver")
    if receiver is not None and receiver not in receivers:
        errors.append(f"{where}: receiver {receiver!r} is no contact point ({sorted(receivers)})")
    if root:
        for key in ("matchers", "object_matchers", "match", "match_re", "mute_time_intervals",
                    "active_time_intervals"):
            if route.get(key):
                errors.append(f"{where}: the root route may not have {key}")
    group_by = route.get("group_by", [])
    if not isinstance(group_by, list) or not all(
            isinstance(g, str) and (g == "..." or LABEL_NAME.match(g)) for g in group_by):
        errors.append(f"{where}: group_by must be a list of label names")
    for key in ("group_wait", "group_interval", "repeat_interval"):
        if key in route and not (isinstance(route[key], str) and DURATION.match(route[key])):
            errors.append(f"{where}: {key} {route[key]!r} is not a duration")
    if not isinstance(route.get("continue", False), bool):
        errors.append(f"{where}: continue must be a boolean")
    for matcher in route.get("object_matchers", []):
        if not (isinstance(matcher, list) and len(matcher) == 3
                and all(isinstance(part, str) for part in matcher)):
            errors.append(f"{where}: object matcher {matcher!r} is not [name, type, value]")
            continue
        name, kind, value = matcher
        if not LABEL_NAME.match(name) or kind not in MATCH_TYPES:
            errors.append(f"{where}: object matcher {matcher!r}")
        if kind in {"=~", "!~"}:
            try:
                re.compile(value)
            except re.error as exc:
                errors.append(f"{where}: object matcher {matcher!r}: {exc}")
    for index, child in enumerate(route.get("routes", [])):
        errors += route_errors(child, receivers, f"{where}.routes[{index}]", root=False)
    return errors


def policy_errors(doc: Any, contact_points: set[str]) -> list[str]:
    if not isinstance(doc, dict) or doc.get("apiVersion") != 1:
        return ["apiVersion must be 1"]
    policies = doc.get("policies")
    if not isinstance(policies, list) or len(policies) != 1:
        return ["policies must hold exactly one tree (org 1)"]
    return route_errors(policies[0], contact_points | {GRAFANA_DEFAULT_CONTACT_POINT},
                        "policy", root=True)


# Grafana's rule file (docs: "Provision alert rules" in the file-provisioning page above;
# pkg/services/provisioning/alerting rules types: AlertRuleGroupV1, AlertRuleV1, QueryV1).
RULE_KEYS = frozenset({"uid", "title", "condition", "data", "dashboardUid", "panelId",
                       "noDataState", "execErrState", "for", "annotations", "labels",
                       "isPaused", "notification_settings", "keep_firing_for"})
RULE_REQUIRED = ("uid", "title", "condition", "data", "for")
QUERY_KEYS = frozenset({"refId", "datasourceUid", "model", "relativeTimeRange", "queryType"})
NO_DATA_STATES = frozenset({"NoData", "Alerting", "OK", "KeepLast"})
EXEC_ERR_STATES = frozenset({"Error", "Alerting", "OK", "KeepLast"})


def rule_file_errors(doc: Any) -> list[str]:
    errors: list[str] = []
    if not isinstance(doc, dict) or doc.get("apiVersion") != 1:
        return ["apiVersion must be 1"]
    if extra := set(doc) - {"apiVersion", "groups", "deleteRules"}:
        errors.append(f"unexpected top-level keys {extra}")
    uids: list[str] = []
    titles: list[tuple[Any, Any, Any]] = []
    group_names: list[tuple[Any, Any, Any]] = []
    for group in doc.get("groups", []):
        where = f"group {group.get('name')!r}"
        if extra := set(group) - {"orgId", "name", "folder", "interval", "rules"}:
            errors.append(f"{where}: unknown keys {extra}")
        for key in ("name", "folder"):
            if not isinstance(group.get(key), str) or not group[key].strip():
                errors.append(f"{where}: {key} is required")
        if not (isinstance(group.get("interval"), str) and DURATION.match(group["interval"])):
            errors.append(f"{where}: interval {group.get('interval')!r} is not a duration")
        org = group.get("orgId", 1)
        group_names.append((org, group.get("folder"), group.get("name")))
        rules = group.get("rules")
        if not isinstance(rules, list) or not rules:
            errors.append(f"{where}: rules must be a non-empty list")
            continue
        for rule in rules:
            at = f"{where} rule {rule.get('uid')!r}"
            if set(rule) - RULE_KEYS:
                errors.append(f"{at}: unknown keys {set(rule) - RULE_KEYS}")
            missing = [k for k in RULE_REQUIRED if k not in rule]
            if missing:
                errors.append(f"{at}: missing {missing}")
                continue
            if not isinstance(rule["uid"], str) or not UID.match(rule["uid"]):
                errors.append(f"{at}: uid is not a Grafana uid (at most 40 of [a-zA-Z0-9_-])")
            uids.append(rule["uid"])
            titles.append((org, group.get("folder"), rule["title"]))
            if not (isinstance(rule["for"], str) and DURATION.match(rule["for"])):
                errors.append(f"{at}: for {rule['for']!r} is not a duration")
            if rule.get("noDataState", "NoData") not in NO_DATA_STATES:
                errors.append(f"{at}: noDataState {rule['noDataState']!r}")
            if rule.get("execErrState", "Error") not in EXEC_ERR_STATES:
                errors.append(f"{at}: execErrState {rule['execErrState']!r}")
            for name, value in rule.get("labels", {}).items():
                if not LABEL_NAME.match(name) or not isinstance(value, str) or not value:
                    errors.append(f"{at}: label {name}={value!r}")
            refs = []
            for step in rule["data"]:
                if set(step) - QUERY_KEYS or not {"refId", "datasourceUid", "model"} <= set(step):
                    errors.append(f"{at}: query keys {sorted(step)}")
                    continue
                refs.append(step["refId"])
                if step["model"].get("refId", step["refId"]) != step["refId"]:
                    errors.append(f"{at}: model refId differs from {step['refId']}")
                if step["datasourceUid"] != "__expr__":
                    span = step.get("relativeTimeRange", {})
                    if not (isinstance(span.get("from"), int) and isinstance(span.get("to"), int)
                            and span["from"] > span["to"] >= 0):
                        errors.append(f"{at}: relativeTimeRange {span!r}")
            if rule["condition"] not in refs:
                errors.append(f"{at}: condition {rule['condition']!r} is none of {refs}")
    for kind, seen in (("uid", uids), ("title in a folder", titles),
                       ("group name in a folder", group_names)):
        if len(seen) != len(set(seen)):
            errors.append(f"{kind} not unique: {seen}")
    for delete in doc.get("deleteRules", []):
        if set(delete) != {"orgId", "uid"} or not UID.match(str(delete["uid"])):
            errors.append(f"deleteRules entry {delete!r}")
        elif delete["uid"] in uids:
            errors.append(f"deleteRules deletes the provisioned rule {delete['uid']}")
    return errors


# -- What Grafana does with the files ---------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z0-9_]+))")


def grafana_expand(value: Any, env: dict[str, str]) -> Any:
    """Grafana's provisioning interpolation (pkg/services/provisioning/values): every string
    in the structure split on `$$`, each part through os.ExpandEnv (unset: ""), joined with a
    literal `$`. One pass: an expanded value is not expanded again."""
    if isinstance(value, dict):
        return {k: grafana_expand(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [grafana_expand(v, env) for v in value]
    if isinstance(value, str):
        return "$".join(_VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), part)
                        for part in value.split("$$"))
    return value


def variables(value: Any) -> set[str]:
    """The environment variables Grafana would read to expand `value` (every string in it)."""
    if isinstance(value, dict):
        return set().union(*(variables(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(variables(v) for v in value))
    if isinstance(value, str):
        return {m.group(1) or m.group(2)
                for part in value.split("$$") for m in _VARIABLE.finditer(part)}
    return set()


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(docs, "Deployment")[DEPLOYMENT]["spec"]["template"]["spec"]["containers"][0]


def environment(docs: list[dict[str, Any]], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment as the kubelet would build it; a Secret or key that does
    not exist fails, as the pod would not start."""
    env: dict[str, str] = {}
    for var in container(docs)["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["name"] in secrets, f"{var['name']}: no Secret {ref['name']}"
        assert ref["key"] in secrets[ref["name"]], f"{var['name']}: no key {ref['key']}"
        env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def files(docs: list[dict[str, Any]]) -> dict[str, str]:
    return by_kind(docs, "ConfigMap")[CONFIGMAP]["data"]


def alerting_mounts(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {m["mountPath"]: m["subPath"] for m in container(docs)["volumeMounts"]
            if m["mountPath"].startswith(ALERTING_DIR)}


def notified(route: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """Alertmanager's routing: the matching child routes in order, on past a match only with
    `continue`; a route no child takes notifies its own receiver."""
    def matches(child: dict[str, Any]) -> bool:
        for name, kind, value in child.get("object_matchers", []):
            have = labels.get(name, "")
            ok = {"=": have == value, "!=": have != value,
                  "=~": re.fullmatch(value, have) is not None,
                  "!~": re.fullmatch(value, have) is None}[kind]
            if not ok:
                return False
        return True

    found: list[str] = []
    for child in route.get("routes", []):
        if matches(child):
            found += notified({"receiver": route["receiver"], **child}, labels)
            if not child.get("continue", False):
                break
    return found or [route["receiver"]]


def rule_severities(docs: list[dict[str, Any]]) -> dict[str, str]:
    rules = yaml.safe_load(files(docs)["alert-rules.yaml"])
    return {r["uid"]: r["labels"]["severity"] for g in rules["groups"] for r in g["rules"]}


@pytest.fixture(scope="module")
def grafana_chart(platform_chart: Path) -> Path:  # noqa: F811
    return platform_chart.parent / "grafana"


@pytest.fixture(scope="module")
def default_grafana(helm: Path, grafana_chart: Path,  # noqa: F811
                    tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(helm, grafana_chart, {}, tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def all_channels(helm: Path, grafana_chart: Path,  # noqa: F811
                 tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    # The chart's own admin Secret too: its generated password is a secret to keep out.
    values = {**ALL_CHANNELS, "admin": {"createSecret": True}}
    return render(helm, grafana_chart, values, tmp_path_factory.mktemp("all"))


# -- The checker itself: it must reject what Grafana rejects ----------------------------------

def test_the_format_checker_rejects_broken_documents(
    all_channels: list[dict[str, Any]],
) -> None:
    points = yaml.safe_load(files(all_channels)["contact-points.yaml"])
    policy = yaml.safe_load(files(all_channels)["notification-policies.yaml"])
    names = {p["name"] for p in points["contactPoints"]}
    assert contact_point_errors(points) == [] and policy_errors(policy, names) == []

    def broken_points(change: Any) -> list[str]:
        doc = copy.deepcopy(points)
        change(doc["contactPoints"])
        return contact_point_errors(doc)

    assert broken_points(lambda cps: cps[0]["receivers"][0].pop("uid"))
    assert broken_points(lambda cps: cps[0]["receivers"][0].update(type="sms"))
    assert broken_points(lambda cps: cps[1]["receivers"][0]["settings"].pop("url"))
    assert broken_points(lambda cps: cps[3]["receivers"][0]["settings"].update(routingKey="x"))
    assert broken_points(lambda cps: cps[1]["receivers"][0].update(uid=cps[0]["name"]))
    assert broken_points(lambda cps: cps[0].pop("name"))

    def broken_policy(change: Any) -> list[str]:
        doc = copy.deepcopy(policy)
        change(doc["policies"][0])
        return policy_errors(doc, names)

    assert broken_policy(lambda p: p.update(object_matchers=[["severity", "=", "critical"]]))
    assert broken_policy(lambda p: p["routes"][0].update(receiver="nobody"))
    assert broken_policy(lambda p: p["routes"][0].update(object_matchers=[["severity", "~"]]))
    assert broken_policy(lambda p: p.update(repeat_interval="4 hours"))
    assert broken_policy(lambda p: p.pop("receiver"))


# -- Alert rules: a copy per pipeline -------------------------------------------------------------

BASE_UIDS = ["energy-stale-data", "energy-forecast-consumption-high",
             "energy-forecast-error-high", "energy-readings-lost"]
LONG_SCHEMA = "a_pipeline_schema_name_too_long_for_a_uid"
PIPELINE_TABLES = {"readings", "hourly_features", "forecasts", "models", "ingest_lost_records"}


def test_the_rules_are_provisioned_once_per_pipeline(
    helm: Path, grafana_chart: Path, tmp_path: Path,  # noqa: F811
    default_grafana: list[dict[str, Any]],
) -> None:
    pipelines = ["energy", "other", LONG_SCHEMA]
    docs = render(helm, grafana_chart, {"pipelines": pipelines}, tmp_path)
    for rendered, expected in ((default_grafana, ["energy"]), (docs, pipelines)):
        rules = yaml.safe_load(files(rendered)["alert-rules.yaml"])
        assert rule_file_errors(rules) == []
        assert [g["name"] for g in rules["groups"]] == [f"energy-pipeline-{p}" for p in expected]
        # The rules' uids before copies: deleted, as Grafana keeps provisioned rules that
        # leave the file (and those read tables where no pipeline keeps them now).
        assert rules["deleteRules"] == [{"orgId": 1, "uid": uid} for uid in BASE_UIDS]
        for group, pipeline in zip(rules["groups"], expected, strict=True):
            assert group["folder"] == "Energy pipeline" and group["interval"] == "1m"
            assert [r["uid"].rsplit("-", 1)[0] for r in group["rules"]] == BASE_UIDS
            for rule in group["rules"]:
                # Notifications say which pipeline: the label, the title, the description.
                assert rule["labels"]["pipeline"] == pipeline
                assert rule["title"].endswith(f" ({pipeline})")
                assert f"pipeline {pipeline}" in rule["annotations"]["description"].lower()
                (query,) = [d for d in rule["data"] if d["datasourceUid"] == "energy-postgres"]
                sql = query["model"]["rawSql"]
                tables = re.findall(r'(?:FROM|JOIN)\s+("[^"]+"\.)?(\w+)', sql)
                read = [(prefix, name) for prefix, name in tables if name in PIPELINE_TABLES]
                assert read and all(prefix == f'"{pipeline}".' for prefix, _ in read), sql
                assert "__" not in json.dumps(rule).replace("__expr__", "")
    rules = yaml.safe_load(files(docs)["alert-rules.yaml"])
    uids = [r["uid"] for g in rules["groups"] for r in g["rules"]]
    assert uids[:4] == [f"{uid}-energy" for uid in BASE_UIDS]
    # A schema that does not fit a uid whole: a hash of it instead, still one per pipeline.
    assert all(len(uid) <= 40 and not uid.endswith(LONG_SCHEMA) for uid in uids[8:])
    assert len(set(uids)) == 12
    # The routing sees every copy (alertname is the title, pipeline a label of its own).
    assert set(rule_severities(docs).values()) == {"critical", "warning"}


def test_the_rule_checker_rejects_broken_rule_files(
    default_grafana: list[dict[str, Any]],
) -> None:
    rules = yaml.safe_load(files(default_grafana)["alert-rules.yaml"])

    def broken(change: Any) -> list[str]:
        doc = copy.deepcopy(rules)
        change(doc)
        return rule_file_errors(doc)

    first = rules["groups"][0]["rules"][0]["uid"]
    assert broken(lambda d: d["groups"][0]["rules"][1].update(uid=first))
    assert broken(lambda d: d["groups"][0]["rules"][0].update(uid="x" * 41))
    assert broken(lambda d: d["groups"][0]["rules"][0].update(condition="D"))
    assert broken(lambda d: d["groups"][0]["rules"][0].pop("for"))
    assert broken(lambda d: d["groups"].append(copy.deepcopy(d["groups"][0])))
    assert broken(lambda d: d["deleteRules"].append({"orgId": 1, "uid": first}))
    assert broken(lambda d: d["groups"][0]["rules"][0]["labels"].update({"pipe-line": "x"}))


# -- Nothing configured ------------------------------------------------------------------------

def test_nothing_configured_provisions_no_contact_point(
    default_grafana: list[dict[str, Any]],
) -> None:
    """Grafana keeps its own default policy and contact point; nothing for mail either."""
    assert set(files(default_grafana)) == {"datasources.yaml", "dashboards.yaml",
                                           "alert-rules.yaml"}
    assert alerting_mounts(default_grafana) == {
        f"{ALERTING_DIR}/energy-rules.yaml": "alert-rules.yaml"}
    names = {v["name"] for v in container(default_grafana)["env"]}
    assert not {n for n in names if n.startswith(("GF_SMTP_", "ENERGY_ALERT_"))}


def test_alerts_disabled_provision_no_contact_point_either(
    helm: Path, grafana_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    docs = render(helm, grafana_chart, {**ALL_CHANNELS, "alerts": {
        **ALL_CHANNELS["alerts"], "enabled": False}}, tmp_path)
    assert set(files(docs)) == {"datasources.yaml", "dashboards.yaml"}
    assert alerting_mounts(docs) == {}
    names = {v["name"] for v in container(docs)["env"]}
    assert not {n for n in names if n.startswith("ENERGY_ALERT_")}
    # The mail server is Grafana's, not only the alerts': still configured.
    assert "GF_SMTP_HOST" in names


# -- Each channel ------------------------------------------------------------------------------

EXPECTED_SETTINGS = {
    # After Grafana's interpolation over the environment made from SECRETS.
    "email": {"addresses": "oncall@example.com;ops$team@example.com", "singleEmail": False},
    "slack": {"url": SECRETS["alerting-slack"]["url"]},
    "webhook": {"url": SECRETS["alerting-hook"]["endpoint"], "httpMethod": "PUT"},
    "pagerduty": {"integrationKey": SECRETS["alerting-pagerduty"]["routing-key"],
                  "severity": "{{ .CommonLabels.severity }}"},
}


@pytest.mark.parametrize("channel", list(CHANNELS))
def test_each_channel_alone_is_a_documented_contact_point_with_its_secret(
    helm: Path, grafana_chart: Path, tmp_path: Path, channel: str,  # noqa: F811
) -> None:
    values: dict[str, Any] = {"alerts": {"contactPoints": {channel: CHANNELS[channel]}}}
    if channel == "email":
        values["smtp"] = SMTP
    docs = render(helm, grafana_chart, values, tmp_path)
    data = files(docs)
    points = yaml.safe_load(data["contact-points.yaml"])
    assert contact_point_errors(points) == []
    (point,) = points["contactPoints"]
    name = f"energy-pipeline-{channel}"
    assert point["name"] == name and point["orgId"] == 1
    (receiver,) = point["receivers"]
    assert (receiver["uid"], receiver["type"]) == (name, channel)
    settings = grafana_expand(receiver["settings"], environment(docs, SECRETS))
    assert settings == EXPECTED_SETTINGS[channel]

    policy = yaml.safe_load(data["notification-policies.yaml"])
    assert policy_errors(policy, {name}) == []
    tree = policy["policies"][0]
    assert tree["receiver"] == name
    # Both files where Grafana's alerting provisioning reads, beside the rules.
    assert alerting_mounts(docs) == {
        f"{ALERTING_DIR}/energy-rules.yaml": "alert-rules.yaml",
        f"{ALERTING_DIR}/energy-contact-points.yaml": "contact-points.yaml",
        f"{ALERTING_DIR}/energy-notification-policies.yaml": "notification-policies.yaml",
    }


def test_slack_with_a_bot_token_posts_to_its_recipient(
    helm: Path, grafana_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    slack = {"enabled": True, "secretName": "alerting-slack", "tokenKey": "bot-token",
             "recipient": "#energy-alerts"}
    docs = render(helm, grafana_chart, {"alerts": {"contactPoints": {"slack": slack}}},
                  tmp_path)
    points = yaml.safe_load(files(docs)["contact-points.yaml"])
    assert contact_point_errors(points) == []
    settings = points["contactPoints"][0]["receivers"][0]["settings"]
    assert grafana_expand(settings, environment(docs, SECRETS)) == {
        "token": SECRETS["alerting-slack"]["bot-token"], "recipient": "#energy-alerts"}


def test_the_mail_server_comes_from_smtp_and_its_password_from_the_secret(
    all_channels: list[dict[str, Any]],
) -> None:
    env = environment(all_channels, SECRETS)
    assert {k: v for k, v in env.items() if k.startswith("GF_SMTP_")} == {
        "GF_SMTP_ENABLED": "true",
        "GF_SMTP_HOST": "smtp.example.com:587",
        "GF_SMTP_FROM_ADDRESS": "grafana@example.com",
        "GF_SMTP_FROM_NAME": "energy-pipeline Grafana",
        "GF_SMTP_USER": "grafana",
        "GF_SMTP_PASSWORD": SECRETS["grafana-smtp"]["password"],
        # Secure by default: no mail in plain text, certificates checked.
        "GF_SMTP_STARTTLS_POLICY": "MandatoryStartTLS",
        "GF_SMTP_SKIP_VERIFY": "false",
    }
    password = next(v for v in container(all_channels)["env"] if v["name"] == "GF_SMTP_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "grafana-smtp", "key": "password"}


# -- All channels: the policy routes the rules' alerts ----------------------------------------

def test_the_default_policy_routes_critical_and_warning_to_the_contact_points(
    all_channels: list[dict[str, Any]],
) -> None:
    data = files(all_channels)
    points = yaml.safe_load(data["contact-points.yaml"])
    assert contact_point_errors(points) == []
    names = [p["name"] for p in points["contactPoints"]]
    assert names == [f"energy-pipeline-{c}" for c in CHANNELS]
    policy = yaml.safe_load(data["notification-policies.yaml"])
    assert policy_errors(policy, set(names)) == []
    tree = policy["policies"][0]
    assert (tree["orgId"], tree["group_by"], tree["group_wait"], tree["group_interval"],
            tree["repeat_interval"]) == (1, ["grafana_folder", "alertname"], "30s", "5m", "4h")

    # The rules label each alert critical or warning; every one reaches a person.
    severities = rule_severities(all_channels)
    assert set(severities.values()) == {"critical", "warning"}
    everyone = ["energy-pipeline-email", "energy-pipeline-slack", "energy-pipeline-webhook"]
    for uid, severity in severities.items():
        expected = everyone + (["energy-pipeline-pagerduty"] if severity == "critical" else [])
        assert notified(tree, {"alertname": uid, "severity": severity}) == expected, uid
    # An alert without either severity still goes somewhere: the root's receiver.
    assert notified(tree, {"alertname": "x", "severity": "info"}) == ["energy-pipeline-email"]
    assert notified(tree, {"alertname": "x"}) == ["energy-pipeline-email"]


def test_policy_settings_and_extra_routes_come_from_values(
    helm: Path, grafana_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    extra = {"receiver": GRAFANA_DEFAULT_CONTACT_POINT, "continue": False,
             "object_matchers": [["team", "=", "facilities"]]}
    values = {"alerts": {
        "contactPoints": {"slack": {**CHANNELS["slack"], "severities": ["critical"]},
                          "pagerduty": {**CHANNELS["pagerduty"],
                                        "severities": ["critical", "warning"]}},
        "notificationPolicy": {"receiver": "energy-pipeline-pagerduty",
                               "groupBy": ["alertname", "site_id"], "repeatInterval": "12h",
                               "extraRoutes": [extra]}}}
    docs = render(helm, grafana_chart, values, tmp_path)
    policy = yaml.safe_load(files(docs)["notification-policies.yaml"])
    names = {"energy-pipeline-slack", "energy-pipeline-pagerduty"}
    assert policy_errors(policy, names) == []
    tree = policy["policies"][0]
    assert (tree["receiver"], tree["group_by"], tree["repeat_interval"]) == (
        "energy-pipeline-pagerduty", ["alertname", "site_id"], "12h")
    assert tree["routes"][0] == extra
    assert notified(tree, {"severity": "critical", "team": "facilities"}) == [
        GRAFANA_DEFAULT_CONTACT_POINT]
    assert notified(tree, {"severity": "critical"}) == [
        "energy-pipeline-slack", "energy-pipeline-pagerduty"]
    assert notified(tree, {"severity": "warning"}) == ["energy-pipeline-pagerduty"]


# -- Secrets -----------------------------------------------------------------------------------

def test_no_secret_value_lands_in_a_configmap(all_channels: list[dict[str, Any]]) -> None:
    configmaps = yaml.safe_dump_all(list(by_kind(all_channels, "ConfigMap").values()))
    generated = [base64.b64decode(v).decode()
                 for s in by_kind(all_channels, "Secret").values()
                 for k, v in s.get("data", {}).items() if k != "admin-user"]
    assert generated  # the admin password the chart made
    for value in SENTINELS + generated:
        assert value not in configmaps
    # Yet each one reaches Grafana: through the environment, expanded as Grafana does.
    env = environment(all_channels, SECRETS)
    points = yaml.safe_load(files(all_channels)["contact-points.yaml"])
    expanded = yaml.safe_dump(grafana_expand(points, env))
    for value in (SECRETS["alerting-slack"]["url"], SECRETS["alerting-hook"]["endpoint"],
                  SECRETS["alerting-pagerduty"]["routing-key"]):
        assert value in expanded
    assert env["GF_SMTP_PASSWORD"] == SECRETS["grafana-smtp"]["password"]


def test_every_variable_a_file_uses_comes_from_a_secret(
    all_channels: list[dict[str, Any]],
) -> None:
    """Grafana expands an unset variable to "": a typo would silently blank a URL."""
    env_vars = {v["name"]: v for v in container(all_channels)["env"]}
    used = set()
    for name in ("contact-points.yaml", "notification-policies.yaml"):
        used |= variables(yaml.safe_load(files(all_channels)[name]))
    assert used == {"ENERGY_ALERT_SLACK_URL", "ENERGY_ALERT_WEBHOOK_URL",
                    "ENERGY_ALERT_PAGERDUTY_KEY"}
    for name in used:
        assert "value" not in env_vars[name], name
        assert env_vars[name]["valueFrom"]["secretKeyRef"]["name"] in SECRETS, name
    assert environment(all_channels, SECRETS)  # every referenced Secret and key exists


def test_a_changed_contact_point_restarts_grafana(
    helm: Path, grafana_chart: Path, tmp_path: Path,  # noqa: F811
    all_channels: list[dict[str, Any]],
) -> None:
    """Grafana provisions at start only: the pod template carries the files' checksum."""
    changed = copy.deepcopy(ALL_CHANNELS)
    changed["alerts"]["contactPoints"]["email"]["addresses"] = ["someone@example.com"]
    docs = render(helm, grafana_chart, changed, tmp_path)

    def checksum(d: list[dict[str, Any]]) -> str:
        return by_kind(d, "Deployment")[DEPLOYMENT]["spec"]["template"]["metadata"][
            "annotations"]["checksum/provisioning"]

    assert checksum(docs) != checksum(all_channels)


# -- Values that cannot work ---------------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    ({"alerts": {"contactPoints": {"slack": {"enabled": True}}}},
     "alerts.contactPoints.slack.enabled needs alerts.contactPoints.slack.secretName"),
    ({"alerts": {"contactPoints": {"webhook": {"enabled": True}}}},
     "alerts.contactPoints.webhook.enabled needs alerts.contactPoints.webhook.secretName"),
    ({"alerts": {"contactPoints": {"pagerduty": {"enabled": True}}}},
     "alerts.contactPoints.pagerduty.enabled needs alerts.contactPoints.pagerduty.secretName"),
    ({"alerts": {"contactPoints": {"slack": {"enabled": True, "secretName": "s",
                                             "tokenKey": "token"}}}},
     "needs alerts.contactPoints.slack.recipient"),
    ({"alerts": {"contactPoints": {"email": {"enabled": True}}}, "smtp": SMTP},
     "alerts.contactPoints.email.enabled needs alerts.contactPoints.email.addresses"),
    ({"alerts": {"contactPoints": {"email": CHANNELS["email"]}}},
     "alerts.contactPoints.email.enabled needs smtp.host"),
    ({"alerts": {"contactPoints": {"pagerduty": {**CHANNELS["pagerduty"], "severities": []}}}},
     "alerts.contactPoints.pagerduty.severities is empty"),
    ({"smtp": {**SMTP, "host": "smtp.example.com"}}, "needs a port"),
    ({"smtp": {**SMTP, "fromAddress": ""}}, "smtp.host needs smtp.fromAddress"),
    ({"smtp": {**SMTP, "passwordSecret": {"name": "", "key": "password"}}},
     "smtp.user needs smtp.passwordSecret.name"),
    ({"smtp": {**SMTP, "user": ""}}, "smtp.passwordSecret.name needs smtp.user"),
    ({"pipelines": []}, "pipelines must name at least one pipeline's PostgreSQL schema"),
    ({"pipelines": "energy"}, "pipelines must be a list of PostgreSQL schema names"),
    ({"pipelines": ["energy", "Other"]}, 'pipelines: "Other" is not a schema name'),
    ({"pipelines": ["energy-two"]}, 'pipelines: "energy-two" is not a schema name'),
    ({"pipelines": ["x" * 64]}, "is not a schema name"),
    ({"pipelines": ["energy", "other", "energy"]}, "pipelines names a schema twice"),
    # The dashboards need it too, with the alert rules off.
    ({"pipelines": [], "alerts": {"enabled": False}}, "pipelines must name at least one"),
])
def test_inconsistent_values_fail_with_a_clear_message(
    helm: Path, grafana_chart: Path, tmp_path: Path,  # noqa: F811
    values: dict[str, Any], message: str,
) -> None:
    assert message in template_error(helm, grafana_chart, values, tmp_path)


def test_the_platform_schema_checks_the_alerting_values(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    error = template_error(helm, platform_chart, {"grafana": {
        "alerts": {"contactPoints": {"slak": {"enabled": True}}},
        "smtp": {"host": "smtp.example.com", "startTLSPolicy": "Sometimes"}}}, tmp_path)
    assert "slak" in error and "/grafana/smtp/host" in error and "startTLSPolicy" in error


# -- Storage ---------------------------------------------------------------------------------------

def storage_volume(docs: list[dict[str, Any]]) -> dict[str, Any]:
    volumes = by_kind(docs, "Deployment")[DEPLOYMENT]["spec"]["template"]["spec"]["volumes"]
    return next(v for v in volumes if v["name"] == "storage")


def test_grafanas_state_is_on_a_claim_by_default(default_grafana: list[dict[str, Any]]) -> None:
    claim = by_kind(default_grafana, "PersistentVolumeClaim")["energy-grafana"]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert claim["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in claim  # the cluster's default StorageClass
    assert storage_volume(default_grafana) == {
        "name": "storage", "persistentVolumeClaim": {"claimName": "energy-grafana"}}
    mounts = {m["name"]: m["mountPath"] for m in container(default_grafana)["volumeMounts"]}
    assert mounts["storage"] == "/var/lib/grafana"
    # A ReadWriteOnce claim: the old pod lets go of it before the new one starts.
    deployment = by_kind(default_grafana, "Deployment")[DEPLOYMENT]["spec"]
    assert deployment["strategy"] == {"type": "Recreate"} and deployment["replicas"] == 1


def test_storage_class_existing_claim_and_emptydir(
    helm: Path, grafana_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    docs = render(helm, grafana_chart, {"persistence": {"storageClass": "fast-ssd",
                                                        "size": "5Gi"}}, tmp_path)
    claim = by_kind(docs, "PersistentVolumeClaim")["energy-grafana"]["spec"]
    assert (claim["storageClassName"], claim["resources"]["requests"]["storage"]) == (
        "fast-ssd", "5Gi")

    docs = render(helm, grafana_chart, {"persistence": {"existingClaim": "my-grafana"}},
                  tmp_path)
    assert by_kind(docs, "PersistentVolumeClaim") == {}
    assert storage_volume(docs)["persistentVolumeClaim"] == {"claimName": "my-grafana"}

    docs = render(helm, grafana_chart, {"persistence": {"enabled": False}}, tmp_path)
    assert by_kind(docs, "PersistentVolumeClaim") == {}
    assert storage_volume(docs) == {"name": "storage", "emptyDir": {}}


def test_the_platform_chart_gives_grafana_its_claim_and_passes_alerting_values(
    helm: Path, platform_chart: Path, tmp_path: Path,  # noqa: F811
) -> None:
    docs = render(helm, platform_chart, None, tmp_path)
    assert "energy-grafana" in by_kind(docs, "PersistentVolumeClaim")
    assert "contact-points.yaml" not in files(docs)

    values = {"grafana": ALL_CHANNELS}
    for chart, chart_values in ((platform_chart, values),
                                (platform_chart.parent / "grafana", ALL_CHANNELS)):
        path = tmp_path / f"{chart.name}-alerting.yaml"
        path.write_text(yaml.safe_dump(chart_values))
        out = run_helm(helm, "lint", "--strict", str(chart), "--values", str(path))
        assert "1 chart(s) linted, 0 chart(s) failed" in out
    docs = render(helm, platform_chart, values, tmp_path)
    points = yaml.safe_load(files(docs)["contact-points.yaml"])
    assert contact_point_errors(points) == []
    assert len(points["contactPoints"]) == 4
    assert environment(docs, SECRETS)

