"""Quantile post-processing, metrics and the 7-day aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from energy_pipeline.forecasting.daily import daily_totals
from energy_pipeline.forecasting.metrics import format_table, pinball, score
from energy_pipeline.forecasting.quantiles import QuantileForecast, non_crossing, widen

pytestmark = pytest.mark.unit


def test_crossing_quantiles_are_sorted_per_row() -> None:
    fc = non_crossing(
        np.array([5.0, 1.0, np.nan]), np.array([3.0, 2.0, 1.0]), np.array([4.0, 3.0, 2.0])
    )
    np.testing.assert_array_equal(fc.p10, [3.0, 1.0, np.nan])
    np.testing.assert_array_equal(fc.p50, [4.0, 2.0, np.nan])
    np.testing.assert_array_equal(fc.p90, [5.0, 3.0, np.nan])


def test_sorting_never_increases_pinball_loss() -> None:
    rng = np.random.default_rng(0)
    actual = rng.normal(size=500)
    raw = [rng.normal(size=500) for _ in range(3)]
    fixed = non_crossing(*raw)
    before = sum(pinball(actual, r, q).mean() for r, q in zip(raw, (0.1, 0.5, 0.9), strict=True))
    after = sum(
        pinball(actual, r, q).mean()
        for r, q in zip((fixed.p10, fixed.p50, fixed.p90), (0.1, 0.5, 0.9), strict=True)
    )
    assert after <= before + 1e-12


def test_widen_scales_the_band_around_p50() -> None:
    fc = widen(QuantileForecast([8.0], [10.0], [11.0]), 2.0, "fallback:x")
    assert (fc.p10[0], fc.p50[0], fc.p90[0], fc.method) == (6.0, 10.0, 12.0, "fallback:x")
    with pytest.raises(ValueError):
        widen(fc, -1)


def test_pinball_is_asymmetric() -> None:
    assert pinball(np.array([10.0]), np.array([8.0]), 0.9)[0] == pytest.approx(1.8)
    assert pinball(np.array([10.0]), np.array([12.0]), 0.9)[0] == pytest.approx(0.2)


def test_metrics_by_hand() -> None:
    actual = np.array([10.0, 20.0, 30.0, 40.0])
    p50 = np.array([12.0, 18.0, 30.0, 44.0])
    naive = np.array([14.0, 16.0, 26.0, 44.0])
    m = score(actual, p50 - 1, p50, p50 + 3, naive)
    assert m.n == 4
    assert m.mae == pytest.approx(2.0)
    assert m.rmse == pytest.approx(math.sqrt((4 + 4 + 0 + 16) / 4))
    assert m.rmae == pytest.approx(2.0 / (np.percentile(actual, 99) - np.percentile(actual, 1)))
    assert m.mase == pytest.approx(2.0 / 4.0)
    assert m.coverage == pytest.approx(0.5)  # 10 and 40 fall outside [p10, p90]
    assert score(actual, naive, naive, naive, naive).mase == 1.0


def test_metrics_skip_unknown_actuals() -> None:
    m = score(np.array([1.0, np.nan]), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2))
    assert m.n == 1
    empty = score(np.array([np.nan]), np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1))
    assert empty.n == 0 and math.isnan(empty.mae)


def test_table_lists_every_model() -> None:
    m = score(
        np.arange(5.0), np.arange(5.0) - 1, np.arange(5.0), np.arange(5.0) + 1, np.arange(5.0) + 1
    )
    table = format_table([("default", m), ("naive168", m)])
    assert table.splitlines()[0].split()[:3] == ["model", "n", "MAE"]
    assert "P10-P90" in table.splitlines()[0]
    assert table.splitlines()[2].startswith("default")


def test_daily_view_sums_hours_per_day_and_flags_partial_days() -> None:
    times = np.datetime64("2000-01-01T12", "h") + np.arange(36).astype("timedelta64[h]")
    ones = np.ones(36)
    days = daily_totals(times, ones, 2 * ones, 3 * ones)
    assert [(str(d.day), d.hours, d.p50) for d in days] == [
        ("2000-01-01", 12, 24.0),
        ("2000-01-02", 24, 48.0),
    ]
    assert days[1].p10 == 24.0 and days[1].p90 == 72.0
    shifted = daily_totals(times, ones, ones, ones, utc_offset_hours=12)
    assert [d.hours for d in shifted] == [24, 12]
