"""The README's simulator command through a real bridge: everything it reports confirmed is
stored, and what it publishes past the bridge's future limit is announced and counted apart.

Before, `simulate --duration 2h` started at now and published two hours into the future: the
bridge rejected all but the first 5 minutes as future_timestamp while the simulator reported
every message confirmed.
"""

from __future__ import annotations

import json
import time

import pytest
from energy_harness.localstack.workers import WorkerProcess
from energy_harness.testing import expected_rows

from .conftest import Pipeline
from .test_data_plane import assert_exactly, wait_for_rows

pytestmark = pytest.mark.e2e


def run_simulator(pipeline: Pipeline, name: str, args: list[str]) -> tuple[dict, str]:
    """Runs `simulate ARGS` to its end; its summary (the JSON line on stdout) and its log."""
    simulator = pipeline.start(name, ["simulate", *args, "--client-id", name], wait_ready=False)
    assert simulator.wait(timeout=240) == 0, simulator.process.log_tail()  # type: ignore[union-attr]
    log = simulator.process.log_path.read_text()  # type: ignore[union-attr]
    summaries = [json.loads(line) for line in log.splitlines()
                 if line.startswith("{") and '"published"' in line and '"msg"' not in line]
    assert len(summaries) == 1, log[-3000:]
    return summaries[0], log


def rejected_as_future(bridge: WorkerProcess) -> float:
    return bridge.metric("energy_rejected_total", {"reason": "future_timestamp"})


def test_the_readme_command_stores_every_reading_it_reports_confirmed(
    pipeline: Pipeline,
) -> None:
    bridge = pipeline.start("bridge", ["bridge"], MQTT_CLIENT_ID="bridge-sim")
    bridge.wait_ready()
    pipeline.start("ingest", ["ingest"])
    dsn = pipeline.env["DATABASE_URL"]

    # No --start: two hours that end at now (4 sites x 5 sensors x 4 devices, 5 min).
    summary, log = run_simulator(pipeline, "simulate-readme", ["--duration", "2h"])
    assert summary["published"] == summary["confirmed"] == 24 * 80, summary
    wait_for_rows(dsn, summary["confirmed"])
    assert summary["future"] == 0 and "simulate: warning:" not in log
    expected = expected_rows(["--duration", "2h", "--start", summary["start"]])
    assert len(expected) == summary["confirmed"]
    assert_exactly(dsn, expected)
    assert rejected_as_future(bridge) == 0

    # Asked for the future explicitly: one warning line first, and the summary counts the
    # messages as future, not confirmed; the bridge rejects exactly those.
    summary, log = run_simulator(
        pipeline, "simulate-future",
        ["--duration", "2h", "--start", "now+1d", "--interval", "30m", "--sites", "1",
         "--devices", "1"],
    )
    assert summary["published"] == summary["future"] == 4 * 5, summary
    assert summary["confirmed"] == 0
    warnings = [line for line in log.splitlines()
                if line.startswith("energy-pipeline simulate: warning:")]
    assert len(warnings) == 1 and "20 of 20 messages" in warnings[0], log[-3000:]
    # A weather forecast issued in that window (at 00, 06, 12 or 18 UTC) is future too.
    future = summary["future"] + summary["forecasts_future"]
    deadline = time.monotonic() + 60
    while rejected_as_future(bridge) < future and time.monotonic() < deadline:
        time.sleep(0.5)
    assert rejected_as_future(bridge) == future
    assert_exactly(dsn, expected)
