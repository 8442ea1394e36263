"""The original report's evaluation, for any model: an 80/20 chronological split of windows.

The report cut its hourly series into non-overlapping windows of 7 rows, each window's
rows predicting the next 7 target values, split the (window, next 7) pairs in time order
(scikit-learn's `train_test_split(test_size=0.2, shuffle=False)`: the last ceil(20 %) are
the test set), trained on the first 80 % and printed the RMSE on both parts.

`report_split` does that with any model behind the `Forecaster` interface, so the default
and the seed model get comparable figures: the model is fitted on the rows the training
pairs cover, then forecasts hours 1..7 at the end of every window (pair i: origin
7 * (i + 1)), seeing only what came before, and each part's RMSE is taken against the
measured target. The report smoothed its target before scoring, so its printed figures
are lower than these; the seed model reproduces them too (`SmoothedSplit`,
`*_smoothed` keys).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from energy_pipeline.forecasting.frame import HourlyFrame

if TYPE_CHECKING:  # models.seed imports this module: no import of `models` at run time
    from energy_pipeline.forecasting.models.base import Forecaster

WINDOW = 7  # rows in, and hours forecast out, per pair
TEST_SHARE = 0.2
# History handed to each forecast: more than either model reads for 7 hours ahead (the
# default model's longest feature, profile_168x4, reaches 4 weeks back), so the forecasts
# are those made with the whole history, at a cost per window that does not grow with it.
CONTEXT_HOURS = 5 * 168


def split_counts(pairs: int) -> tuple[int, int]:
    """(training pairs, test pairs) of `pairs` in time order, as train_test_split cuts them."""
    test = math.ceil(pairs * TEST_SHARE)
    return pairs - test, test


def rmse(errors: np.ndarray) -> float:
    """Root mean squared error over the known values (NaN: no actual); NaN with none."""
    known = errors[np.isfinite(errors)]
    return float(np.sqrt(np.mean(known**2))) if len(known) else math.nan


@runtime_checkable
class SmoothedSplit(Protocol):
    """A model that can also score the split exactly as the report did (its smoothed target)."""

    def smoothed_split(self, frame: HourlyFrame, n_train: int) -> dict[str, float]: ...


@dataclass(frozen=True)
class ReportSplit:
    train_rmse: float
    test_rmse: float
    n_train: int
    n_test: int
    # The report's own figures, where the model can reproduce them (seed).
    smoothed: dict[str, float]

    def as_dict(self) -> dict[str, float]:
        return {
            "train_rmse": self.train_rmse,
            "test_rmse": self.test_rmse,
            "n_train": float(self.n_train),
            "n_test": float(self.n_test),
            **self.smoothed,
        }


def report_split(
    frame: HourlyFrame,
    factory: Callable[[], Forecaster],
    context: int | None = CONTEXT_HOURS,
) -> ReportSplit | None:
    """The report's 80/20 evaluation of a fresh model from `factory`; None below 2 pairs.

    Each forecast sees the `context` hours before its origin (None: all of them)."""
    pairs = len(frame) // WINDOW - 1
    if pairs < 2:
        return None
    n_train, n_test = split_counts(pairs)
    model = factory()
    model.fit(frame.slice(0, WINDOW * (n_train + 1)), WINDOW)
    horizons = np.arange(1, WINDOW + 1)
    errors = np.empty((pairs, WINDOW))
    for i in range(pairs):
        origin = WINDOW * (i + 1)
        start = 0 if context is None else max(0, origin - context)
        view = frame.slice(start, origin + WINDOW).visible_at(origin - start, WINDOW)
        forecast = model.predict(view, origin - start, horizons)
        errors[i] = forecast.p50 - frame.target[origin : origin + WINDOW]
    smoothed = model.smoothed_split(frame, n_train) if isinstance(model, SmoothedSplit) else {}
    return ReportSplit(
        train_rmse=rmse(errors[:n_train]),
        test_rmse=rmse(errors[n_train:]),
        n_train=n_train,
        n_test=n_test,
        smoothed=smoothed,
    )
