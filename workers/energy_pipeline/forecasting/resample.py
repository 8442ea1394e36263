"""Irregular or sub-hourly readings to a gap-free hourly grid of means."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def hourly_means(
    times: np.ndarray, columns: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Average every column within each clock hour; hours with no value become NaN.

    Returns (hour starts as `datetime64[h]` from the first to the last hour seen, means).
    NaN inputs are ignored, so a missing reading does not blank its whole hour.
    """
    stamps = np.asarray(times).astype("datetime64[s]")
    if len(stamps) == 0:
        return np.array([], dtype="datetime64[h]"), {k: np.array([]) for k in columns}
    hours = stamps.astype("datetime64[h]")
    first, last = hours.min(), hours.max()
    grid = np.arange(first, last + np.timedelta64(1, "h"), dtype="datetime64[h]")
    slot = (hours - first).astype(np.int64)
    out: dict[str, np.ndarray] = {}
    for name, raw in columns.items():
        values = np.asarray(raw, dtype=np.float64)
        known = ~np.isnan(values)
        sums = np.bincount(slot[known], weights=values[known], minlength=len(grid))
        counts = np.bincount(slot[known], minlength=len(grid))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return grid, out
