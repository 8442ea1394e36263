"""Optional picture of a backtest; matplotlib comes with the `bench` extra only."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from energy_pipeline.forecasting.backtest import BacktestResult

MISSING_MATPLOTLIB = (
    "--plot needs matplotlib, which is not installed; "
    "install it with: pip install 'energy-pipeline[bench]' (or pip install matplotlib)"
)


def plotting_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def newest_per_target(result: BacktestResult) -> np.ndarray:
    """Row indices keeping, per target time, the forecast made closest to it.

    With overlapping origins (--every shorter than --horizon) this shows the forecast a
    user would have looked at last, rather than a tangle of lines.
    """
    order = np.lexsort((result.horizon, result.target_time))
    targets = result.target_time[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = targets[1:] != targets[:-1]
    return order[first]


def plot_backtest(
    path: Path, chosen: BacktestResult, others: Sequence[BacktestResult] = ()
) -> None:
    """Actuals, the chosen model's P50 with its P10-P90 band, and other models' P50."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 5))
    keep = newest_per_target(chosen)
    times = chosen.target_time[keep].astype("datetime64[m]").astype(object)
    ax.plot(times, chosen.actual[keep], color="black", linewidth=1.2, label="actual")
    ax.fill_between(
        times, chosen.p10[keep], chosen.p90[keep], color="tab:blue", alpha=0.25, label="P10-P90"
    )
    ax.plot(times, chosen.p50[keep], color="tab:blue", linewidth=1.2, label=f"{chosen.model} P50")
    for other, color in zip(others, ("tab:gray", "tab:orange", "tab:green"), strict=False):
        sel = newest_per_target(other)
        ax.plot(
            other.target_time[sel].astype("datetime64[m]").astype(object),
            other.p50[sel],
            linewidth=0.8,
            linestyle="--",
            color=color,
            label=f"{other.model} P50",
        )
    ax.set_title("Backtest: forecasts vs actuals")
    ax.legend(loc="upper left", ncols=3, fontsize="small")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
