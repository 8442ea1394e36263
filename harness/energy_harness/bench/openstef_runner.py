"""OpenSTEF 4.x in our rolling-origin protocol; runs INSIDE the OpenSTEF virtualenv.

    <openstef-venv>/bin/python openstef_runner.py --csv in.csv --out forecasts.csv \
        --first-origin 2017-11-13T00:00:00Z [--temperature-col temperature]

Standard library plus pandas and openstef only: this file never imports energy_pipeline
(the two live in different Pythons), so the protocol is restated here and a unit test
holds it equal to `energy_pipeline.forecasting.backtest`:

- origins from `--first-origin` every `--every` hours while the whole horizon is in the
  data; the input is a gap-free hourly `time,load[,temperature]` grid;
- refit at the first origin and once `--retrain-every` hours have passed since the last
  fit, on the rows strictly before the origin (the last `--train-days` days of them, as
  OpenSTEF-BEAM's preset backtest does: 90 days by default; 0 means all);
- predict from the `predict_history` (14 days) before the origin up to the last target
  time, with the load at and after the origin blanked.

The model is OpenSTEF's preset `create_forecasting_workflow(ForecastingWorkflowConfig)`
with its defaults, `model="xgboost"` (the preset has no default model; xgboost is the one
its tutorials and Liander 2024 benchmark lead with), one horizon PT24H (so every lag it
builds is at least 24 h old: none reaches past the origin), quantiles 0.1 / 0.5 / 0.9 and
MLflow off. OpenSTEF has no notion of a covariate known only up to now: its features
use a weather column at the forecast hour itself. So without `--temperature-col` the
column is dropped from training and prediction alike; with it, the real temperature of
the forecast hours is given, as a perfect weather forecast would be.

Fit failures OpenSTEF signals (flatliner, too little complete data) keep the previous
model, as BEAM's OpenSTEF4BacktestForecaster does; an origin without a model gets empty
forecasts. Writes `origin,target_time,horizon,p10,p50,p90,actual` and a JSON summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import platform
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any

FORECAST_COLUMNS = ("origin", "target_time", "horizon", "p10", "p50", "p90", "actual")
QUANTILES = (0.1, 0.5, 0.9)
PREDICT_HISTORY_HOURS = 14 * 24  # ForecastingWorkflowConfig.predict_history's default


@dataclass(frozen=True)
class Protocol:
    horizon: int = 24
    every: int = 24
    retrain_every: int = 168
    train_hours: int = 90 * 24  # 0: everything before the origin


def plan(n_rows: int, first: int, protocol: Protocol) -> Iterator[tuple[int, bool]]:
    """(origin index, refit here) in order; the same rule as `backtest.run_backtest`."""
    if protocol.every < 1 or protocol.horizon < 1:
        raise ValueError("every and horizon must be at least 1 hour")
    last_fit: int | None = None
    for origin in range(max(0, first), n_rows - protocol.horizon + 1, protocol.every):
        refit = last_fit is None or origin - last_fit >= protocol.retrain_every
        if refit:
            last_fit = origin
        yield origin, refit


def training_rows(origin: int, protocol: Protocol) -> tuple[int, int]:
    """[start, stop) of the rows a fit at `origin` may use: strictly before it."""
    start = 0 if protocol.train_hours <= 0 else max(0, origin - protocol.train_hours)
    return start, origin


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cell(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.10g}"


def forecast_rows(
    origin: datetime,
    horizon: int,
    quantiles: dict[float, Sequence[float]],
    actual: Sequence[float],
) -> list[list[str | int]]:
    """One CSV row per horizon 1..h; target time = origin + (h - 1) hours."""
    rows: list[list[str | int]] = []
    for step in range(horizon):
        rows.append(
            [
                iso(origin),
                iso(origin + timedelta(hours=step)),
                step + 1,
                *(cell(float(quantiles[q][step])) for q in QUANTILES),
                cell(float(actual[step])),
            ]
        )
    return rows


def parse_utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# pandas and openstef are imported inside the functions that use them, so that the pure
# protocol above imports in any Python (the unit tests import it from ours).


def load_frame(path: str, temperature: str | None) -> Any:
    """The input CSV as a UTC-indexed DataFrame; refuses anything but a gap-free hourly grid."""
    import pandas as pd

    df = pd.read_csv(path)
    index = pd.to_datetime(df.pop("time"), utc=True)
    frame = pd.DataFrame({"load": df["load"].astype(float).to_numpy()}, index=index)
    if temperature is not None:
        frame["temperature"] = df[temperature].astype(float).to_numpy()
    frame.index.name = "timestamp"
    steps = frame.index.to_series().diff().dropna()
    if len(steps) and not (steps == pd.Timedelta(hours=1)).all():
        raise SystemExit(f"{path}: times are not a gap-free hourly grid")
    return frame


def workflow_config(args: argparse.Namespace) -> Any:
    from openstef_core.types import LeadTime, Q
    from openstef_models.presets import ForecastingWorkflowConfig
    from openstef_models.presets.forecasting_workflow import LocationConfig
    from pydantic_extra_types.coordinate import Coordinate

    return ForecastingWorkflowConfig(
        model_id="energy-pipeline-bench",
        model=args.model,
        horizons=[LeadTime.from_string(f"PT{args.horizon}H")],
        quantiles=[Q(q) for q in QUANTILES],
        sample_interval=timedelta(hours=1),
        location=LocationConfig(
            name=args.location_name,
            coordinate=Coordinate(latitude=args.latitude, longitude=args.longitude),
            country_code=args.country,
        ),
        mlflow_storage=None,
        verbosity=0,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import xgboost
    from openstef_core.datasets import TimeSeriesDataset
    from openstef_core.exceptions import (
        FlatlinerDetectedError,
        InsufficientlyCompleteError,
    )
    from openstef_models.presets import create_forecasting_workflow

    frame = load_frame(args.csv, args.temperature_col)
    protocol = Protocol(args.horizon, args.every, args.retrain_every, args.train_days * 24)
    first = frame.index.get_indexer([parse_utc(args.first_origin)])[0]
    if first < 0:
        raise SystemExit(f"--first-origin {args.first_origin} is not an hour of {args.csv}")
    config = workflow_config(args)
    interval = timedelta(hours=1)
    workflow = None
    fit_seconds = predict_seconds = 0.0
    refits = failed_fits = empty = origins = 0
    nan = [math.nan] * args.horizon
    with open(args.out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FORECAST_COLUMNS)
        for origin, refit in plan(len(frame), first, protocol):
            origins += 1
            when = frame.index[origin].to_pydatetime()
            if refit:
                start, stop = training_rows(origin, protocol)
                candidate = create_forecasting_workflow(config)
                started = time.perf_counter()
                try:
                    candidate.fit(TimeSeriesDataset(frame.iloc[start:stop], interval))
                    workflow = candidate
                except (FlatlinerDetectedError, InsufficientlyCompleteError) as error:
                    failed_fits += 1
                    print(f"fit at {iso(when)} failed: {error}", file=sys.stderr)
                fit_seconds += time.perf_counter() - started
                refits += 1
            stop = origin + args.horizon
            actual = frame["load"].iloc[origin:stop].to_numpy()
            quantiles: dict[float, Sequence[float]] = {q: nan for q in QUANTILES}
            if workflow is not None:
                visible = frame.iloc[max(0, origin - PREDICT_HISTORY_HOURS) : stop].copy()
                visible.loc[visible.index >= frame.index[origin], "load"] = np.nan
                started = time.perf_counter()
                try:
                    forecast = workflow.predict(
                        TimeSeriesDataset(visible, interval), forecast_start=when
                    ).data.reindex(frame.index[origin:stop])
                    quantiles = {
                        q: forecast[f"quantile_P{round(q * 100):02d}"].to_numpy() for q in QUANTILES
                    }
                except FlatlinerDetectedError as error:
                    print(f"predict at {iso(when)} skipped: {error}", file=sys.stderr)
                predict_seconds += time.perf_counter() - started
            if math.isnan(float(quantiles[0.5][0])):
                empty += 1
            writer.writerows(forecast_rows(when, args.horizon, quantiles, actual))
            if refit:
                print(f"[openstef] origin {origins} {iso(when)} (refit)", file=sys.stderr)
    return {
        "openstef_version": metadata.version("openstef"),
        "openstef_models_version": metadata.version("openstef-models"),
        "xgboost_version": xgboost.__version__,
        "python": platform.python_version(),
        "model": args.model,
        "preset": "openstef_models.presets.create_forecasting_workflow, defaults otherwise",
        "temperature_known_ahead": args.temperature_col is not None,
        "train_days": args.train_days,
        "origins": origins,
        "refits": refits,
        "failed_fits": failed_fits,
        "origins_without_forecast": empty,
        "fit_seconds": round(fit_seconds, 3),
        "predict_seconds": round(predict_seconds, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openstef_runner.py")
    parser.add_argument("--csv", required=True, help="hourly time,load[,temperature]")
    parser.add_argument("--out", required=True, help="forecasts CSV to write")
    parser.add_argument("--summary", required=True, help="JSON summary to write")
    parser.add_argument("--first-origin", required=True, help="ISO time of the first origin")
    parser.add_argument("--temperature-col", default=None, help="give it as known ahead")
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--every", type=int, default=24)
    parser.add_argument("--retrain-every", type=int, default=168)
    parser.add_argument("--train-days", type=int, default=90, help="0: all history")
    parser.add_argument("--model", default="xgboost")
    parser.add_argument("--country", default="NL", help="ISO 3166 alpha-2, for holidays")
    parser.add_argument("--latitude", type=float, default=52.132633)
    parser.add_argument("--longitude", type=float, default=5.291266)
    parser.add_argument("--location-name", default="bench")
    args = parser.parse_args(argv)
    # OpenSTEF logs and warns per fit; the summary and the forecasts are the output.
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    summary = run(args)
    with open(args.summary, "w") as handle:
        json.dump(summary, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
