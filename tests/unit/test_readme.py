"""README.md stays true: every environment variable a worker reads is documented there, its
recipes (the blocks tests run) say what the code does, and `helm install` is never shown
without `helm dependency build`."""

from __future__ import annotations

import dataclasses
import inspect
import re
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from energy_harness import demo, generate
from energy_harness.localstack.stack import LocalStack
from energy_harness.node_platform import readme_commands
from energy_harness.readme_blocks import command_lines, recipe_blocks, recipe_names
from energy_pipeline.cli import build_parser
from energy_pipeline.core.contracts import MIN_TRAIN_HOURS
from energy_pipeline.simulation.commands import config_from_args

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"


def settings_variables() -> set[str]:
    """Every variable of every settings dataclass in the runtime package (the generator's walk)."""
    return {f.metadata["env"] for cls in generate.settings_classes()
            for f in dataclasses.fields(cls) if "env" in f.metadata}


def test_every_worker_environment_variable_is_in_the_readme() -> None:
    # In the configuration reference itself, not merely somewhere in the README.
    text = README.read_text().split(generate.SETTINGS_START)[1].split(generate.SETTINGS_END)[0]
    variables = settings_variables()
    assert "KAFKA_BOOTSTRAP_SERVERS" in variables  # the walk found the settings at all
    missing = sorted(v for v in variables if f"| `{v}` |" not in text)
    assert not missing, f"README.md does not document {missing}"


def test_readme_gives_the_test_command() -> None:
    assert "make test" in README.read_text()


# -- "Run it by hand": the recipe the e2e test runs ------------------------------------------

def by_hand_lines() -> list[str]:
    return [line for block in recipe_blocks("by-hand") for line in command_lines(block)]


def first_line(lines: list[str], *words: str) -> int:
    found = [i for i, line in enumerate(lines) if all(w in line for w in words)]
    assert found, f"the by-hand recipe has no line with {words}"
    return found[0]


def test_the_by_hand_recipe_runs_backfill_train_inference_then_ingest_with_a_target() -> None:
    lines = by_hand_lines()
    order = [
        first_line(lines, "energy-pipeline stack up", "&"),
        first_line(lines, "energy-pipeline migrate"),
        first_line(lines, "energy-pipeline topics create"),
        first_line(lines, "energy-pipeline bridge", "&"),
        first_line(lines, "energy-pipeline ingest", "&"),
        first_line(lines, "energy-pipeline simulate"),
        first_line(lines, "energy-pipeline train"),
        first_line(lines, "energy-pipeline inference", "&"),
        first_line(lines, "INFERENCE_TARGET=", "energy-pipeline ingest", "&"),
        first_line(lines, "energy-pipeline api", "&"),
        first_line(lines, "curl", "/forecasts"),
        first_line(lines, "energy-pipeline backtest"),
        first_line(lines, "kill $STACK"),
    ]
    assert order == sorted(order), [lines[i] for i in order]
    # Every worker started in the background is stopped by the last block.
    started = {line.split("=")[0] for line in lines if line.endswith("=$!")}
    assert started == {"STACK", "BRIDGE", "INGEST", "INFERENCE", "API"}
    stop = recipe_blocks("by-hand")[-1]
    assert all(f"${name}" in stop for name in started), stop


def test_the_recipes_waits_count_what_its_simulator_runs_publish() -> None:
    """`wait_for '[ "$(stored)" -eq N ]'` after each simulate: N is every reading so far,
    and the first run covers the history the default model needs."""
    lines = by_hand_lines()
    published, hours = 0, []
    for i, line in enumerate(lines):
        if line.startswith("energy-pipeline simulate"):
            config = config_from_args(build_parser().parse_args(shlex.split(line)[1:]),
                                      datetime.now(UTC))
            published += config.steps * config.sites * len(config.sensors) * config.devices
            hours.append(config.steps * config.interval / timedelta(hours=1))
            wait = next(w for w in lines[i + 1:] if "$(stored)" in w and "wait_for" in w)
            assert wait.split("-eq ")[1].split()[0].rstrip("]'") == str(published), wait
    assert hours and hours[0] >= MIN_TRAIN_HOURS, hours


def test_the_readme_says_which_mqtt_broker_each_local_command_runs() -> None:
    text = README.read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| `make ")}
    assert "Mosquitto" in rows["`make stack` (`energy-pipeline stack up`), and so this section"]
    assert "HiveMQ" in rows["`make demo` (`energy-pipeline demo`)"]
    assert "HiveMQ" in rows["`make test`"] and "Mosquitto" in rows["`make test`"]
    # ... and that is what they run.
    assert LocalStack.__dataclass_fields__["mqtt"].type == "MosquittoBroker"
    assert "HiveMQBroker(" in inspect.getsource(demo.run)


def markdown_files() -> list[Path]:
    root = README.parent
    return [root / name for name in ("README.md", "charts/README.md", "manifests/README.md")
            if (root / name).exists()]


def test_every_helm_install_shown_builds_the_chart_dependencies_first() -> None:
    shown = 0
    for path in markdown_files():
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", path.read_text(), re.S):
            lines = command_lines(block)
            for i, line in enumerate(lines):
                words = line.split()
                if "helm" not in words or not {"install", "--install"} & set(words):
                    continue
                shown += 1
                chart = next(w for w in words if w.startswith("charts/"))
                assert any(f"helm dependency build {chart}" in earlier for earlier in lines[:i]), (
                    f"{path.name}: `{line}` without `helm dependency build {chart}` before it"
                )
    assert shown >= 2


def test_recipe_blocks_are_found_by_their_marker_only(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\n```bash\nnot-marked\n```\n\n<!-- recipe: one -->\n```bash\nfirst\n# note\n```\n"
        "\ntext\n\n<!-- recipe: two -->\n\n```sh\nother\n```\n<!-- recipe: one -->\n"
        "```bash\nsecond\n```\n"
    )
    assert recipe_blocks("one", readme) == ["first\n# note\n", "second\n"]
    assert recipe_blocks("two", readme) == ["other\n"]
    assert recipe_names(readme) == ["one", "two"]
    assert command_lines("first\n\n  # note\nsecond # why\n") == ["first", "second # why"]
    with pytest.raises(ValueError, match="no block marked"):
        recipe_blocks("three", readme)
    readme.write_text("<!-- recipe: one -->\nSome text.\n\n```bash\nx\n```\n")
    with pytest.raises(ValueError, match="not followed by a fenced block"):
        recipe_blocks("one", readme)
    readme.write_text("<!-- recipe: one -->\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="not a shell block"):
        recipe_blocks("one", readme)


def test_the_node_tests_read_the_own_cluster_recipe() -> None:
    commands = readme_commands()
    assert commands[0].startswith("helm dependency build charts/energy-platform")
    assert any(c.startswith("helm install ") for c in commands)


def test_the_ports_the_readme_gives_are_the_workers_defaults() -> None:
    """The by-hand table (and so the recipe's curls) against each command's settings."""
    defaults: dict[tuple[str, str], object] = {}
    for cls in generate.settings_classes():
        for command in generate.USED_BY.get(f"{cls.__module__}.{cls.__qualname__}", ()):
            for f in dataclasses.fields(cls):
                if f.metadata.get("env", "").endswith("_PORT"):
                    defaults[(command, f.metadata["env"])] = f.default
    table = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`(bridge|ingest|inference|api)`", cells[0]):
            command = cells[0].strip("`")
            table[(command, "HTTP_PORT")] = int(cells[1])
            for variable, port in re.findall(r"`(\w+_PORT)` (\d+)", cells[2]):
                table[(command, variable)] = int(port)
    assert set(table) == {("bridge", "HTTP_PORT"), ("ingest", "HTTP_PORT"),
                          ("inference", "HTTP_PORT"), ("inference", "GRPC_PORT"),
                          ("api", "HTTP_PORT"), ("api", "API_PORT")}
    assert table == {key: defaults[key] for key in table}
    assert len(set(table.values())) == len(table)  # side by side on one machine
    recipe = "\n".join(recipe_blocks("by-hand"))
    for (command, variable), port in table.items():
        if variable != "GRPC_PORT":
            assert f"127.0.0.1:{port}/" in recipe, (command, variable, port)
    assert f"INFERENCE_TARGET=127.0.0.1:{table[('inference', 'GRPC_PORT')]}" in recipe
