"""`make up` / `make down` (deploy/up.sh, deploy/down.sh) without Docker or kind.

Here there is no Docker engine and no kind, so up.sh must stop at once and say what is
missing. The rest is checked with stand-ins for docker, kind, kubectl and helm that only
record how they were called: the order of the steps, their arguments, and that a second run
reuses the cluster (idempotence).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
UP = ROOT / "deploy" / "up.sh"
DOWN = ROOT / "deploy" / "down.sh"


def test_scripts_parse() -> None:
    for script in (UP, DOWN):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_up_stops_at_once_naming_what_is_missing(tmp_path: Path) -> None:
    # Only the basic tools on PATH: no docker, kind, kubectl or helm.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "grep", "cat", "printf"):
        target = next(Path(p) / tool for p in ("/usr/bin", "/bin") if (Path(p) / tool).exists())
        (bin_dir / tool).symlink_to(target)
    result = subprocess.run(
        ["/bin/bash", str(UP)], capture_output=True, text=True, timeout=30,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
    )
    assert result.returncode == 1
    for name in ("docker", "kind", "kubectl", "helm", "make demo"):
        assert name in result.stderr
    assert result.stdout == ""


STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$STUB_LOG"
case "$(basename "$0") $*" in
  "kind get clusters") [ -f "$STUB_STATE/cluster" ] && echo energy-pipeline ;;
  "kind create "*) touch "$STUB_STATE/cluster" ;;
  "kubectl "*"get secret"*) printf 'c2VjcmV0' ;;
esac
exit 0
"""


def run_up(tmp_path: Path) -> list[str]:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    for tool in ("docker", "kind", "kubectl", "helm"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    result = subprocess.run(
        ["bash", str(UP)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
             "STUB_LOG": str(log), "STUB_STATE": str(state)},
    )
    assert result.returncode == 0, result.stderr
    assert "http://localhost:8080/" in result.stdout and "admin / secret" in result.stdout
    return log.read_text().splitlines()


def test_up_runs_the_steps_in_order_and_is_idempotent(tmp_path: Path) -> None:
    first = run_up(tmp_path)
    steps = [c for c in first if not c.startswith(("docker info", "kind get"))]
    assert steps[0] == (
        f"kind create cluster --name energy-pipeline --config {ROOT}/kind-config.yaml --wait 180s"
    )
    assert steps[1].startswith("kubectl --context kind-energy-pipeline apply -f https://")
    assert "ingress-nginx" in steps[1] and "/provider/kind/deploy.yaml" in steps[1]
    assert steps[2].startswith("kubectl --context kind-energy-pipeline -n ingress-nginx wait")
    assert steps[3] == f"docker build --tag ghcr.io/energy-pipeline/energy-pipeline:0.1.0 {ROOT}"
    assert steps[4] == (
        "kind load docker-image ghcr.io/energy-pipeline/energy-pipeline:0.1.0 "
        "--name energy-pipeline"
    )
    assert steps[5] == f"helm dependency build {ROOT}/charts/energy-platform"
    assert steps[6].startswith(
        f"helm --kube-context kind-energy-pipeline upgrade --install energy "
        f"{ROOT}/charts/energy-platform --namespace energy --create-namespace"
    )
    assert "--wait" in steps[6] and f"--values {ROOT}/deploy/values-kind.yaml" in steps[6]
    assert steps[7].startswith(
        "kubectl --context kind-energy-pipeline -n energy wait energypipeline/energy "
        "--for=condition=Ready"
    )
    # Second run: the cluster is reused, everything else converges (apply, upgrade --install).
    second = run_up(tmp_path)
    assert not [c for c in second if c.startswith("kind create")]
    assert [c for c in second if c.startswith("helm --kube-context")] == [steps[6]]


def test_kind_config_matches_what_up_expects() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    roles = [n["role"] for n in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker", "worker"]
    control = config["nodes"][0]
    assert "ingress-ready=true" in control["kubeadmConfigPatches"][0]
    ports = {(m["containerPort"], m["hostPort"]) for m in control["extraPortMappings"]}
    assert ports == {(80, 8080), (443, 8443)}


def test_dockerfile_runs_as_non_root_without_build_tools() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = text.split("\nFROM ")
    final = stages[-1]
    assert "python:3.11-slim" in text
    assert "USER 10001:10001" in final
    assert 'ENTRYPOINT ["energy-pipeline"]' in final
    for tool in ("gcc", "build-essential", "make ", "git"):
        assert tool not in final
    # The operator chart runs the image as the same user.
    values = yaml.safe_load((ROOT / "charts" / "energy-operator" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 10001
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "charts"} <= set(ignored)
