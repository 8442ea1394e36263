"""Rolling-origin backtest: what each model would have forecast, using only what it knew.

Origins start at `test_start` and repeat every `every` hours while the whole horizon still
has a target time inside the data. At each origin the model sees `frame.visible_at`
(target and past covariates strictly before the origin, future covariates up to the last
target time); it is refitted on everything before the origin at the first origin and
again once `retrain_every` hours have passed since its last fit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.forecasting.models.base import Forecaster

# Progress callback: (model name, origins done, origins total, origin time, refitted).
Progress = Callable[[str, int, int, np.datetime64, bool], None]


@dataclass(frozen=True)
class BacktestConfig:
    horizon: int = 24
    every: int = 24
    retrain_every: int = 168
    # Index of the first origin in the frame.
    test_start: int = 0


@dataclass(frozen=True)
class BacktestResult:
    """Flat rows, one per (origin, horizon)."""

    model: str
    origin: np.ndarray  # datetime64[h]
    target_time: np.ndarray  # datetime64[h]
    horizon: np.ndarray
    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray
    actual: np.ndarray
    methods: tuple[str, ...]  # how each origin's forecast was made ("model" or a fallback)
    fit_seconds: float
    predict_seconds: float


def default_test_start(frame: HourlyFrame, horizon: int) -> int:
    """Without --test-start: the first midnight at or after 75 % of the data.

    This leaves most of the data for training and keeps the origins at a natural hour.
    """
    index = int(len(frame) * 0.75)
    hour = int(frame.times[min(index, len(frame) - 1)].astype(np.int64) % 24)
    index += (24 - hour) % 24
    return min(index, max(0, len(frame) - horizon))


def origins(n_rows: int, test_start: int, every: int, horizon: int) -> np.ndarray:
    """Origin indices from `test_start` every `every` hours while origin + horizon <= n_rows."""
    if every < 1 or horizon < 1:
        raise ValueError("every and horizon must be at least 1 hour")
    start = max(0, test_start)
    return np.arange(start, n_rows - horizon + 1, every, dtype=np.int64)


def run_backtest(
    frame: HourlyFrame,
    name: str,
    factory: Callable[[], Forecaster],
    config: BacktestConfig,
    progress: Progress | None = None,
) -> BacktestResult:
    points = origins(len(frame), config.test_start, config.every, config.horizon)
    horizons = np.arange(1, config.horizon + 1, dtype=np.int64)
    model: Forecaster | None = None
    last_fit = -(10**9)
    fit_seconds = predict_seconds = 0.0
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("p10", "p50", "p90")}
    methods: list[str] = []
    for i, origin in enumerate(points.tolist()):
        refit = model is None or origin - last_fit >= config.retrain_every
        if refit:
            started = time.perf_counter()
            model = factory()
            model.fit(frame.slice(0, origin), config.horizon)
            fit_seconds += time.perf_counter() - started
            last_fit = origin
        assert model is not None
        started = time.perf_counter()
        forecast = model.predict(frame.visible_at(origin, config.horizon), origin, horizons)
        predict_seconds += time.perf_counter() - started
        for key in parts:
            parts[key].append(getattr(forecast, key))
        methods.append(forecast.method)
        if progress is not None:
            progress(name, i + 1, len(points), frame.times[origin], refit)
    origin_idx = np.repeat(points, len(horizons))
    target_idx = origin_idx + np.tile(horizons, len(points)) - 1

    def cat(key: str) -> np.ndarray:
        return np.concatenate(parts[key]) if parts[key] else np.empty(0)

    return BacktestResult(
        model=name,
        origin=frame.times[origin_idx],
        target_time=frame.times[target_idx],
        horizon=np.tile(horizons, len(points)),
        p10=cat("p10"),
        p50=cat("p50"),
        p90=cat("p90"),
        actual=frame.target[target_idx],
        methods=tuple(methods),
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
    )
