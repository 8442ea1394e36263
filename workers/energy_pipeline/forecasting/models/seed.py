"""The original report's recipe, kept as a baseline (`--model seed`).

Faithful to the report: every column (target and covariates) is smoothed with a
Savitzky-Golay filter (window 5, order 2); the series is cut into non-overlapping windows
of 7 hourly rows; each window's rows (all columns, flattened) predict the next 7 target
values, one LGBMRegressor per step with the report's hyper-parameters. Two deliberate
departures, both about honesty rather than skill:

- smoothing sees history only: at fit time the training span, at prediction time the rows
  before the origin (edge points use SciPy's polynomial fit over the last window), never
  data at or after the origin; gaps are linearly interpolated first because the filter
  cannot take NaN;
- horizons beyond 7 chain the model's own predictions (past covariates are held at their
  last smoothed value, future covariates read at their times).

`LGBMRegressor` is LightGBM's scikit-learn wrapper; the same models are trained through
`lightgbm.train` with the equivalent parameters (subsample -> bagging_fraction, which like
in the report has no effect without a bagging frequency) so scikit-learn is not needed.
The recipe has no notion of uncertainty, so P10 = P50 = P90.

The report's own evaluation (80/20 chronological split of the windows, RMSE on both parts,
target smoothed as everything else) is `smoothed_split`; `split.report_split` scores the
same split against the measured target, as for any model. Features are named
`<column>_lag<k>`: the column's smoothed value k rows before the first step forecast
(`target` is the energy consumption).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
from scipy.signal import savgol_filter

from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.forecasting.models.base import envelope, gain_shares
from energy_pipeline.forecasting.models.naive import fallback_forecast
from energy_pipeline.forecasting.quantiles import QuantileForecast
from energy_pipeline.forecasting.split import WINDOW, rmse

TARGET_NAME = "target"
SAVGOL_WINDOW = 5
SAVGOL_ORDER = 2
# Fewer windows than this cannot train 7 trees sensibly; the fallback is used instead.
MIN_WINDOWS = 14

# The report's LGBMRegressor(learning_rate=0.05, n_estimators=200, max_depth=5,
# subsample=0.8, colsample_bytree=0.8, num_leaves=31) in `lightgbm.train` terms.
REPORT_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "learning_rate": 0.05,
    "max_depth": 5,
    "bagging_fraction": 0.8,
    "feature_fraction": 0.8,
    "num_leaves": 31,
    "verbosity": -1,
}
REPORT_ROUNDS = 200


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN (edges held flat); all-NaN stays all-NaN."""
    known = ~np.isnan(values)
    if known.all() or not known.any():
        return values.copy()
    idx = np.arange(len(values))
    return np.interp(idx, idx[known], values[known])


def smooth(values: np.ndarray) -> np.ndarray:
    """Savitzky-Golay (5, 2) of one column; the input must be history only."""
    filled = fill_gaps(values)
    if len(filled) < SAVGOL_WINDOW or np.isnan(filled).any():
        return filled
    return savgol_filter(filled, SAVGOL_WINDOW, SAVGOL_ORDER, mode="interp")


@dataclass
class SeedModel:
    """The report's windowed LightGBM, one regressor per step ahead (see module docstring)."""

    past: tuple[str, ...] = ()
    future: tuple[str, ...] = ()
    seed: int = 7
    # Single-threaded: ~200 rows per booster is far too little work to share, and OpenMP
    # threads waiting on each other crawl on a busy machine (measured: 0.3 s vs 21 s).
    num_threads: int = 1
    kind: ClassVar[str] = "seed"
    boosters: list[lgb.Booster] = field(default_factory=list)

    def _columns(self, frame: HourlyFrame, stop: int) -> np.ndarray:
        """Smoothed [target, *past, *future] of rows 0..stop-1, shape (stop, columns)."""
        cols = [frame.target[:stop]]
        cols += [frame.past[name][:stop] for name in self.past]
        cols += [frame.future_column(name)[:stop] for name in self.future]
        return np.stack([smooth(c) for c in cols], axis=1)

    def feature_names(self) -> list[str]:
        """Names of the flattened window, row by row as `_pairs` lays it out."""
        columns = [TARGET_NAME, *self.past, *self.future]
        return [f"{c}_lag{WINDOW - row}" for row in range(WINDOW) for c in columns]

    @staticmethod
    def _pairs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The non-overlapping windows of smoothed rows (x) and the next 7 targets (y)."""
        starts = np.arange(0, len(rows) - 2 * WINDOW + 1, WINDOW)
        if len(starts) == 0:
            return np.empty((0, WINDOW * rows.shape[1])), np.empty((0, WINDOW))
        x = np.stack([rows[s : s + WINDOW].ravel() for s in starts])
        y = np.stack([rows[s + WINDOW : s + 2 * WINDOW, 0] for s in starts])
        return x, y

    def _train(self, x: np.ndarray, y: np.ndarray) -> list[lgb.Booster]:
        """One booster per step ahead, with the report's hyper-parameters."""
        params = {**REPORT_PARAMS, "seed": self.seed, "num_threads": self.num_threads}
        names = self.feature_names()
        boosters = []
        for step in range(WINDOW):
            ok = np.isfinite(y[:, step])
            data = lgb.Dataset(x[ok], y[ok, step], feature_name=names)
            boosters.append(lgb.train(params, data, num_boost_round=REPORT_ROUNDS))
        return boosters

    def fit(self, frame: HourlyFrame, max_horizon: int) -> None:
        self.boosters = []
        x, y = self._pairs(self._columns(frame, len(frame)))
        if len(x) < MIN_WINDOWS:
            return
        self.boosters = self._train(x, y)

    def smoothed_split(self, frame: HourlyFrame, n_train: int) -> dict[str, float]:
        """The report's figures: its 80/20 split scored against the smoothed target.

        As the report did it: the whole series smoothed first, boosters trained on the
        first `n_train` pairs, RMSE of all 7 steps of the training and of the test pairs.
        Trains boosters of its own; the model itself is left as it is. {} when the
        training part is too short for the recipe.
        """
        x, y = self._pairs(self._columns(frame, len(frame)))
        if n_train < MIN_WINDOWS or n_train >= len(x):
            return {}
        boosters = self._train(x[:n_train], y[:n_train])
        predicted = np.stack([b.predict(x, num_threads=self.num_threads) for b in boosters], 1)
        return {
            "train_rmse_smoothed": rmse(predicted[:n_train] - y[:n_train]),
            "test_rmse_smoothed": rmse(predicted[n_train:] - y[n_train:]),
        }

    def feature_importances(self) -> list[tuple[str, float]]:
        """Gain shares over the seven step boosters (`base.gain_shares`)."""
        return gain_shares(self.boosters)

    def predict(self, frame: HourlyFrame, origin: int, horizons: np.ndarray) -> QuantileForecast:
        horizons = np.asarray(horizons, dtype=np.int64)
        if not self.boosters or origin < WINDOW or len(horizons) == 0:
            return fallback_forecast(frame, origin, horizons)
        history = self._columns(frame, origin)
        if np.isnan(history[-WINDOW:]).any():
            return fallback_forecast(frame, origin, horizons)
        n_past = len(self.past)
        steps = int(horizons.max())
        rows = history[-WINDOW:].copy()
        future = [frame.future_column(name) for name in self.future]
        predicted: list[float] = []
        while len(predicted) < steps:
            x = rows[-WINDOW:].ravel()[None, :]
            block = [float(b.predict(x, num_threads=1)[0]) for b in self.boosters]
            for value in block:
                t = origin + len(predicted)
                row = rows[-1].copy()
                row[0] = value  # the chained target; past covariates stay as last known
                for j, values in enumerate(future):
                    if t < len(frame) and not np.isnan(values[t]):
                        row[1 + n_past + j] = values[t]
                rows = np.vstack([rows, row])
                predicted.append(value)
        p50 = np.array(predicted)[horizons - 1]
        return QuantileForecast(p50, p50.copy(), p50.copy())

    def to_text(self) -> str:
        return envelope(
            self.kind,
            {
                "past": list(self.past),
                "future": list(self.future),
                "seed": self.seed,
                "params": {**REPORT_PARAMS, "num_boost_round": REPORT_ROUNDS},
                "boosters": [b.model_to_string() for b in self.boosters],
            },
        )

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> SeedModel:
        return cls(
            past=tuple(doc["past"]),
            future=tuple(doc["future"]),
            seed=int(doc["seed"]),
            boosters=[lgb.Booster(model_str=s) for s in doc["boosters"]],
        )
