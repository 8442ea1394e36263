"""Pictures of forecasts against actuals (a backtest's, the demo's); matplotlib comes with
the `bench`, `demo` and `dev` extras only, and is imported only when drawing."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def draw_forecast(
    ax: Any,
    actual: tuple[Sequence[Any], Sequence[float]],
    forecast: tuple[Sequence[Any], Sequence[float], Sequence[float], Sequence[float]],
    model: str,
    unit: str = "",
    others: Sequence[tuple[str, Sequence[Any], Sequence[float]]] = (),
) -> None:
    """Actuals, one model's P50 with its P10-P90 band, and other models' P50 on `ax`.

    The unit goes on the axis only, never into the legend, so that the two cannot disagree
    (the demo's plot once said "kWh" in one and "kWh per reading interval" in the other).
    """
    ax.plot(actual[0], actual[1], color="black", linewidth=1.2, label="actual")
    times, p10, p50, p90 = forecast
    if len(times):
        ax.fill_between(times, p10, p90, color="tab:blue", alpha=0.25, label=f"{model} P10-P90")
        ax.plot(times, p50, color="tab:blue", linewidth=1.4, label=f"{model} P50")
    for (label, other_times, other_p50), color in zip(
        others, ("tab:gray", "tab:orange", "tab:green"), strict=False
    ):
        ax.plot(other_times, other_p50, linewidth=0.8, linestyle="--", color=color,
                label=f"{label} P50")
    if unit:
        ax.set_ylabel(unit)
    ax.legend(loc="upper left", ncols=3, fontsize="small")
    ax.grid(alpha=0.3)


def _times(result: BacktestResult, keep: np.ndarray) -> Any:
    return result.target_time[keep].astype("datetime64[m]").astype(object)


def plot_backtest(
    path: Path, chosen: BacktestResult, others: Sequence[BacktestResult] = (), unit: str = ""
) -> None:
    """Actuals, the chosen model's P50 with its P10-P90 band, and other models' P50."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 5))
    keep = newest_per_target(chosen)
    times = _times(chosen, keep)
    draw_forecast(
        ax,
        (times, chosen.actual[keep]),
        (times, chosen.p10[keep], chosen.p50[keep], chosen.p90[keep]),
        chosen.model,
        unit,
        [(o.model, _times(o, sel), o.p50[sel]) for o in others
         for sel in (newest_per_target(o),)],
    )
    ax.set_title("Backtest: forecasts vs actuals")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
