"""Seasonal naive forecasts with an empirical band, and the fallback used when history is short.

P50 is the newest known value at the same phase of the season (for period s and horizon h,
lag s * ceil(h / s), stepping further back over gaps). P10/P90 add the 10th/90th
percentiles of that same lag's historical errors, so naive models get honest bands too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.forecasting.models.base import envelope
from energy_pipeline.forecasting.quantiles import QuantileForecast, non_crossing, widen

# How many seasons back a lookup may step to skip missing values.
MAX_SEASONS_BACK = 8
# Residual quantiles come from at most this much recent history, to follow slow drift.
CALIBRATION_HOURS = 8 * 168
# Below this many residuals the quantiles are too noisy; the band comes from the spread.
MIN_RESIDUALS = 48
Z90 = 1.2815515655446004  # standard normal 90 % quantile


def seasonal_lookup(
    target: np.ndarray, origin: int, target_idx: np.ndarray, horizon: np.ndarray, period: int
) -> np.ndarray:
    """Newest known target at target_idx - k * period with k >= ceil(h / period), else NaN."""
    out = np.full(len(target_idx), np.nan)
    first = np.ceil(np.asarray(horizon) / period).astype(np.int64)
    for back in range(MAX_SEASONS_BACK):
        idx = np.asarray(target_idx) - (first + back) * period
        todo = np.isnan(out) & (idx >= 0) & (idx < origin)
        out[todo] = target[idx[todo]]
    return out


def seasonal_residual_quantiles(
    target: np.ndarray, lag: int, stop: int
) -> tuple[float, float] | None:
    """10th/90th percentiles of target[t] - target[t - lag] for t in the calibration window."""
    start = max(lag, stop - CALIBRATION_HOURS)
    if stop - start < 1:
        return None
    diffs = target[start:stop] - target[start - lag : stop - lag]
    diffs = diffs[~np.isnan(diffs)]
    if len(diffs) < MIN_RESIDUALS:
        return None
    lo, hi = np.percentile(diffs, [10, 90])
    return float(lo), float(hi)


def spread_band(target: np.ndarray, stop: int) -> tuple[float, float]:
    """A symmetric +-1.28 sigma band from the recent values, for when residuals are too few."""
    recent = target[max(0, stop - CALIBRATION_HOURS) : stop]
    recent = recent[~np.isnan(recent)]
    sigma = float(np.std(recent)) if len(recent) > 1 else 0.0
    return -Z90 * sigma, Z90 * sigma


@dataclass
class SeasonalNaive:
    """Tomorrow looks like the same hour `period` hours ago (24: yesterday, 168: last week)."""

    period: int = 168
    kind: ClassVar[str] = "naive"
    bands: dict[int, tuple[float, float]] = field(default_factory=dict)

    def fit(self, frame: HourlyFrame, max_horizon: int) -> None:
        self.bands = {}
        for seasons in range(1, math.ceil(max_horizon / self.period) + 1):
            lag = seasons * self.period
            band = seasonal_residual_quantiles(frame.target, lag, len(frame))
            if band is not None:
                self.bands[lag] = band

    def predict(self, frame: HourlyFrame, origin: int, horizons: np.ndarray) -> QuantileForecast:
        horizons = np.asarray(horizons, dtype=np.int64)
        target_idx = origin + horizons - 1
        p50 = seasonal_lookup(frame.target, origin, target_idx, horizons, self.period)
        lo = np.empty(len(horizons))
        hi = np.empty(len(horizons))
        for i, h in enumerate(horizons):
            lag = self.period * math.ceil(int(h) / self.period)
            band = self.bands.get(lag) or seasonal_residual_quantiles(frame.target, lag, origin)
            lo[i], hi[i] = band or spread_band(frame.target, origin)
        return non_crossing(p50 + lo, p50, p50 + hi)

    def feature_importances(self) -> list[tuple[str, float]]:
        return []  # no trees: it repeats the season

    def to_text(self) -> str:
        bands = {str(k): list(v) for k, v in self.bands.items()}
        return envelope(self.kind, {"period": self.period, "bands": bands})

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> SeasonalNaive:
        bands = {int(k): (float(v[0]), float(v[1])) for k, v in doc["bands"].items()}
        return cls(period=int(doc["period"]), bands=bands)


# The band of a fallback forecast is widened by this factor: it is made exactly when we know
# less than usual, so it should say so.
FALLBACK_WIDENING = 1.5


def fallback_forecast(frame: HourlyFrame, origin: int, horizons: np.ndarray) -> QuantileForecast:
    """What a model answers when history is too short for it; never raises.

    In order of preference: seasonal naive 168 h if the last week is known, else seasonal
    naive 24 h if the last day is known, else the last known value; the band is the
    matching empirical (or spread-based) band widened by 1.5. With no known target at
    all the forecast is NaN with method "fallback:none".
    """
    horizons = np.asarray(horizons, dtype=np.int64)
    history = frame.target[:origin]
    known = ~np.isnan(history)
    if not known.any():
        nan = np.full(len(horizons), np.nan)
        return QuantileForecast(nan, nan, nan, method="fallback:none")
    for period in (168, 24):
        if origin >= period and known[origin - period :].sum() >= period // 2:
            model = SeasonalNaive(period)
            model.fit(frame.slice(0, origin), int(horizons.max()))
            forecast = model.predict(frame, origin, horizons)
            if not np.isnan(forecast.p50).any():
                return widen(forecast, FALLBACK_WIDENING, f"fallback:naive{period}")
    last = history[known][-1]
    lo, hi = spread_band(frame.target, origin)
    p50 = np.full(len(horizons), last)
    return widen(QuantileForecast(p50 + lo, p50, p50 + hi), FALLBACK_WIDENING, "fallback:last")
