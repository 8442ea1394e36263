"""The hourly rows a forecast is made from, and the forecast it gives: plain data.

A window is the recent `hourly_features` rows of one site, oldest first, ending with the
hour that just closed (DESIGN: `hourly_features`, proto `ForecastRequest.window`). This
module needs nothing but numpy, so ingest (which sends windows to inference) and the gRPC
conversions never import a model library; `window` computes the forecasts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

TARGET_COLUMN = "avg_energyconsumption"
COVARIATE_COLUMNS = ("avg_temperature", "avg_humidity", "avg_squarefootage", "avg_renewableenergy")
MAX_HORIZON = 168
# Longest lag the default model reads (2 weeks) plus a day: a window this long loses nothing.
RECOMMENDED_WINDOW_HOURS = 336 + 24


@dataclass(frozen=True)
class HourlyRow:
    """One `hourly_features` row (without site_id)."""

    hour: datetime | np.datetime64
    avg_temperature: float
    avg_humidity: float
    avg_squarefootage: float
    avg_renewableenergy: float
    avg_energyconsumption: float
    n_readings: int = 1

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> HourlyRow:
        """From a DB row or dict; missing or NULL sensor averages become NaN."""

        def number(name: str) -> float:
            value = row.get(name)
            return math.nan if value is None else float(value)

        return cls(
            hour=row["hour"],
            avg_temperature=number("avg_temperature"),
            avg_humidity=number("avg_humidity"),
            avg_squarefootage=number("avg_squarefootage"),
            avg_renewableenergy=number("avg_renewableenergy"),
            avg_energyconsumption=number(TARGET_COLUMN),
            n_readings=int(row.get("n_readings") or 0),
        )


@dataclass(frozen=True)
class ForecastPoint:
    target_time: np.datetime64  # start of the hour, datetime64[h], UTC
    horizon: int
    p10: float
    p50: float
    p90: float


@dataclass(frozen=True)
class WindowForecast:
    origin: np.datetime64
    points: tuple[ForecastPoint, ...]
    # "model", or the fallback used (e.g. "fallback:naive168") when the window is too short.
    method: str
    # Inputs the model was trained with that the request lacked (e.g. "weather_forecast").
    missing_inputs: tuple[str, ...] = ()
