"""Forecast accuracy: MAE, RMSE, rMAE, MASE (vs seasonal naive 168 h), pinball, coverage."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from energy_pipeline.forecasting.quantiles import QUANTILES


def pinball(actual: np.ndarray, predicted: np.ndarray, quantile: float) -> np.ndarray:
    """Pinball (quantile) loss per point."""
    diff = actual - predicted
    return np.maximum(quantile * diff, (quantile - 1.0) * diff)


@dataclass(frozen=True)
class Metrics:
    """Scores of one model over the points where actual and forecast are both known.

    rmae   = MAE / (P99 - P1 of the actuals scored), comparable across sites and units.
    mase   = MAE / MAE of seasonal naive 168 h on the same points (< 1 beats it).
    pinball = mean pinball loss over P10, P50 and P90.
    coverage = share of actuals inside [P10, P90]; 0.8 is ideal.
    """

    n: int
    mae: float
    rmse: float
    rmae: float
    mase: float
    pinball: float
    coverage: float

    def as_dict(self) -> dict[str, float]:
        return {
            "n": self.n,
            "mae": self.mae,
            "rmse": self.rmse,
            "rmae": self.rmae,
            "mase": self.mase,
            "pinball": self.pinball,
            "coverage_p10_p90": self.coverage,
        }


def score(
    actual: np.ndarray,
    p10: np.ndarray,
    p50: np.ndarray,
    p90: np.ndarray,
    naive168: np.ndarray,
) -> Metrics:
    """All metrics on the rows where actual, the forecast and the naive 168 h are known.

    Restricting to rows known for both keeps MASE a like-for-like ratio.
    """
    actual, p10, p50, p90, naive168 = (
        np.asarray(a, dtype=np.float64) for a in (actual, p10, p50, p90, naive168)
    )
    ok = ~(np.isnan(actual) | np.isnan(p10) | np.isnan(p50) | np.isnan(p90) | np.isnan(naive168))
    if not ok.any():
        nan = math.nan
        return Metrics(0, nan, nan, nan, nan, nan, nan)
    y, lo, mid, hi, base = actual[ok], p10[ok], p50[ok], p90[ok], naive168[ok]
    err = y - mid
    mae = float(np.mean(np.abs(err)))
    spread = float(np.percentile(y, 99) - np.percentile(y, 1))
    naive_mae = float(np.mean(np.abs(y - base)))
    loss = np.mean(
        [np.mean(pinball(y, q_pred, q)) for q, q_pred in zip(QUANTILES, (lo, mid, hi), strict=True)]
    )
    return Metrics(
        n=int(ok.sum()),
        mae=mae,
        rmse=float(np.sqrt(np.mean(err * err))),
        rmae=mae / spread if spread > 0 else math.nan,
        mase=mae / naive_mae if naive_mae > 0 else math.nan,
        pinball=float(loss),
        coverage=float(np.mean((y >= lo) & (y <= hi))),
    )


def format_table(rows: Sequence[tuple[str, Metrics]]) -> str:
    """Fixed-width text table, one line per model."""
    header = f"{'model':<10} {'n':>6} {'MAE':>11} {'RMSE':>11} {'rMAE':>7} {'MASE':>6} "
    header += f"{'pinball':>10} {'P10-P90':>8}"
    lines = [header, "-" * len(header)]
    for name, m in rows:
        lines.append(
            f"{name:<10} {m.n:>6} {m.mae:>11.4g} {m.rmse:>11.4g} {m.rmae:>7.4f} {m.mase:>6.3f} "
            f"{m.pinball:>10.4g} {m.coverage:>8.1%}"
        )
    return "\n".join(lines)
