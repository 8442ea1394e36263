"""The 7-day view: hourly forecasts aggregated per day."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DailyForecast:
    day: np.datetime64  # datetime64[D]
    hours: int  # hourly points that fell on this day (24 for a full day)
    p10: float
    p50: float
    p90: float


def daily_totals(
    target_times: np.ndarray,
    p10: np.ndarray,
    p50: np.ndarray,
    p90: np.ndarray,
    utc_offset_hours: int = 0,
) -> list[DailyForecast]:
    """Sum the hourly quantiles per (local) day.

    Summing P10s (and P90s) treats the hours' errors as fully dependent. That is close to
    the truth for energy forecasts, whose errors within a day are dominated by one shared
    level error, and it errs on the side of a wider band; assuming independence would give
    a band too narrow by a factor of up to sqrt(24). Days with fewer than 24 hours (the
    first and last) are reported with their hour count so a caller can show them as partial.
    """
    local = np.asarray(target_times).astype("datetime64[h]") + np.timedelta64(utc_offset_hours, "h")
    days = local.astype("datetime64[D]")
    out = []
    for day in np.unique(days):
        on_day = days == day
        out.append(
            DailyForecast(
                day=day,
                hours=int(on_day.sum()),
                p10=float(np.sum(np.asarray(p10)[on_day])),
                p50=float(np.sum(np.asarray(p50)[on_day])),
                p90=float(np.sum(np.asarray(p90)[on_day])),
            )
        )
    return out
