"""Reading the user's CSV and writing forecasts, with the standard library only."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from energy_pipeline.core.timeutil import parse_iso_time
from energy_pipeline.forecasting.backtest import BacktestResult
from energy_pipeline.forecasting.frame import HourlyFrame, iso_hour, to_datetime64
from energy_pipeline.forecasting.issued import IssuedSeries
from energy_pipeline.forecasting.resample import hourly_means

FORECAST_COLUMNS = ("origin", "target_time", "horizon", "p10", "p50", "p90", "actual")


def _number(text: str) -> float:
    text = text.strip()
    if not text or text.lower() in {"nan", "na", "null", "none"}:
        return math.nan
    return float(text)


def read_hourly_csv(
    path: Path,
    time_col: str,
    target_col: str,
    past_covariates: Sequence[str] = (),
    future_covariates: Sequence[str] = (),
) -> HourlyFrame:
    """Load the named columns; sub-hourly rows are averaged to hourly, gaps become NaN."""
    wanted = [target_col, *past_covariates, *future_covariates]
    times: list[np.datetime64] = []
    values: dict[str, list[float]] = {name: [] for name in wanted}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in [time_col, *wanted] if c not in header]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; the header has {header}")
        for line, row in enumerate(reader, start=2):
            try:
                times.append(to_datetime64(parse_iso_time(row[time_col])))
                for name in wanted:
                    values[name].append(_number(row[name]))
            except ValueError as error:
                raise ValueError(f"{path}:{line}: {error}") from error
    if not times:
        raise ValueError(f"{path}: no data rows")
    grid, means = hourly_means(np.array(times), {k: np.array(v) for k, v in values.items()})
    return HourlyFrame(
        times=grid,
        target=means[target_col],
        past={name: means[name] for name in past_covariates},
        future={name: means[name] for name in future_covariates},
    )


ISSUED_AT, VALID_TIME = "issued_at", "valid_time"


def read_issued_csv(path: Path) -> dict[str, IssuedSeries]:
    """Forecasts as issued (`issued_at,valid_time,<variable>...`, ISO times, UTC if naive): each
    variable column becomes one issued covariate; an empty cell is a variable the issue did
    not forecast for that hour."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in (ISSUED_AT, VALID_TIME) if c not in header]
        names = [c for c in header if c not in (ISSUED_AT, VALID_TIME)]
        if missing or not names:
            raise ValueError(f"{path}: needs columns {ISSUED_AT}, {VALID_TIME} and at least one "
                             f"variable; the header has {header}")
        issued: list[np.datetime64] = []
        valid: list[np.datetime64] = []
        values: dict[str, list[float]] = {name: [] for name in names}
        for line, row in enumerate(reader, start=2):
            try:
                issued.append(to_datetime64(parse_iso_time(row[ISSUED_AT])))
                hour = to_datetime64(parse_iso_time(row[VALID_TIME]))
                if hour != hour.astype("datetime64[h]"):
                    raise ValueError(f"{VALID_TIME} {row[VALID_TIME]} is not the start of an hour")
                valid.append(hour)
                for name in names:
                    values[name].append(_number(row[name]))
            except ValueError as error:
                raise ValueError(f"{path}:{line}: {error}") from error
    if not issued:
        raise ValueError(f"{path}: no data rows")
    try:
        return {name: IssuedSeries(np.array(issued), np.array(valid), np.array(column))
                for name, column in values.items()}
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def write_forecasts_csv(path: Path, result: BacktestResult) -> int:
    """Write `origin,target_time,horizon,p10,p50,p90,actual`; times ISO UTC, NaN empty."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FORECAST_COLUMNS)
        for i in range(len(result.horizon)):
            writer.writerow(
                [
                    iso_hour(result.origin[i]),
                    iso_hour(result.target_time[i]),
                    int(result.horizon[i]),
                    *(_fmt(float(v[i])) for v in (result.p10, result.p50, result.p90)),
                    _fmt(float(result.actual[i])),
                ]
            )
    return len(result.horizon)


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.10g}"
