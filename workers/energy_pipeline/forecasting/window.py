"""Forecasts from a window of `hourly_features` rows: the API the inference service wraps.

A window is the recent hourly rows of one site, oldest first, ending with the hour that
just closed (DESIGN: `hourly_features`, proto `ForecastRequest.window`). The origin is
the hour after the last row; horizon h targets origin + h - 1 hours. Rows may have gaps or
arrive unsorted; an hour with `n_readings == 0` counts as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np

from energy_pipeline.core.contracts import WEATHER_FORECAST
from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.forecasting.issued import IssuedSeries
from energy_pipeline.forecasting.models.base import Forecaster
from energy_pipeline.forecasting.models.default import DefaultModel, DefaultParams
from energy_pipeline.forecasting.rows import (
    COVARIATE_COLUMNS,
    MAX_HORIZON,
    TARGET_COLUMN,
    ForecastPoint,
    HourlyRow,
    WindowForecast,
)


def _hour(value: datetime | np.datetime64) -> np.datetime64:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return np.datetime64(value, "h")
    return np.datetime64(value, "h")


def frame_from_rows(rows: Sequence[HourlyRow], until: np.datetime64 | None = None) -> HourlyFrame:
    """A gap-free hourly frame of the rows, in any order (duplicate hours averaged).

    `until` (exclusive) extends the frame with unknown hours, e.g. to the origin when the
    newest rows are missing.
    """
    if not rows:
        raise ValueError("empty window")
    hours = np.array([_hour(r.hour) for r in rows], dtype="datetime64[h]")
    usable = np.array([r.n_readings > 0 for r in rows], dtype=bool)
    first, last = hours.min(), hours.max()
    stop = last + np.timedelta64(1, "h")
    if until is not None:
        stop = max(stop, np.datetime64(until, "h"))
    n = int((stop - first) // np.timedelta64(1, "h"))
    slot = (hours - first).astype(np.int64)[usable]
    means: dict[str, np.ndarray] = {}
    for name in (TARGET_COLUMN, *COVARIATE_COLUMNS):
        values = np.array([getattr(r, name) for r in rows], dtype=np.float64)[usable]
        known = ~np.isnan(values)
        sums = np.bincount(slot[known], weights=values[known], minlength=n)
        counts = np.bincount(slot[known], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[name] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return HourlyFrame(
        times=first + np.arange(n).astype("timedelta64[h]"),
        target=means[TARGET_COLUMN],
        past={name: means[name] for name in COVARIATE_COLUMNS},
    )


def with_issued(
    frame: HourlyFrame, wanted: Sequence[str], issued: Mapping[str, IssuedSeries],
    origin: int, stop: int,
) -> tuple[HourlyFrame, tuple[str, ...]]:
    """`frame` holding the issued covariates a model reads (`wanted`), each empty where the
    request had none, and the model inputs missing: "weather_forecast" when not one of them
    has a value issued before the origin for any hour from the origin to `stop`."""
    if not wanted:
        return frame, ()
    empty = IssuedSeries(np.empty(0, "datetime64[s]"), np.empty(0, "datetime64[h]"),
                         np.empty(0))
    series = {name: issued.get(name, empty) for name in wanted}
    hours = frame.start + np.arange(origin, stop).astype("timedelta64[h]")
    start = frame.start + np.timedelta64(origin, "h")
    known = any(
        not np.isnan(s.as_of(np.full(len(hours), start), hours)[0]).all()
        for s in series.values()
    )
    return replace(frame, issued=series), () if known else (WEATHER_FORECAST,)


def forecast_window(
    model: Forecaster,
    rows: Sequence[HourlyRow],
    horizons: Sequence[int],
    origin: np.datetime64 | None = None,
    issued: Mapping[str, IssuedSeries] | None = None,
) -> WindowForecast:
    """P10/P50/P90 per horizon from the window; `origin` defaults to the last row's hour + 1.

    Horizons outside 1..168 raise ValueError (a bad request, not bad data); a short or
    gappy window gives a fallback forecast, reported in `method`. `issued` holds the
    site's weather forecast as issued (by variable); a model trained with it and handed
    none predicts as it learnt to without (its training hid the forecast from some
    origins) and says so in `missing_inputs`.
    """
    hs = np.array(sorted(set(int(h) for h in horizons)), dtype=np.int64)
    if len(hs) == 0 or hs.min() < 1 or hs.max() > MAX_HORIZON:
        raise ValueError(f"horizons must be in 1..{MAX_HORIZON}")
    if not rows:
        raise ValueError("empty window")
    frame = frame_from_rows(rows, until=origin)
    if origin is None:
        origin = frame.times[-1] + np.timedelta64(1, "h")
    at = frame.index_of(origin)
    view = frame.slice(0, at).extended_to(at + int(hs.max()))
    # Only the default model reads issued covariates: the seed recipe has none live.
    wanted = model.future if isinstance(model, DefaultModel) else ()
    view, missing = with_issued(view, wanted, issued or {}, at, at + int(hs.max()))
    forecast = model.predict(view, at, hs)
    targets = origin + (hs - 1).astype("timedelta64[h]")
    points = tuple(
        ForecastPoint(t, int(h), float(lo), float(mid), float(hi))
        for t, h, lo, mid, hi in zip(
            targets, hs, forecast.p10, forecast.p50, forecast.p90, strict=True
        )
    )
    return WindowForecast(origin=np.datetime64(origin, "h"), points=points,
                          method=forecast.method, missing_inputs=missing)


def train_on_rows(
    rows: Sequence[HourlyRow],
    max_horizon: int = MAX_HORIZON,
    params: DefaultParams | None = None,
) -> DefaultModel:
    """A default model trained on a site's hourly_features history, with the sensors as past
    covariates (they are measured, not forecast, so only their past is known)."""
    model = DefaultModel(past=COVARIATE_COLUMNS, params=params or DefaultParams())
    model.fit(frame_from_rows(rows), max_horizon)
    return model
