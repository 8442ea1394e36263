"""`make demo` runs the whole pipeline on this machine and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from energy_harness.localstack.workers import energy_pipeline_argv

pytestmark = pytest.mark.e2e


def test_demo_stores_readings_and_forecasts_writes_a_plot_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    data = tmp_path / "demo-data"
    result = subprocess.run(
        energy_pipeline_argv(["demo", "--fast", "--duration", "150", "--no-view",
                              "--out", str(out), "--data-dir", str(data)]),
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["streams"] == 2 * 5 * 4  # every site, sensor and device
    assert summary["rows"] > 0
    assert summary["forecasts"] > 0, result.stdout[-2000:]
    assert summary["model"]
    png = (out / "forecast.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    left = subprocess.run(["pgrep", "-af", str(data)], capture_output=True, text=True).stdout
    assert left == "", f"processes left running:\n{left}"
