"""The default model: LightGBM quantile corrections to an adjusted seasonal baseline.

Direct multi-horizon: one LightGBM booster per quantile (P10, P50, P90) serves every
horizon 1..max_horizon. Each training row is a (target time, horizon) pair whose features
are computed as they were known at that pair's origin (see `features`), with the horizon
itself a feature; nothing is fed back, so errors do not compound over the horizon.

Anchor: the boosters do not predict the target itself but its deviation from a baseline,
in units of the standard deviation of the week before the origin:

    z = (y - anchor) / std_168h

where the anchor is one of three baselines (`features.BaselineFeatures`): "blend", the mean
of the week- and day-adjusted seasonal naive forecasts; "week", the week-adjusted one; or
"level", the mean of the week before the origin. By default ("auto") `fit` takes the one
that forecast the last weeks of its training data best on its own (`_choose_anchor`).
Target-valued features are expressed the same way.
Trees cannot extrapolate and learn smooth additive corrections only from plenty of data;
anchoring them on a strong, level-following baseline means the boosters only have to
learn what the baseline gets wrong (weather, weekday shape, horizon-dependent bias). The
inverse transform is monotone, so quantiles stay quantiles.

Hold-out: `fit` keeps the last `holdout_hours` of targets aside, trains with early
stopping on them (so on little or noisy data the boosters stop early and the model stays
close to the baseline instead of fitting noise), and measures there how far the P10/P90
band must be scaled around P50 to cover 80 % (split conformal; in-sample quantile trees
are overconfident). It then refits on all rows with the chosen number of rounds.

Fallback: with fewer than `min_train_hours` known hours at fit time, or fewer than
`min_window_hours` known hours in the 168 h before a prediction origin, predictions come
from `naive.fallback_forecast` (seasonal naive with a widened band), never an exception.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np

from energy_pipeline.core.contracts import MIN_TRAIN_HOURS
from energy_pipeline.forecasting.features import FeatureMatrix, default_pipeline
from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.forecasting.models.base import envelope, gain_shares
from energy_pipeline.forecasting.models.naive import fallback_forecast
from energy_pipeline.forecasting.quantiles import (
    QUANTILES,
    QuantileForecast,
    non_crossing,
    widen,
)

SCALE_WINDOW = 168
ANCHORS = ("blend", "week", "level")  # in order of preference when "auto" finds a tie
TARGET_COVERAGE = 0.8  # P10..P90


@dataclass(frozen=True)
class DefaultParams:
    """Hyper-parameters; stored with the model so a registry can show and reproduce them."""

    num_boost_round: int = 300
    early_stopping_rounds: int = 30
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    # What the boosters correct: "blend" (mean of the week- and day-adjusted baselines),
    # "week" (week-adjusted baseline only), "level" (mean of the week before the origin), or
    # "auto": of those three, the one with the lowest mean absolute error, as a forecast on
    # its own, over the last `anchor_hours` of the training data (see `_choose_anchor`).
    anchor: str = "auto"
    anchor_hours: int = 1344
    # Training rows are (target, horizon) pairs; above this many, horizons are sampled.
    max_rows: int = 60_000
    holdout_hours: int = 336
    min_train_hours: int = MIN_TRAIN_HOURS
    min_window_hours: int = 84
    # Boosters trained at once (0: one per core); each booster itself uses one thread.
    num_threads: int = 0
    seed: int = 7
    # Share of training origins whose issued covariates (weather forecasts) are hidden, so the
    # boosters learn what to do without them: a live request that arrives with no forecast
    # then gets the forecast of a model that learnt without weather, not NaN sent down
    # branches trained never to see it. Measured (tests/unit/test_forecast_weather_inputs.py
    # data): without forecasts, MAE 27.9 at 0 and 20.3 at 0.1, as a model trained without
    # weather (20.3); with them, 10.7 either way.
    issued_dropout: float = 0.1


@dataclass(frozen=True)
class _Rows:
    """Training rows in the boosters' units."""

    x: np.ndarray
    z: np.ndarray
    target_idx: np.ndarray
    names: tuple[str, ...]


@dataclass
class DefaultModel:
    """Quantile LightGBM over an adjusted seasonal baseline; see the module docstring."""

    past: tuple[str, ...] = ()
    future: tuple[str, ...] = ()
    params: DefaultParams = field(default_factory=DefaultParams)
    kind: ClassVar[str] = "default"
    boosters: dict[float, lgb.Booster] = field(default_factory=dict)
    band_factor: float = 1.0
    feature_names: tuple[str, ...] = ()
    max_horizon: int = 0
    trained: dict[str, Any] = field(default_factory=dict)
    # The anchor in use: `params.anchor`, or what "auto" chose at fit time.
    anchor: str = ""

    @property
    def fallback_only(self) -> bool:
        return not self.boosters

    # -- features -------------------------------------------------------------------

    def _matrix(
        self, frame: HourlyFrame, target_idx: np.ndarray, horizon: np.ndarray
    ) -> FeatureMatrix:
        """The pipeline's features, in the target's own units."""
        matrix = default_pipeline(self.past, self.future).transform(frame, target_idx, horizon)
        if self.feature_names and matrix.names != self.feature_names:
            # A model saved before features were added reads only the columns it knows.
            matrix = matrix.select(self.feature_names)
        return matrix

    def _scaled(self, matrix: FeatureMatrix) -> tuple[FeatureMatrix, np.ndarray, np.ndarray]:
        """Features relative to the anchor and scale, plus the per-row (anchor, scale)."""
        anchor = self._anchor(matrix, self.anchor)
        std_col = matrix.names.index(f"roll{SCALE_WINDOW}_std")
        scale = matrix.values[:, std_col].copy()
        # A flat week (std 0) must not divide by zero; any positive scale keeps order.
        scale = np.where(np.isfinite(scale) & (scale > 1e-9), scale, 1.0)
        values = matrix.values.copy()
        level, delta = matrix.mask("level"), matrix.mask("delta")
        values[:, level] = (values[:, level] - anchor[:, None]) / scale[:, None]
        values[:, delta] = values[:, delta] / scale[:, None]
        # Keep the raw scale too, so the model can tell quiet weeks from busy ones.
        values[:, std_col] = scale
        return FeatureMatrix(matrix.names, values, matrix.units), anchor, scale

    @staticmethod
    def _anchor(matrix: FeatureMatrix, kind: str) -> np.ndarray:
        """Per row: the baseline the boosters correct, with fallbacks over gaps."""
        level = matrix.column(f"roll{SCALE_WINDOW}_mean")
        week, day = matrix.column("week_adjusted"), matrix.column("day_adjusted")
        if kind == "blend":
            both = np.stack([week, day])
            anchor = np.where(np.isnan(both).all(axis=0), np.nan, np.nansum(both, axis=0))
            anchor = anchor / np.maximum((~np.isnan(both)).sum(axis=0), 1)
        elif kind == "week":
            anchor = week.copy()
        elif kind == "level":
            anchor = level.copy()
        else:
            raise ValueError(f"unknown anchor {kind!r}")
        for fallback in (matrix.column("last_same_168"), matrix.column("profile_24x7"), level):
            anchor = np.where(np.isnan(anchor), fallback, anchor)
        return anchor

    # -- training -------------------------------------------------------------------

    def _training_pairs(
        self, frame: HourlyFrame, max_horizon: int
    ) -> tuple[np.ndarray, np.ndarray]:
        known = np.flatnonzero(~np.isnan(frame.target))
        per_target = max(1, min(max_horizon, self.params.max_rows // max(1, len(known))))
        if per_target == max_horizon:
            horizon = np.tile(np.arange(1, max_horizon + 1), len(known))
            target_idx = np.repeat(known, max_horizon)
        else:
            # Sampling horizons (not targets) keeps every hour of the history in training.
            rng = np.random.default_rng(self.params.seed)
            keys = rng.random((len(known), max_horizon)).argsort(axis=1)[:, :per_target]
            horizon = (keys + 1).ravel()
            target_idx = np.repeat(known, per_target)
        # Mirror inference: an origin needs a week of history for its level and scale.
        keep = target_idx - horizon + 1 >= SCALE_WINDOW
        return target_idx[keep], horizon[keep]

    def _rows(
        self, frame: HourlyFrame, target_idx: np.ndarray, horizon: np.ndarray, raw: FeatureMatrix
    ) -> _Rows:
        matrix, anchor, scale = self._scaled(raw)
        z = (frame.target[target_idx] - anchor) / scale
        ok = np.isfinite(z)
        values = self._drop_issued(frame, matrix, target_idx - horizon + 1)
        return _Rows(values[ok], z[ok], target_idx[ok], matrix.names)

    def _drop_issued(
        self, frame: HourlyFrame, matrix: FeatureMatrix, origin: np.ndarray
    ) -> np.ndarray:
        """The matrix with every feature of the issued covariates blanked at a random
        `issued_dropout` share of the origins (all rows of one origin alike, as a live
        request lacks the forecast for all its horizons at once)."""
        issued = [n for n in self.future if n in frame.issued]
        share = self.params.issued_dropout
        if not issued or share <= 0:
            return matrix.values
        # The names WeatherFeatures gives them, and the apparent temperature made of them.
        columns = [
            j for j, name in enumerate(matrix.names)
            if name.endswith(("_at_target", "_to_target"))
            and name.startswith((*issued, "apparent_temperature"))
        ]
        hidden = np.random.default_rng(self.params.seed + 1).random(len(frame)) < share
        values = matrix.values.copy()
        rows = hidden[np.clip(origin, 0, len(frame) - 1)]
        values[np.ix_(rows, columns)] = np.nan
        return values

    def _booster_config(self, quantile: float) -> dict[str, Any]:
        p = self.params
        return {
            "objective": "quantile",
            "alpha": quantile,
            "learning_rate": p.learning_rate,
            "num_leaves": p.num_leaves,
            "min_data_in_leaf": p.min_data_in_leaf,
            "feature_fraction": p.feature_fraction,
            "bagging_fraction": p.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": p.lambda_l2,
            "num_threads": 1,
            "seed": p.seed,
            "deterministic": True,
            "verbosity": -1,
        }

    def _train(
        self,
        rows: _Rows,
        train: np.ndarray,
        rounds: dict[float, int],
        valid: np.ndarray | None = None,
    ) -> dict[float, lgb.Booster]:
        """One booster per quantile; with `valid`, early stopping on those rows."""
        # The Dataset is built with the boosters' own parameters (they differ only in
        # `alpha`, which is not a Dataset parameter), so LightGBM checks them once, here,
        # in this thread. Built without them, each `lgb.train` below re-checks them against
        # the shared Dataset, and a check that fails frees its handle while the other
        # threads train on it: a bad TRAIN_MODEL_PARAMS (num_leaves 1) crashed `train`
        # with SIGSEGV about every second run instead of failing the site.
        data = lgb.Dataset(
            rows.x[train],
            rows.z[train],
            feature_name=list(rows.names),
            free_raw_data=False,
            params=self._booster_config(QUANTILES[0]),
        )
        # A validation Dataset per booster: `lgb.train` writes to its valid sets (parameters,
        # then feature names through the C API, in `set_reference`), and five threads doing so
        # on one shared handle aborted the process (LightGBM 4.7.0, once in a CI run).
        valid_data: dict[float, lgb.Dataset] = {}
        if valid is not None:
            valid_data = {q: lgb.Dataset(rows.x[valid], rows.z[valid], reference=data)
                          for q in QUANTILES}

        def train_one(q: float) -> lgb.Booster:
            callbacks = []
            if valid_data:
                stop = lgb.early_stopping(self.params.early_stopping_rounds, verbose=False)
                callbacks.append(stop)
            return lgb.train(
                self._booster_config(q),
                data,
                num_boost_round=rounds[q],
                valid_sets=[valid_data[q]] if valid_data else None,
                callbacks=callbacks,
            )

        # One single-threaded booster per quantile, side by side: LightGBM releases the
        # GIL, and OpenMP threads inside one booster spin badly on a busy 2-core machine.
        data.construct()
        for each in valid_data.values():
            each.construct()
        workers = self.params.num_threads or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            trained = list(pool.map(train_one, QUANTILES))
        return dict(zip(QUANTILES, trained, strict=True))

    def fit(self, frame: HourlyFrame, max_horizon: int) -> None:
        started = time.perf_counter()
        p = self.params
        self.max_horizon = max_horizon
        self.boosters = {}
        self.band_factor = 1.0
        self.feature_names = ()
        self.anchor = p.anchor
        known_hours = int((~np.isnan(frame.target)).sum())
        self.trained = {"rows": len(frame), "known_hours": known_hours}
        if len(frame):
            self.trained["until"] = str(frame.times[-1] + np.timedelta64(1, "h")) + "Z"
        if known_hours < p.min_train_hours:
            self.trained["fallback"] = f"only {known_hours} known hours (< {p.min_train_hours})"
            return
        target_idx, horizon = self._training_pairs(frame, max_horizon)
        raw = self._matrix(frame, target_idx, horizon)
        if p.anchor == "auto":
            recent = target_idx >= len(frame) - p.anchor_hours
            self.anchor, errors = self._choose_anchor(raw, frame.target[target_idx], recent)
            self.trained["anchor"] = {
                "chosen": self.anchor,
                "mae": {k: round(v, 6) if math.isfinite(v) else None for k, v in errors.items()},
            }
        rows = self._rows(frame, target_idx, horizon, raw)
        if len(rows.z) < p.min_data_in_leaf * 4:
            self.trained["fallback"] = f"only {len(rows.z)} training rows"
            return
        rounds = dict.fromkeys(QUANTILES, p.num_boost_round)
        holdout = rows.target_idx >= len(frame) - p.holdout_hours
        if p.holdout_hours > 0 and (~holdout).sum() >= p.min_data_in_leaf * 4 and holdout.any():
            first = self._train(rows, ~holdout, rounds, valid=holdout)
            rounds = {
                q: max(1, b.best_iteration or b.current_iteration()) for q, b in first.items()
            }
            self.band_factor = self._conformal_factor(first, rows.x[holdout], rows.z[holdout])
        self.boosters = self._train(rows, np.ones(len(rows.z), dtype=bool), rounds)
        self.feature_names = rows.names
        self.trained.update(
            {
                "training_rows": len(rows.z),
                "rounds": {str(q): r for q, r in rounds.items()},
                "band_factor": self.band_factor,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )

    @classmethod
    def _choose_anchor(
        cls, raw: FeatureMatrix, actual: np.ndarray, recent: np.ndarray
    ) -> tuple[str, dict[str, float]]:
        """The anchor whose baseline, as a forecast on its own, had the lowest mean absolute
        error on the `recent` training rows (`fit`: targets of the last `anchor_hours`, at
        the training rows' horizons). Each baseline suits another kind of load, and the
        boosters, trained with early stopping, correct a poor one only partly. Measured
        with the backtest of `energy_harness.bench.compare` (MASE, fixed anchors): Taylor's
        strongly weekly demand 0.52 on "blend" and 0.72 on "level"; the weather-driven
        eemeter IL and UK loads 0.675 and 0.710 on "level", 0.677 and 0.732 on "blend". The
        baselines' own errors point the same way there (Taylor 476 vs 4978 MW, IL 0.76 vs
        1.11 kWh)."""
        matrix = FeatureMatrix(raw.names, raw.values[recent], raw.units)
        errors: dict[str, float] = {}
        for kind in ANCHORS:
            error = np.abs(actual[recent] - cls._anchor(matrix, kind))
            error = error[np.isfinite(error)]
            errors[kind] = float(error.mean()) if len(error) else math.inf
        # min() keeps the first of equals, so a tie (or no error at all) picks "blend".
        return min(ANCHORS, key=lambda kind: errors[kind]), errors

    @staticmethod
    def _conformal_factor(
        boosters: dict[float, lgb.Booster], x: np.ndarray, z: np.ndarray
    ) -> float:
        """Scale of the P10..P90 band around P50 that covers 80 % of the hold-out."""
        pred = {
            q: b.predict(x, num_iteration=b.best_iteration or None) for q, b in boosters.items()
        }
        fc = non_crossing(pred[0.1], pred[0.5], pred[0.9])
        up = np.maximum(fc.p90 - fc.p50, 1e-9)
        down = np.maximum(fc.p50 - fc.p10, 1e-9)
        # How many half-band-widths from P50 each actual fell, on its own side.
        scores = np.where(z >= fc.p50, (z - fc.p50) / up, (fc.p50 - z) / down)
        scores = scores[np.isfinite(scores)]
        if len(scores) < 24:
            return 1.0
        n = len(scores)
        level = min(1.0, math.ceil((n + 1) * TARGET_COVERAGE) / n)
        return float(np.clip(np.quantile(scores, level), 0.5, 4.0))

    # -- prediction -----------------------------------------------------------------

    def _predict_model(
        self, frame: HourlyFrame, origin: int, horizons: np.ndarray
    ) -> QuantileForecast:
        target_idx = origin + horizons - 1
        frame = frame.extended_to(int(target_idx.max()) + 1)
        matrix, anchor, scale = self._scaled(self._matrix(frame, target_idx, horizons))
        # Single-threaded: one origin is at most 168 rows, where threads only add latency.
        out = {
            q: anchor + scale * b.predict(matrix.values, num_threads=1)
            for q, b in self.boosters.items()
        }
        return non_crossing(out[0.1], out[0.5], out[0.9])

    def predict(self, frame: HourlyFrame, origin: int, horizons: np.ndarray) -> QuantileForecast:
        horizons = np.asarray(horizons, dtype=np.int64)
        if len(horizons) == 0:
            return QuantileForecast(np.empty(0), np.empty(0), np.empty(0))
        if np.any(horizons < 1):
            raise ValueError("horizons start at 1")
        recent = frame.target[max(0, origin - SCALE_WINDOW) : origin]
        if self.fallback_only or (~np.isnan(recent)).sum() < self.params.min_window_hours:
            return fallback_forecast(frame, origin, horizons)
        forecast = widen(self._predict_model(frame, origin, horizons), self.band_factor)
        if np.isnan(forecast.p50).any():
            return fallback_forecast(frame, origin, horizons)
        return forecast

    def feature_importances(self) -> list[tuple[str, float]]:
        """Gain shares over the three quantile boosters (`base.gain_shares`); [] when the
        model falls back to seasonal naive."""
        return gain_shares(self.boosters[q] for q in sorted(self.boosters))

    # -- text form ------------------------------------------------------------------

    def to_text(self) -> str:
        return envelope(
            self.kind,
            {
                "past": list(self.past),
                "future": list(self.future),
                "params": dataclasses.asdict(self.params),
                "band_factor": self.band_factor,
                "feature_names": list(self.feature_names),
                "max_horizon": self.max_horizon,
                "trained": self.trained,
                "anchor": self.anchor,
                "boosters": {str(q): b.model_to_string() for q, b in self.boosters.items()},
            },
        )

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> DefaultModel:
        return cls(
            past=tuple(doc["past"]),
            future=tuple(doc["future"]),
            params=DefaultParams(**doc["params"]),
            boosters={float(q): lgb.Booster(model_str=s) for q, s in doc["boosters"].items()},
            band_factor=float(doc["band_factor"]),
            feature_names=tuple(doc["feature_names"]),
            max_horizon=int(doc["max_horizon"]),
            trained=dict(doc["trained"]),
            # Saved before "auto" existed: the params name the anchor.
            anchor=str(doc.get("anchor") or doc["params"].get("anchor", "blend")),
        )
