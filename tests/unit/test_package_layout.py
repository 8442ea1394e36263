"""The package layout holds: layers import only downward, no cycles, the harness stays out.

The import graph is read from the source (every `import`, at module level or inside a
function, since a lazy import is still a dependency), not from a running interpreter.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SOURCES = {
    "energy_pipeline": REPO / "workers",
    "energy_operator": REPO / "operator",
    "energy_harness": REPO / "harness",
}
# Lowest first. A module may import its own layer or a lower one, never a higher one.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("energy_pipeline.proto", "energy_pipeline.core"),
    ("energy_pipeline.db",),
    ("energy_pipeline.forecasting",),
    ("energy_pipeline.inference",),
    ("energy_pipeline.dataplane",),
    ("energy_pipeline.simulation", "energy_pipeline.api"),
    ("energy_pipeline.cli", "energy_pipeline"),
    ("energy_operator",),
    ("energy_harness",),
)
HEAVY = ("lightgbm", "scipy", "matplotlib", "sklearn", "pandas")


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, root in SOURCES.items():
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (a package counts as its __init__)."""
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    for module, path in known.items():
        graph[module]
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                resolved = resolve(target)
                if resolved and resolved != module:
                    graph[module].add(resolved)
    return graph


def layer_of(module: str) -> int:
    best = (-1, -1)  # (length of the matching prefix, layer)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), index)
    assert best[1] >= 0, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def unit_of(module: str) -> str:
    """The package a module belongs to for the cycle check: a layer prefix."""
    return max(
        (p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")),
        key=len,
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_known_edges() -> None:
    """Guards the reader itself: a parser that found nothing would pass every check below."""
    graph = import_graph()
    assert "energy_pipeline.core.contracts" in graph["energy_pipeline.dataplane.bridge"]
    assert "energy_pipeline.core.settings" in graph["energy_operator.command"]
    assert "energy_harness.localstack.process" in graph["energy_harness.localstack.kafka"]


def test_every_import_points_down_or_sideways() -> None:
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_runtime_never_imports_the_harness() -> None:
    leaks = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if not module.startswith("energy_harness")
        for target in targets
        if target.startswith("energy_harness")
    ]
    assert not leaks


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in import_graph().items():
        for target in targets:
            if unit_of(target) != unit_of(module):
                graph[unit_of(module)].add(unit_of(target))
    assert not cycles(graph)


def test_no_cycle_between_modules() -> None:
    assert not cycles(import_graph())


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("command", ["bridge", "ingest", "api"])
def test_data_plane_commands_do_not_load_model_or_plotting_libraries(command: str) -> None:
    """Each worker's module, as the CLI imports it in a fresh interpreter."""
    code = (
        "import sys; from energy_pipeline.cli import build_parser; "
        f"build_parser({command!r}); "
        f"print(sorted(m for m in {HEAVY!r} + ('energy_harness', 'energy_operator', 'kopf') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip() == "[]"


def test_inference_does_load_lightgbm() -> None:
    """The check above can see a heavy import: inference must show LightGBM."""
    code = (
        "import sys; from energy_pipeline.cli import build_parser; build_parser('inference'); "
        "print('lightgbm' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip() == "True"


def test_the_wheel_holds_the_runtime_and_no_harness(tmp_path: Path) -> None:
    # Built from a copy of what the Dockerfile copies in: setuptools keeps a build/ directory
    # in the source tree, and a stale one would put deleted modules into the wheel.
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("workers", "operator", "proto"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("energy_pipeline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if name.endswith(".py")}
    assert packages == {"energy_pipeline", "energy_operator"}
    harness = [
        n for n in names
        if any(part in n for part in ("localstack", "bench", "demo", "crd_reference", "generate"))
    ]  # fmt: skip
    assert not harness, harness
    assert "energy_pipeline/dataplane/bridge.py" in names
    assert "energy_pipeline/db/migrations/0001_schema.sql" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "energy_harness" not in text and "ingest = " in text
