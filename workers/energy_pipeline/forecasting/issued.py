"""Future covariates as they were forecast: every issue kept, each read as of an origin.

A weather forecast for hour t issued at time i is known from i on. At an origin o (the first
hour whose target is unknown) a model may use, for each hour it forecasts, only the newest
issue made strictly before o; a backtest that handed it the real temperature of those hours
instead would credit it with a perfect weather forecast. `IssuedSeries.as_of` answers that
question for many (origin, hour) pairs at once, so training rows (each with its own origin)
and a live forecast read the same values the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The composite sort key: valid hour (hours since the epoch) in the high bits, issue time
# (seconds since the epoch) in the low 40 bits, which hold every time until the year 36812.
_SHIFT = np.int64(1) << np.int64(40)


@dataclass(frozen=True)
class IssuedSeries:
    """One covariate as forecast: `values[k]` for hour `valid_time[k]`, issued at `issued_at[k]`.

    Rows without a value are dropped; an issue that names one hour twice is refused.
    """

    issued_at: np.ndarray  # datetime64[s]
    valid_time: np.ndarray  # datetime64[h]
    values: np.ndarray
    sorted_keys: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        issued = np.asarray(self.issued_at).astype("datetime64[s]")
        valid = np.asarray(self.valid_time).astype("datetime64[h]")
        values = np.asarray(self.values, dtype=np.float64)
        if not len(issued) == len(valid) == len(values):
            raise ValueError("IssuedSeries: issued_at, valid_time and values must match")
        known = ~np.isnan(values)
        issued, valid, values = issued[known], valid[known], values[known]
        keys = _keys(valid, issued)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        if len(keys) > 1 and np.any(keys[1:] == keys[:-1]):
            twice = order[np.flatnonzero(keys[1:] == keys[:-1])[0]]
            raise ValueError(f"the issue of {issued[twice]} names hour {valid[twice]} twice")
        object.__setattr__(self, "issued_at", issued[order])
        object.__setattr__(self, "valid_time", valid[order])
        object.__setattr__(self, "values", values[order])
        object.__setattr__(self, "sorted_keys", keys)

    def __len__(self) -> int:
        return len(self.values)

    def as_of(self, origins: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each pair: the value of the newest issue strictly before `origins[i]` for hour
        `valid[i]`, and that issue's time; NaN and NaT where no such issue exists."""
        origins = np.asarray(origins).astype("datetime64[s]")
        valid = np.asarray(valid).astype("datetime64[h]")
        origins, valid = np.broadcast_arrays(origins, valid)
        keys = self.sorted_keys
        # The last key not after (hour, origin - 1 s): the newest issue before the origin,
        # if it is an issue for that hour at all.
        query = _keys(valid, origins - np.timedelta64(1, "s"))
        index = np.searchsorted(keys, query, side="right") - 1
        found = index >= 0
        found[found] = keys[index[found]] // _SHIFT == query[found] // _SHIFT
        value = np.full(valid.shape, np.nan)
        issued = np.full(valid.shape, np.datetime64("NaT"), dtype="datetime64[s]")
        value[found] = self.values[index[found]]
        issued[found] = self.issued_at[index[found]]
        return value, issued

    def before(self, origin: np.datetime64) -> IssuedSeries:
        """Only the issues made strictly before `origin`: what a forecaster there may hold."""
        keep = self.issued_at < np.datetime64(origin, "s")
        return IssuedSeries(self.issued_at[keep], self.valid_time[keep], self.values[keep])


def _keys(valid: np.ndarray, issued: np.ndarray) -> np.ndarray:
    hours = valid.astype("datetime64[h]").astype(np.int64)
    seconds = issued.astype("datetime64[s]").astype(np.int64)
    if np.any(seconds < 0) or np.any(seconds >= _SHIFT) or np.any(hours < 0):
        raise ValueError("issue and valid times must lie between 1970 and the year 36812")
    return hours * _SHIFT + seconds
