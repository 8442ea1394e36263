"""The platform on real pods: `python -m energy_harness.bench.node_platform`.

Starts the test control plane with a real kubelet node, builds the images in the harness's
Docker engine and loads them into the node, installs the platform with the README's own
commands, and measures:

- seconds from `helm install` to the pipeline Ready (the README's `kubectl wait`);
- the memory (working set, from the node's cgroups) of every pod at rest: after the chart
  simulator's backfill is stored and the first model is trained;
- readings per second the platform carries: an unpaced `simulate` pod publishes a bounded
  run, timed from the pod's start to the last of its readings in PostgreSQL;
- the most memory each pod used while that run went through (sampled every 2 s).

Everything runs on this machine's cores: the numbers are the whole platform (3 Kafka
brokers, HiveMQ, PostgreSQL, the operator, 2 bridge, 2 ingest and 2 inference pods and the
simulators) sharing them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as machine
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from energy_harness.images import build_image
from energy_harness.localstack.docker import DockerEngine
from energy_harness.localstack.kube import KubeControlPlane
from energy_harness.node_platform import (
    PIPELINE,
    Platform,
    expected_window,
    install_from_readme,
    simulator_pod,
)
from energy_harness.testing import wait_for

IMAGES = ("worker", "kafka", "postgres", "hivemq")
# 2 sites x 5 sensors x 4 devices, one reading a minute for 12 h: 28,800 readings, in the past
# (2025) so that none collides with the chart simulator's.
LOAD_RUN = ["--sites=2", "--devices=4", "--interval=1m", "--start=2025-03-01T00:00:00+00:00",
            "--duration=12h", "--seed=11"]
LOAD_START = datetime(2025, 3, 1, tzinfo=UTC)
LOAD_END = LOAD_START + timedelta(hours=12)
LOAD_READINGS = 2 * 5 * 4 * 12 * 60


def _mib(values: dict[str, int]) -> dict[str, float]:
    return {name: round(value / 2**20, 1) for name, value in sorted(values.items())}


def _wait_at_rest(plat: Platform) -> dict[str, float]:
    began = time.monotonic()
    run = plat.chart_simulation()
    start = datetime.fromisoformat(run["start"])
    end, expected = expected_window(run, datetime.now(UTC) - timedelta(minutes=1))
    wait_for(lambda: plat.count_between(start, end) >= len(expected), 1200,
             "the chart simulator's backfill stored", interval=5)
    backfill_s = time.monotonic() - began
    wait_for(lambda: plat.sql("SELECT count(*) FROM forecasts")[0][0] > 0, 1200,
             "the first forecasts", interval=5)
    return {"backfill_readings": len(expected), "backfill_stored_after_ready_s":
            round(backfill_s, 1), "first_forecasts_after_ready_s":
            round(time.monotonic() - began, 1)}


def _load(plat: Platform) -> dict[str, Any]:
    peak: dict[str, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for name, value in plat.pod_memory().items():
                peak[name] = max(peak.get(name, 0), value)
            stop.wait(2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    plat.apply(simulator_pod("load", plat.images["worker"], LOAD_RUN))
    try:
        wait_for(lambda: plat.pod_phase("load") not in (None, "Pending"), 300, "load pod running")
        began = time.monotonic()
        wait_for(lambda: plat.count_between(LOAD_START, LOAD_END) >= LOAD_READINGS, 1800,
                 f"{LOAD_READINGS} readings stored", interval=1)
        seconds = time.monotonic() - began
    finally:
        stop.set()
        sampler.join()
    stored = plat.count_between(LOAD_START, LOAD_END)
    return {"readings": LOAD_READINGS, "stored": stored, "seconds": round(seconds, 1),
            "readings_per_s": round(LOAD_READINGS / seconds, 1),
            "peak_memory_mib": _mib(peak)}


def measure(workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    engine = DockerEngine()
    engine.start()
    plane = KubeControlPlane(workdir / "kube", nodes=0, real_node=True, start_timeout=180)
    try:
        images = {name: str(build_image(engine, name)["tag"]) for name in IMAGES}
        plane.start()
        archive = workdir / "images.tar"
        began = time.monotonic()
        engine.run(["save", "-o", str(archive), *images.values()], timeout=600)
        assert plane.node is not None
        plane.node.load_images([archive])
        archive.unlink()
        results["images_loaded_s"] = round(time.monotonic() - began, 1)
        plat, ready_s = install_from_readme(plane, images, workdir / "clone")
        results["helm_install_to_ready_s"] = round(ready_s, 1)
        results.update(_wait_at_rest(plat))
        time.sleep(30)  # let the first forecasts' burst pass
        results["memory_at_rest_mib"] = _mib(plat.pod_memory())
        results["load"] = _load(plat)
        results["pipeline"] = PIPELINE
    finally:
        plane.stop()
        engine.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None, help="write JSON here as well as to stdout")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        results = {
            "machine": {"cpus": os.cpu_count(), "kernel": machine.release(),
                        "python": machine.python_version()},
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            **measure(Path(tmp)),
        }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
