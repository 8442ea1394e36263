"""Developer benchmark: the Taylor series backtest, training time and predict latency.

    python -m energy_harness.bench.forecast --out bench/forecast.json

Needs the `bench` extra (`pip install -e '.[bench]'`), which brings `pmdarima`: it ships
the England & Wales half-hourly electricity demand of 5 June - 27 August 2000 (Taylor
2003, 4032 values, megawatts). The series is written to a CSV with half-hourly ISO times
and read back through the same path as `energy-pipeline backtest` (so it is averaged to
hourly on the way in), then backtested with day-ahead origins at 00:00 every day over the
last 4 weeks, refitting weekly. Training time is measured on one year of *synthetic*
hourly data (`synthetic.synthetic_building`; no real year of building data ships with a
package) and latency on single forecast calls over a 15-day window.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
from energy_pipeline.forecasting.backtest import BacktestConfig
from energy_pipeline.forecasting.commands import compare
from energy_pipeline.forecasting.csvio import read_hourly_csv
from energy_pipeline.forecasting.frame import HourlyFrame, iso_hour
from energy_pipeline.forecasting.metrics import format_table
from energy_pipeline.forecasting.models import MODEL_NAMES, DefaultModel
from energy_pipeline.forecasting.rows import RECOMMENDED_WINDOW_HOURS, HourlyRow
from energy_pipeline.forecasting.window import forecast_window

from energy_harness.synthetic import PAST_COLUMNS, synthetic_building

TAYLOR_START = np.datetime64("2000-06-05T00:00:00")  # Monday, per the dataset's documentation
TARGETS = {"mase_max": 0.75, "coverage_min": 0.75, "coverage_max": 0.85}
TRAIN_SECONDS_MAX = 10.0
LATENCY_P99_MS_MAX = 20.0


def taylor_csv(path: Path) -> int:
    """Write the Taylor series as `time,demand` with half-hourly UTC times; returns rows."""
    try:
        from pmdarima.datasets import load_taylor
    except ImportError as error:
        raise SystemExit(
            "the benchmark needs the bench extra: pip install -e '.[bench]' "
            f"(pmdarima ships the Taylor series): {error}"
        ) from error
    demand = np.asarray(load_taylor(), dtype=np.float64)
    times = TAYLOR_START + np.arange(len(demand)) * np.timedelta64(30, "m")
    with path.open("w") as handle:
        handle.write("time,demand\n")
        for t, y in zip(times, demand, strict=True):
            handle.write(f"{t}Z,{y:.1f}\n")
    return len(demand)


def last_weeks_start(frame: HourlyFrame, weeks: int, horizon: int) -> int:
    """Index of the first of `weeks * 7` daily 00:00 origins ending at the last one that fits."""
    last = len(frame) - horizon
    while frame.times[last].astype(np.int64) % 24 != 0:
        last -= 1
    return last - (weeks * 7 - 1) * 24


def backtest_taylor(weeks: int, stderr: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "taylor.csv"
        raw_rows = taylor_csv(csv_path)
        frame = read_hourly_csv(csv_path, "time", "demand")
    horizon = 24
    start = last_weeks_start(frame, weeks, horizon)
    config = BacktestConfig(horizon=horizon, every=24, retrain_every=168, test_start=start)
    names = list(MODEL_NAMES)
    started = time.perf_counter()
    results, metrics = compare(frame, names, config, stderr=stderr)
    elapsed = time.perf_counter() - started
    default = metrics["default"]
    checks = {
        "default_mase_le_0.75": default.mase <= TARGETS["mase_max"],
        "default_beats_seed_mae": default.mae < metrics["seed"].mae,
        "default_coverage_75_85": TARGETS["coverage_min"]
        <= default.coverage
        <= TARGETS["coverage_max"],
    }
    return {
        "dataset": {
            "name": "taylor: England & Wales electricity demand, half-hourly, MW",
            "source": "pmdarima.datasets.load_taylor",
            "half_hourly_rows": raw_rows,
            "hourly_rows": len(frame),
            "from": iso_hour(frame.times[0]),
            "to": iso_hour(frame.times[-1]),
        },
        "config": {
            "horizon_hours": horizon,
            "every_hours": 24,
            "retrain_every_hours": 168,
            "first_origin": iso_hour(frame.times[start]),
            "origins": len(results["default"].methods),
        },
        "models": {
            name: {
                **metrics[name].as_dict(),
                "fit_seconds": round(results[name].fit_seconds, 3),
                "predict_seconds": round(results[name].predict_seconds, 3),
            }
            for name in names
        },
        "table": format_table([(name, metrics[name]) for name in names]),
        "checks": checks,
        "seconds": round(elapsed, 2),
    }


def rows_of(frame: HourlyFrame, stop: int, hours: int) -> list[HourlyRow]:
    start = max(0, stop - hours)
    return [
        HourlyRow(
            hour=frame.times[i],
            avg_temperature=float(frame.past["avg_temperature"][i]),
            avg_humidity=float(frame.past["avg_humidity"][i]),
            avg_squarefootage=float(frame.past["avg_squarefootage"][i]),
            avg_renewableenergy=float(frame.past["avg_renewableenergy"][i]),
            avg_energyconsumption=float(frame.target[i]),
            n_readings=20,
        )
        for i in range(start, stop)
    ]


def percentile_ms(samples: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000.0, q)), 3)


def training_and_latency(repeats: int, calls: int) -> dict[str, Any]:
    year = synthetic_building(24 * 365, seed=42)
    fits: list[float] = []
    model = DefaultModel(past=PAST_COLUMNS)
    for _ in range(repeats):
        model = DefaultModel(past=PAST_COLUMNS)
        started = time.perf_counter()
        model.fit(year, 168)
        fits.append(time.perf_counter() - started)
    window = rows_of(year, len(year), RECOMMENDED_WINDOW_HOURS)
    latency: dict[str, Any] = {}
    for horizons in (range(1, 25), range(1, 169)):
        samples: list[float] = []
        for i in range(calls + 20):
            started = time.perf_counter()
            forecast_window(model, window, horizons)
            if i >= 20:  # the first calls warm caches and are not what a server sees
                samples.append(time.perf_counter() - started)
        latency[f"horizons_1_{len(horizons)}"] = {
            "calls": calls,
            "p50_ms": percentile_ms(samples, 50),
            "p99_ms": percentile_ms(samples, 99),
        }
    return {
        "training": {
            "data": "synthetic building, 8760 hourly rows (1 year), 4 sensor covariates",
            "max_horizon": 168,
            "training_rows": model.trained.get("training_rows"),
            "boosting_rounds": model.trained.get("rounds"),
            "seconds": [round(s, 3) for s in fits],
            "best_seconds": round(min(fits), 3),
            "target_seconds": TRAIN_SECONDS_MAX,
            "met": min(fits) < TRAIN_SECONDS_MAX,
        },
        "latency": {
            "what": (
                "one forecast_window() call: 360 hourly_features rows in, P10/P50/P90 out "
                "(in-process, no gRPC)"
            ),
            **latency,
            "target_p99_ms": LATENCY_P99_MS_MAX,
            "met": latency["horizons_1_168"]["p99_ms"] < LATENCY_P99_MS_MAX,
        },
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        # A file's mtime is its checkout's, not its run's: the run says when it began.
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "lightgbm": lightgbm.__version__,
        "numpy": np.__version__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m energy_harness.bench.forecast")
    parser.add_argument("--out", type=Path, default=Path("bench/forecast.json"))
    parser.add_argument("--weeks", type=int, default=4, help="weeks of daily origins")
    parser.add_argument("--fit-repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=500, help="forecast calls timed")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "command": "python -m energy_harness.bench.forecast "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
    }
    report["backtest"] = backtest_taylor(args.weeks, sys.stderr)
    print(report["backtest"]["table"])
    print(json.dumps(report["backtest"]["checks"]))
    report.update(training_and_latency(args.fit_repeats, args.calls))
    print(json.dumps({"training": report["training"], "latency": report["latency"]}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
