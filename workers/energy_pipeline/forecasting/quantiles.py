"""Quantile post-processing: P10 <= P50 <= P90 on every row, and band widening."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUANTILES = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class QuantileForecast:
    """P10/P50/P90 per requested horizon, and how they were produced.

    `method` is "model" for a normal forecast, otherwise the name of the fallback used
    (see `models.naive.fallback_forecast`), so callers can tell a degraded forecast apart.
    """

    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray
    method: str = "model"

    def __post_init__(self) -> None:
        for name in ("p10", "p50", "p90"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))


def non_crossing(p10: np.ndarray, p50: np.ndarray, p90: np.ndarray) -> QuantileForecast:
    """Sort the three quantiles of every row (monotone rearrangement).

    Independently trained quantile models can cross; sorting is the rearrangement of
    Chernozhukov et al. (2010), which never makes the pinball loss worse. NaN rows stay NaN.
    """
    stacked = np.stack([p10, p50, p90], axis=1).astype(np.float64)
    missing = np.isnan(stacked).any(axis=1)
    stacked.sort(axis=1)
    stacked[missing] = np.nan
    return QuantileForecast(stacked[:, 0], stacked[:, 1], stacked[:, 2])


def widen(forecast: QuantileForecast, factor: float, method: str | None = None) -> QuantileForecast:
    """Scale the distance of P10 and P90 from P50 by `factor` (>= 0)."""
    if factor < 0:
        raise ValueError("widening factor must be >= 0")
    return QuantileForecast(
        p10=forecast.p50 - factor * (forecast.p50 - forecast.p10),
        p50=forecast.p50,
        p90=forecast.p50 + factor * (forecast.p90 - forecast.p50),
        method=method or forecast.method,
    )
