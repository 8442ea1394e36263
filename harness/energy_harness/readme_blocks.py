"""The README's runnable shell blocks, found by the marker before each one.

A fenced block that tests run as written is preceded by an HTML comment naming its recipe,
which GitHub does not render:

    <!-- recipe: by-hand -->
    ```bash
    energy-pipeline migrate
    ```

`recipe_blocks("by-hand")` returns such blocks in document order; the e2e test runs the
"by-hand" recipe in one shell, the node tests the "own-cluster" one line by line.
"""

from __future__ import annotations

import re
from pathlib import Path

from energy_harness.images import REPO

README = REPO / "README.md"

# The marker, then (blank lines allowed) a fenced block; its language tag is kept.
_BLOCK = re.compile(
    r"^<!--\s*recipe:\s*(?P<name>[\w-]+)\s*-->[ \t]*\n(?:[ \t]*\n)*"
    r"```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$",
    re.S | re.M,
)
_MARKER = re.compile(r"<!--\s*recipe:\s*([\w-]+)\s*-->")


def recipe_blocks(name: str, readme: Path = README) -> list[str]:
    """The bodies of the blocks marked `<!-- recipe: name -->`, in document order.

    A marker that is not directly followed by a fenced block is an error (it would
    otherwise drop a step silently), as is a recipe with no block at all.
    """
    text = readme.read_text()
    blocks = [m for m in _BLOCK.finditer(text) if m.group("name") == name]
    markers = [m for m in _MARKER.finditer(text) if m.group(1) == name]
    if len(markers) != len(blocks):
        starts = {m.start() for m in blocks}
        loose = [text.count("\n", 0, m.start()) + 1 for m in markers if m.start() not in starts]
        raise ValueError(
            f"{readme}: recipe {name!r} marker(s) on line(s) {loose} not followed by a "
            "fenced block"
        )
    if not blocks:
        raise ValueError(f"{readme}: no block marked <!-- recipe: {name} -->")
    for block in blocks:
        if block.group("lang") not in ("bash", "sh", "shell"):
            line = text.count("\n", 0, block.start()) + 1
            raise ValueError(f"{readme}:{line}: recipe {name!r} block is not a shell block")
    return [m.group("body") for m in blocks]


def recipe_names(readme: Path = README) -> list[str]:
    """Every recipe named in the README, in order of first appearance."""
    return list(dict.fromkeys(m.group(1) for m in _MARKER.finditer(readme.read_text())))


def command_lines(block: str) -> list[str]:
    """A block's commands one per line, without blank lines and whole-line comments."""
    return [line for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
