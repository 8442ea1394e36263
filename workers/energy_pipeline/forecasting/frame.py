"""`HourlyFrame`: a regular hourly series (target plus covariates) and what is visible when.

Every forecast is made at an *origin*: the index of the first hour whose target is not yet
known. Target and past covariates are visible strictly before the origin; future
covariates (calendar-like facts) are visible at any time up to the last target time; issued
covariates (weather forecasts with their issue times) only as issued strictly before the
origin. `visible_at` enforces that by blanking or dropping everything else, so a model
handed such a view cannot see the future even by accident.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from energy_pipeline.forecasting.issued import IssuedSeries

HOUR = np.timedelta64(1, "h")


def to_datetime64(moment: datetime) -> np.datetime64:
    """A time from `core.timeutil` (UTC-aware) as forecasting holds times: naive UTC, seconds."""
    return np.datetime64(moment.astimezone(UTC).replace(tzinfo=None), "s")


def iso_hour(time: np.datetime64) -> str:
    """`2000-06-05T13:00:00Z` for the hour starting at `time`."""
    return str(np.datetime64(time, "s")) + "Z"


@dataclass(frozen=True)
class HourlyFrame:
    """Hourly values on a gap-free grid; unknown hours are NaN.

    `times` are the starts of the hours, `datetime64[h]`, strictly increasing by one hour.
    """

    times: np.ndarray
    target: np.ndarray
    past: Mapping[str, np.ndarray] = field(default_factory=dict)
    future: Mapping[str, np.ndarray] = field(default_factory=dict)
    # Future covariates as they were forecast, each issue with its time (weather forecasts).
    issued: Mapping[str, IssuedSeries] = field(default_factory=dict)

    def __post_init__(self) -> None:
        times = np.asarray(self.times).astype("datetime64[h]")
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "target", np.asarray(self.target, dtype=np.float64))
        object.__setattr__(
            self, "past", {k: np.asarray(v, dtype=np.float64) for k, v in self.past.items()}
        )
        object.__setattr__(
            self, "future", {k: np.asarray(v, dtype=np.float64) for k, v in self.future.items()}
        )
        object.__setattr__(self, "issued", dict(self.issued))
        clash = sorted(set(self.issued) & (set(self.future) | set(self.past)))
        if clash:
            raise ValueError(f"column(s) {clash} are both issued and measured or known ahead")
        n = len(times)
        if n > 1 and not np.all(np.diff(times) == HOUR):
            raise ValueError("HourlyFrame.times must be a gap-free hourly grid")
        for name, values in [("target", self.target), *self.past.items(), *self.future.items()]:
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} values for {n} hours")

    def __len__(self) -> int:
        return len(self.times)

    @property
    def start(self) -> np.datetime64:
        return self.times[0]

    def future_column(self, name: str) -> np.ndarray:
        """A future covariate as one value per hour: known-ahead values as they are; an issued
        one from the newest issue made before each hour began (in a `visible_at` view, before
        the origin for every hour after it). For models that read a plain column."""
        if name in self.future:
            return self.future[name]
        hours = self.times.astype("datetime64[s]")
        return self.issued[name].as_of(hours, self.times)[0]

    def index_of(self, time: np.datetime64) -> int:
        """Index of the hour `time` falls in; may be outside 0..len-1."""
        return int((np.datetime64(time, "h") - self.start) // HOUR)

    def slice(self, start: int, stop: int) -> HourlyFrame:
        """Rows start..stop-1, every column cut the same way."""
        return HourlyFrame(
            times=self.times[start:stop],
            target=self.target[start:stop],
            past={k: v[start:stop] for k, v in self.past.items()},
            future={k: v[start:stop] for k, v in self.future.items()},
            issued=self.issued,
        )

    def visible_at(self, origin: int, horizon: int) -> HourlyFrame:
        """What a forecaster may know at `origin` when forecasting `horizon` hours.

        Rows end at the last target time (origin + horizon - 1); target and past
        covariates at or after the origin are NaN; of the issued covariates only the issues
        made strictly before the origin's hour began remain.
        """
        stop = min(len(self), origin + horizon)
        view = self.slice(0, stop)
        target = view.target.copy()
        target[origin:] = np.nan
        past = {}
        for name, values in view.past.items():
            hidden = values.copy()
            hidden[origin:] = np.nan
            past[name] = hidden
        start = self.start + HOUR * origin
        issued = {name: series.before(start) for name, series in self.issued.items()}
        return HourlyFrame(times=view.times, target=target, past=past, future=view.future,
                           issued=issued)

    def extended_to(self, stop: int) -> HourlyFrame:
        """The same frame padded with NaN hours up to length `stop` (no-op if long enough)."""
        extra = stop - len(self)
        if extra <= 0:
            return self
        pad = np.full(extra, np.nan)
        times = np.concatenate([self.times, self.times[-1] + HOUR * np.arange(1, extra + 1)])
        return HourlyFrame(
            times=times,
            target=np.concatenate([self.target, pad]),
            past={k: np.concatenate([v, pad]) for k, v in self.past.items()},
            future={k: np.concatenate([v, pad]) for k, v in self.future.items()},
            issued=self.issued,
        )
