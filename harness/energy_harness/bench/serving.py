"""Developer benchmark: `energy-pipeline train` on one year of hourly data, and Forecast RPC
latency and throughput of one real `energy-pipeline inference` process.

    python -m energy_harness.bench.serving --out bench/serving.json

Everything is real and local: a PostgreSQL server (the local stack's, from the Debian
install) holds one year of hourly_features of one synthetic building
(`synthetic.synthetic_building`, 8760 rows, 4 sensor covariates). Training is the `train`
command's own code path (`train.train_site`: read, 14-day backtest with its own fit, final
fit on the year, registry write), timed end to end and per fit. Then one inference process
serves the promoted model and a client on the same machine sends the request ingest sends:
the 336 hours before the origin and horizons 1..168.

- latency: one call at a time (p50/p99 over `--calls` calls after a warm-up);
- throughput: `--concurrency` calls kept in flight for `--seconds` seconds on one channel
  (req/s, with p50/p99 under that load), and the server process's CPU seconds per request.

The client shares the machine with the server, so on a small machine the throughput
figure is a lower bound for the server alone; the load average at the start is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psycopg2
from energy_pipeline.db.migrate import migrate
from energy_pipeline.forecasting.hourly_db import read_window, write_hourly_frame
from energy_pipeline.forecasting.train import TrainSettings, train_site
from energy_pipeline.inference.client import ForecasterClient, forecast_request

from energy_harness.bench.forecast import machine
from energy_harness.localstack import PostgresServer
from energy_harness.localstack.process import free_port
from energy_harness.localstack.workers import WorkerProcess
from energy_harness.synthetic import synthetic_building

SITE = "bench-site"
YEAR_HOURS = 24 * 365
WINDOW_HOURS = 336
LATENCY_P99_MS_MAX = 20.0
TRAIN_SECONDS_MAX = 10.0


def percentiles_ms(samples: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def bench_training(url: str) -> dict[str, Any]:
    settings = TrainSettings(
        database_url=url, train_history_days=366, train_backtest_days=14, log_level="WARNING"
    )
    conn = psycopg2.connect(url)
    try:
        result = train_site(conn, SITE, settings)
    finally:
        conn.close()
    assert result is not None
    params = result.record.params
    final_fit = float(params["training"]["seconds"])
    return {
        "data": f"{SITE}: {params['rows']} hourly_features rows (1 year), 4 sensor covariates",
        "command_path": "energy-pipeline train (train.train_site): read, backtest, fit, register",
        "total_seconds": round(result.seconds, 2),
        "final_fit_seconds": round(final_fit, 2),
        "backtest_fit_seconds": params["backtest"]["fit_seconds"],
        "training_rows": params["training"].get("training_rows"),
        "boosting_rounds": params["training"].get("rounds"),
        "backtest": {k: result.record.metrics.get(k) for k in ("mae", "mase", "coverage_p10_p90")},
        "target_seconds": TRAIN_SECONDS_MAX,
        "met": final_fit < TRAIN_SECONDS_MAX,
        "version": result.record.version,
    }


def bench_latency(client: ForecasterClient, request: Any, calls: int) -> dict[str, Any]:
    for _ in range(50):  # connections, caches, LightGBM's first-call setup
        client.forecast(request, 5)
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        client.forecast(request, 5)
        samples.append(time.perf_counter() - started)
    return {"calls": calls, **percentiles_ms(samples)}


def bench_throughput(
    client: ForecasterClient, request: Any, concurrency: int, seconds: float, server_pid: int
) -> dict[str, Any]:
    """`concurrency` calls in flight at all times: each completion starts the next call."""
    samples: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    idle = threading.Semaphore(0)

    def launch() -> None:
        started = time.perf_counter()
        future = client.forecast_future(request, 5)

        def done(f: grpc.Future) -> None:
            elapsed = time.perf_counter() - started
            with lock:
                if f.exception() is None:
                    samples.append(elapsed)
                else:
                    errors.append(str(f.exception())[:200])
            if time.perf_counter() < stop_at:
                launch()
            else:
                idle.release()

        future.add_done_callback(done)

    cpu_before = cpu_seconds(server_pid)
    started = time.perf_counter()
    for _ in range(concurrency):
        launch()
    for _ in range(concurrency):
        idle.acquire()
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(server_pid) - cpu_before
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests": len(samples),
        "errors": len(errors),
        "requests_per_s": round(len(samples) / elapsed, 1),
        "server_cpu_ms_per_request": round(1000 * cpu / max(1, len(samples)), 3),
        **percentiles_ms(samples or [0.0]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m energy_harness.bench.serving")
    parser.add_argument("--out", type=Path, default=Path("bench/serving.json"))
    parser.add_argument("--calls", type=int, default=1000, help="sequential calls timed")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput run length")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "command": "python -m energy_harness.bench.serving "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        postgres = PostgresServer(Path(tmp) / "postgres", fast=True)
        postgres.start()
        server: WorkerProcess | None = None
        try:
            url = postgres.dsn
            migrate(url)
            year = synthetic_building(YEAR_HOURS + 1, start="2024-01-01T00:00", seed=42)
            with psycopg2.connect(url) as conn:
                write_hourly_frame(conn, SITE, year)
            conn.close()
            print("training on one year of hourly_features ...", file=sys.stderr)
            report["training"] = bench_training(url)
            print(json.dumps(report["training"], indent=2), file=sys.stderr)

            port = free_port()
            env = {
                **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
                "DATABASE_URL": url,
                "GRPC_PORT": str(port),
                "LOG_LEVEL": "WARNING",
                # Latency of the service itself, on loopback: plaintext, said explicitly.
                "GRPC_TLS": "false",
            }
            server = WorkerProcess("inference", ["inference"], env, Path(tmp) / "logs")
            server.start()
            server.wait_ready(60)
            assert server.process is not None and server.process.pid is not None
            client = ForecasterClient(f"127.0.0.1:{port}", None)
            origin = datetime(2024, 12, 30, tzinfo=UTC)  # a Monday, a year of history before
            conn = psycopg2.connect(url)
            try:
                window = read_window(conn, SITE, origin, WINDOW_HOURS)
            finally:
                conn.close()
            serving: dict[str, Any] = {
                "what": (
                    "Forecast RPC over loopback to one inference process: "
                    f"{len(window)} hourly_features rows in, P10/P50/P90 out"
                ),
            }
            for horizons in (168, 24):
                request = forecast_request(SITE, window, range(1, horizons + 1), origin)
                key = f"horizons_1_{horizons}"
                print(f"latency, {key} ...", file=sys.stderr)
                serving[key] = {"sequential": bench_latency(client, request, args.calls)}
                print(f"throughput, {key} ...", file=sys.stderr)
                serving[key]["loaded"] = bench_throughput(
                    client, request, args.concurrency, args.seconds, server.process.pid
                )
            p99 = serving["horizons_1_168"]["sequential"]["p99_ms"]
            serving["target_p99_ms"] = LATENCY_P99_MS_MAX
            serving["met"] = p99 < LATENCY_P99_MS_MAX
            report["serving"] = serving
            client.close()
        finally:
            if server is not None:
                server.stop(timeout=30)
            postgres.cleanup()
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps({"training": report["training"], "serving": report["serving"]}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

