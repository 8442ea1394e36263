"""`energy-pipeline backtest`: rolling-origin backtest of a model on any CSV."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from energy_pipeline.core.errors import USAGE, CommandError
from energy_pipeline.core.settings import DURATION_FORMAT
from energy_pipeline.core.timeutil import parse_duration_hours, parse_time
from energy_pipeline.forecasting.backtest import (
    BacktestConfig,
    BacktestResult,
    default_test_start,
    origins,
    run_backtest,
)
from energy_pipeline.forecasting.csvio import (
    read_hourly_csv,
    read_issued_csv,
    write_forecasts_csv,
)
from energy_pipeline.forecasting.frame import HourlyFrame, iso_hour, to_datetime64
from energy_pipeline.forecasting.metrics import Metrics, format_table, score
from energy_pipeline.forecasting.models import MODEL_NAMES, build_model
from energy_pipeline.forecasting.plot import MISSING_MATPLOTLIB, plot_backtest, plotting_available

# The chosen model is always compared with these, on the same origins.
REFERENCE_MODELS = ("naive24", "naive168", "seed")


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def register(commands: Any) -> None:
    """Add `backtest` to the CLI's sub-parsers."""
    parser = commands.add_parser(
        "backtest",
        help="rolling-origin backtest of a forecasting model on a CSV",
        description=(
            "Backtest a forecaster on a CSV. Sub-hourly rows are averaged to hourly. "
            "Origins start at --test-start and repeat every --every while the horizon fits; "
            "a forecast may use the target and past covariates strictly before its origin, "
            "and future covariates up to its target times. Prints MAE, RMSE, rMAE, MASE "
            "(vs seasonal naive 168 h), pinball loss and P10-P90 coverage for the chosen "
            "model beside naive24, naive168 and seed on the same origins."
        ),
        epilog=f"Durations (--every, --retrain-every): {DURATION_FORMAT}; a bare number is "
        "hours.\n\nExample:\n  energy-pipeline backtest --csv building.csv --time-col "
        "timestamp --target-col energy_kwh \\\n    --future-covariates temperature "
        "--plot backtest.png",
    )
    parser.add_argument("--csv", required=True, type=Path, help="input CSV with a header row")
    parser.add_argument("--time-col", required=True, help="ISO-8601 timestamps (UTC if naive)")
    parser.add_argument("--target-col", required=True, help="the column to forecast")
    parser.add_argument(
        "--past-covariates", default="", help="comma-separated columns known only up to now"
    )
    parser.add_argument(
        "--future-covariates",
        default="",
        help="comma-separated columns known ahead (calendar facts, weather forecasts)",
    )
    parser.add_argument(
        "--weather-forecasts",
        type=Path,
        default=None,
        help="CSV of forecasts as issued (issued_at,valid_time,<variable>...): each variable is "
        "a future covariate read, at every origin, from the newest issue made before it",
    )
    parser.add_argument("--horizon", type=int, default=24, help="hours ahead")
    parser.add_argument(
        "--every", default="24h", help="time between origins, a duration in whole hours"
    )
    parser.add_argument(
        "--test-start",
        default=None,
        help="first origin, ISO time (default: first midnight after 75%% of the data)",
    )
    parser.add_argument(
        "--retrain-every", default="7d", help="refit interval, a duration in whole hours"
    )
    parser.add_argument(
        "--model", choices=MODEL_NAMES, default="default", help="the model to backtest"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the chosen model's forecasts")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of forecasts vs actuals")
    parser.set_defaults(func=run_backtest_command)


class ProgressPrinter:
    """Progress on stderr: a live line on a terminal, otherwise a line per refit and at the end."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.started = time.perf_counter()

    def __call__(
        self, model: str, done: int, total: int, origin: np.datetime64, refit: bool
    ) -> None:
        message = (
            f"[{model}] origin {done}/{total} {iso_hour(origin)}"
            f"{' (refit)' if refit else ''} {time.perf_counter() - self.started:.1f}s"
        )
        if self.live:
            self.stream.write("\r" + message.ljust(72) + ("\n" if done == total else ""))
        elif refit or done == total:
            self.stream.write(message + "\n")
        self.stream.flush()


def _test_start_index(frame: HourlyFrame, text: str | None, horizon: int) -> int:
    if text is None:
        return default_test_start(frame, horizon)
    index = frame.index_of(to_datetime64(parse_time(text)))
    if not 0 < index < len(frame):
        raise ValueError(
            f"--test-start {text} is outside the data "
            f"({iso_hour(frame.times[0])} .. {iso_hour(frame.times[-1])})"
        )
    return index


def run_backtest_command(args: argparse.Namespace) -> int:
    try:
        return _run(args, sys.stdout, sys.stderr)
    except (ValueError, OSError) as error:  # the CSV or an option: cli.main prints the line
        raise CommandError(str(error), status=USAGE) from error


def compare(
    frame: HourlyFrame,
    model_names: Sequence[str],
    config: BacktestConfig,
    past: Sequence[str] = (),
    future: Sequence[str] = (),
    stderr: TextIO | None = None,
) -> tuple[dict[str, BacktestResult], dict[str, Metrics]]:
    """Backtest each model on the same origins and score them against naive 168 h."""
    progress = ProgressPrinter(stderr) if stderr is not None else None
    results: dict[str, BacktestResult] = {}
    for name in dict.fromkeys([*model_names, "naive168"]):
        results[name] = run_backtest(
            frame, name, lambda name=name: build_model(name, past, future), config, progress
        )
    base = results["naive168"].p50
    metrics = {
        name: score(r.actual, r.p10, r.p50, r.p90, base)
        for name, r in results.items()
        if name in model_names
    }
    return results, metrics


def _run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    if args.plot is not None and not plotting_available():
        raise CommandError(MISSING_MATPLOTLIB, status=USAGE)
    if args.horizon < 1:
        raise ValueError("--horizon must be at least 1")
    every = parse_duration_hours(args.every)
    retrain = parse_duration_hours(args.retrain_every)
    past, future = _names(args.past_covariates), _names(args.future_covariates)
    frame = read_hourly_csv(args.csv, args.time_col, args.target_col, past, future)
    if args.weather_forecasts is not None:
        issued = read_issued_csv(args.weather_forecasts)
        taken = sorted(set(issued) & {args.target_col, *past, *future})
        if taken:
            raise ValueError(f"{args.weather_forecasts}: column(s) {taken} are also columns of "
                             f"{args.csv} in use; rename them in one of the files")
        frame = replace(frame, issued=issued)
        future = [*future, *issued]
        print(f"{args.weather_forecasts}: {', '.join(issued)} as issued, "
              f"{len(next(iter(issued.values())))} values", file=stderr)
    known = int((~np.isnan(frame.target)).sum())
    print(
        f"{args.csv}: {len(frame)} hourly rows {iso_hour(frame.times[0])} .. "
        f"{iso_hour(frame.times[-1])}, target known in {known}",
        file=stderr,
    )
    start = _test_start_index(frame, args.test_start, args.horizon)
    config = BacktestConfig(
        horizon=args.horizon, every=every, retrain_every=retrain, test_start=start
    )
    points = origins(len(frame), start, every, args.horizon)
    if len(points) == 0:
        raise ValueError(
            f"no origin fits: from {iso_hour(frame.times[start])} a {args.horizon} h horizon "
            f"runs past the end of the data ({iso_hour(frame.times[-1])})"
        )
    names = list(dict.fromkeys([args.model, *REFERENCE_MODELS]))
    results, metrics = compare(frame, names, config, past, future, stderr)
    chosen = results[args.model]
    fallbacks = sum(m != "model" for m in chosen.methods)
    print(
        f"{len(points)} origins {iso_hour(frame.times[points[0]])} .. "
        f"{iso_hour(frame.times[points[-1]])} every {every} h, horizon {args.horizon} h, "
        f"refit every {retrain} h; MASE is relative to naive168 on the same points",
        file=stdout,
    )
    print(format_table([(name, metrics[name]) for name in names]), file=stdout)
    if fallbacks:
        print(f"{args.model}: {fallbacks} origin(s) used the short-history fallback", file=stdout)
    if args.out is not None:
        count = write_forecasts_csv(args.out, chosen)
        print(f"wrote {count} forecasts to {args.out}", file=stderr)
    if args.plot is not None:
        others = [results[n] for n in ("naive168",) if n != args.model]
        plot_backtest(args.plot, chosen, others)
        print(f"wrote plot to {args.plot}", file=stderr)
    return 0
