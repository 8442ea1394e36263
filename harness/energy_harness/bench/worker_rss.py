"""Resident memory of each worker after start: `python -m energy_harness.bench.worker_rss`.

Starts Kafka (3 nodes), PostgreSQL and Mosquitto as local processes, creates the topics,
applies the migrations, then starts `energy-pipeline bridge`, `ingest`, `api` and `inference`
one at a time with the environment the operator renders, waits for /healthz, lets the worker
settle and reads VmRSS from /proc. Idle workers: this measures what importing and starting
costs, not a working set under load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from energy_pipeline.api.auth import add_client, new_token

from energy_harness.localstack import LocalStack
from energy_harness.localstack.process import free_port
from energy_harness.localstack.workers import WorkerProcess, energy_pipeline_argv, service_env

WORKERS = ("bridge", "ingest", "api", "inference")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def measure(settle_s: float, extra_env: dict[str, str]) -> dict[str, object]:
    results: dict[str, object] = {}
    with LocalStack(fast_postgres=True) as stack:
        env = service_env(
            stack.kafka.bootstrap_servers, stack.postgres.dsn, stack.mqtt.host, stack.mqtt.port
        )
        env.update(extra_env)
        for command in (["topics", "create"], ["migrate"]):
            subprocess.run(energy_pipeline_argv(command), env=env, check=True, timeout=120)
        # The read API starts only with a tokens file naming a client (API_TOKENS_FILE).
        tokens = Path(stack.base_dir) / "api-tokens"
        add_client(str(tokens), "bench", new_token())
        for name in WORKERS:
            # Memory of the idle worker: plaintext gRPC (no certificates to make) is knowingly
            # enough on loopback.
            worker_env = {**env, "API_PORT": str(free_port()), "GRPC_PORT": str(free_port()),
                          "API_TOKENS_FILE": str(tokens), "GRPC_TLS": "false"}
            worker = WorkerProcess(name, [name], worker_env, stack.base_dir)
            worker.start(timeout=120)
            try:
                time.sleep(settle_s)
                assert worker.process is not None and worker.process.pid is not None
                results[name] = {"rss_mib": round(rss_kib(worker.process.pid) / 1024, 1)}
            finally:
                worker.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None, help="write JSON here as well as to stdout")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after /healthz")
    args = parser.parse_args(argv)
    # PYTHONPATH passes through, so another checkout's code can be measured with this harness.
    extra = {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}
    report = {
        "command": "python -m energy_harness.bench.worker_rss",
        "machine": f"{platform.node()} {os.cpu_count()} cpus, Python {platform.python_version()}",
        "workers": measure(args.settle, extra),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
