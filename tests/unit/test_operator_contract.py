"""The operator and the workers agree on every setting name.

For each worker the operator renders, the environment variable names of its container are
compared with the settings dataclass(es) of the command it runs (found through the CLI, so
a new or renamed worker setting is caught here before any cluster sees it).
"""

from __future__ import annotations

import dataclasses
import sys

import pytest
from energy_operator import render
from energy_pipeline.cli import build_parser
from energy_pipeline.core.settings import CommonSettings, describe

pytestmark = pytest.mark.unit

SPEC = {
    "mqtt": {"host": "m", "credentialsSecret": {"name": "mqtt"}},
    "kafka": {"bootstrapServers": "k:9092", "securityProtocol": "SASL_SSL",
              "sasl": {"credentialsSecret": {"name": "kafka"}}},
    "database": {"urlSecret": {"name": "db"}, "caSecret": {"name": "db-tls"}},
    "api": {"enabled": True},
}


def settings_of(command: str) -> dict[str, str]:
    """{ENV: default} of the settings classes in the module implementing `command`."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if command not in sub.choices:  # type: ignore[operator]
        pytest.fail(f"energy-pipeline {command} does not exist")
    func = sub.choices[command].get_default("func")  # type: ignore[index]
    module = sys.modules[func.__module__]
    rows: dict[str, str] = {}
    for value in vars(module).values():
        if (isinstance(value, type) and dataclasses.is_dataclass(value)
                and issubclass(value, CommonSettings)):
            rows.update({name: default for name, default, _ in describe(value)})
    assert rows, f"no settings dataclass found beside energy-pipeline {command}"
    return rows


def rendered_env(worker: str) -> set[str]:
    objs = {(o["kind"], o["metadata"]["name"]): o
            for o in render.render_children("p", "ns", SPEC)}
    if worker == "train":
        pod = objs[("CronJob", "p-train")]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        pod = objs[("Deployment", f"p-{worker}")]["spec"]["template"]["spec"]
    return {e["name"] for e in pod["containers"][0]["env"]}


@pytest.mark.parametrize("worker", ["bridge", "ingest", "inference", "train", "api"])
def test_every_rendered_variable_is_a_setting_of_the_worker(worker: str) -> None:
    known = settings_of(worker)
    unknown = rendered_env(worker) - set(known)
    assert not unknown, f"{worker} does not read {sorted(unknown)}"


@pytest.mark.parametrize("worker", ["bridge", "ingest", "inference", "train", "api"])
def test_every_required_setting_is_rendered(worker: str) -> None:
    required = {name for name, default in settings_of(worker).items()
                if default == "(required)"}
    assert required <= rendered_env(worker)
