"""Every generated file is what its source makes today (`python -m energy_harness.generate`).

One check covers them all: the CRD in manifests/ and its copy in the operator chart, the RBAC
in manifests/ and in the chart, the README reference tables (the EnergyPipeline spec, the
workers' environment variables, spec field to variable), the gRPC stubs and the Grafana
dashboards. The RBAC tests here also read the generated YAML back, so a fault in rendering
cannot hide behind a file that merely matches its own renderer.
"""

from __future__ import annotations

import importlib
import inspect
import re
import shutil
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml
from energy_harness import generate
from energy_operator import crd, rbac
from energy_pipeline.core.settings import env

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "manifests" / "crd" / f"{crd.CRD_NAME}.yaml"
CRD_IN_CHART = REPO / "charts" / "energy-operator" / "crds" / CRD_FILE.name
RBAC_FILE = REPO / "manifests" / "rbac.yaml"
RBAC_IN_CHART = REPO / "charts" / "energy-operator" / "templates" / "rbac.yaml"
README_BLOCKS = ("README.md", "manifests/README.md")


def test_every_generated_file_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [t.path for t in generate.targets()]
    # What the check covers (each once): the files the separate staleness tests used to check.
    assert len(paths) == len(set(paths))
    for path in (CRD_FILE, CRD_IN_CHART, RBAC_FILE, RBAC_IN_CHART):
        assert path.relative_to(REPO).as_posix() in paths
    assert set(README_BLOCKS) <= set(paths)
    assert [p for p in paths if p.startswith("workers/energy_pipeline/proto/")]
    assert [p for p in paths if p.startswith("charts/grafana/dashboards/")]

    status = generate.main(["--check"])
    assert status == 0, capsys.readouterr().err


def test_crd_file_is_generated_from_the_schema() -> None:
    assert CRD_FILE.read_text() == crd.to_yaml(crd.crd_manifest()), (
        f"manifests/crd is stale: run `{generate.COMMAND}`"
    )


def test_crd_in_operator_chart_is_identical_to_the_manifest() -> None:
    assert CRD_IN_CHART.read_bytes() == CRD_FILE.read_bytes(), f"run `{generate.COMMAND}`"


def test_check_names_each_stale_file_and_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A checkout with the README blocks' markers but none of the generated files yet.
    for name in README_BLOCKS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    assert generate.main(["--check"], root=tmp_path) == 1
    err = capsys.readouterr().err
    for target in generate.targets():
        if target.path not in README_BLOCKS:  # copied fresh
            assert f"stale: {target.path} (from {target.source})" in err
    assert generate.COMMAND in err

    assert generate.main([], root=tmp_path) == 0
    for target in generate.targets():
        assert (tmp_path / target.path).read_text() == (REPO / target.path).read_text()
    assert generate.stale(tmp_path) == []

    # One edit by hand makes exactly that file stale.
    rbac_copy = tmp_path / "charts" / "energy-operator" / "templates" / "rbac.yaml"
    rbac_copy.write_text(rbac_copy.read_text().replace("verbs: [get]", "verbs: [get, list]"))
    assert [t.path for t in generate.stale(tmp_path)] == [
        "charts/energy-operator/templates/rbac.yaml"
    ]


# ---- RBAC: both files grant exactly the rules of energy_operator.rbac ----------------------


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def _chart_rbac_docs() -> list[dict[str, Any]]:
    """The chart template read as YAML: Helm's actions dropped or replaced by a name."""
    lines = [
        line for line in RBAC_IN_CHART.read_text().splitlines()
        if not re.fullmatch(r"\s*\{\{-?[^}]*\}\}\s*", line)
    ]
    text = re.sub(r"\{\{[^}]*\}\}", "release", "\n".join(lines))
    return [d for d in yaml.safe_load_all(text) if d]


def test_every_rule_says_why_it_is_needed() -> None:
    for rule in (*rbac.CLUSTER_RULES, *rbac.LEADER_ELECTION_RULES):
        assert len(rule.why) > 10 and rule.verbs and rule.resources, rule
    assert rbac.LEASE_NAME == "energy-operator"


def test_manifest_grants_exactly_the_operator_rules() -> None:
    docs = _by_kind([d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d])
    assert set(docs) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                         "RoleBinding"}
    assert docs["ClusterRole"]["rules"] == [r.manifest() for r in rbac.CLUSTER_RULES]
    assert docs["Role"]["rules"] == [r.manifest() for r in rbac.LEADER_ELECTION_RULES]
    account = {"kind": "ServiceAccount", "name": rbac.NAME, "namespace": rbac.NAMESPACE}
    assert docs["ServiceAccount"]["metadata"]["name"] == rbac.NAME
    assert docs["ServiceAccount"]["metadata"]["namespace"] == rbac.NAMESPACE
    for binding, role in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        assert docs[binding]["subjects"] == [account]
        assert docs[binding]["roleRef"]["name"] == docs[role]["metadata"]["name"]
    assert docs["Role"]["metadata"]["namespace"] == rbac.NAMESPACE


def test_chart_grants_exactly_what_the_manifest_grants() -> None:
    """Cluster-wide, the namespaced mode's Role per watched namespace and the leader-election
    Role: the first two with exactly the manifest's ClusterRole rules."""
    docs = _chart_rbac_docs()
    manifest = _by_kind([d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d])
    assert [d["kind"] for d in docs] == ["ClusterRole", "ClusterRoleBinding", "Role",
                                         "RoleBinding", "Role", "RoleBinding"]
    cluster_role, _, namespaced_role, _, leader, _ = docs
    assert cluster_role["rules"] == manifest["ClusterRole"]["rules"]
    assert namespaced_role["rules"] == manifest["ClusterRole"]["rules"]
    # The chart's Lease is the release's (a template expression here).
    names = [r.pop("resourceNames", None) for r in leader["rules"]]
    assert names == [None, ["release"]]
    assert leader["rules"] == [{k: v for k, v in r.items() if k != "resourceNames"}
                               for r in manifest["Role"]["rules"]]
    assert RBAC_IN_CHART.read_text().startswith("{{- if .Values.rbac.create }}\n")


# ---- README.md: the workers' environment variables, from their settings dataclasses --------


@dataclass(frozen=True, kw_only=True)
class _Shared:
    url: str = env("X_URL", doc="where | how")


@dataclass(frozen=True, kw_only=True)
class _One(_Shared):
    wait_s: float = env("X_WAIT_S", 10.0, doc="seconds")
    name: str = env("X_NAME", "", doc="a name (empty: none)")


@dataclass(frozen=True, kw_only=True)
class _Two(_Shared):
    url: str = env("X_URL", doc="where | how")  # redefined alike: still one row
    on: bool = env("X_ON", True, doc="switch")


@dataclass(frozen=True, kw_only=True)
class _Disagrees(_Shared):
    other: float = env("X_WAIT_S", 10.0, doc="seconds to wait")


def _name(cls: type) -> str:
    return generate.qualified_name(cls)


def test_settings_table_rows_defaults_and_readers() -> None:
    used_by = {_name(_Shared): (), _name(_One): ("one",), _name(_Two): ("two",)}
    assert generate.settings_table([_Two, _One, _Shared], used_by) == (
        "| variable | default | used by | meaning |\n"
        "|---|---|---|---|\n"
        "| `X_URL` | (required) | all | where \\| how |\n"
        "| `X_WAIT_S` | `10` | one | seconds |\n"
        "| `X_NAME` | (empty) | one | a name (empty: none) |\n"
        "| `X_ON` | `true` | two | switch |\n"
    )


def test_settings_table_refuses_what_it_cannot_tell() -> None:
    used_by = {_name(_Shared): (), _name(_One): ("one",)}
    with pytest.raises(ValueError, match=re.escape(_name(_Two)) + ".*not in USED_BY"):
        generate.settings_table([_Shared, _One, _Two], used_by)
    with pytest.raises(ValueError, match=re.escape(_name(_Two)) + ", not found"):
        generate.settings_table([_Shared, _One], {**used_by, _name(_Two): ("two",)})
    with pytest.raises(ValueError, match="X_URL: no command"):
        generate.settings_table([_Shared], {_name(_Shared): ()})
    # One row per variable: two classes may not give it different meanings (a default of
    # its own per command is fine: HTTP_PORT).
    with pytest.raises(ValueError, match=f"X_WAIT_S: {re.escape(_name(_One))}.*"
                       f"{re.escape(_name(_Disagrees))}"):
        generate.settings_table([_Shared, _One, _Disagrees],
                                {**used_by, _name(_Disagrees): ("three",)})


def test_used_by_names_what_each_command_loads() -> None:
    """USED_BY by hand, checked against the commands' entry points and their load() calls."""
    loads = {}  # runtime command -> settings class names its module passes to load()
    for point in entry_points(group="energy_pipeline.commands"):
        if point.module.startswith("energy_pipeline."):
            source = inspect.getsource(importlib.import_module(point.module))
            loads[point.name] = set(re.findall(r"\bload\((\w+)\)", source))
    assert {"bridge", "ingest", "api"} <= set(loads)
    mapped = {command for commands in generate.USED_BY.values() for command in commands}
    # Every command that reads settings is in the table, and only those.
    assert mapped == {command for command, classes in loads.items() if classes}
    for name, commands in generate.USED_BY.items():
        for command in commands:
            assert name.rsplit(".", 1)[1] in loads[command], (name, command)
