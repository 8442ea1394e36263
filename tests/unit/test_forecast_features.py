"""Feature transforms, one test group each, and the no-lookahead guarantee."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from energy_harness.synthetic import PAST_COLUMNS, synthetic_building
from energy_pipeline.forecasting.features import (
    BaselineFeatures,
    CalendarFeatures,
    FeatureBlock,
    FeaturePipeline,
    HorizonFeature,
    LagFeatures,
    RollingFeatures,
    SeasonalChangeFeatures,
    SeasonalLagFeatures,
    WeatherFeatures,
    apparent_temperature,
    before_origin,
    default_pipeline,
    trailing_stats,
)
from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.forecasting.issued import IssuedSeries

pytestmark = pytest.mark.unit

START = np.datetime64("2000-06-05T00", "h")  # a Monday


def ramp(n: int, **past: np.ndarray) -> HourlyFrame:
    """target[i] = i, so a feature's value names the index it read."""
    times = START + np.arange(n).astype("timedelta64[h]")
    return HourlyFrame(times, np.arange(n, dtype=float), past=past)


def one(transform: object, frame: HourlyFrame, t: int, h: int) -> dict[str, float]:
    block = transform.transform(frame, np.array([t]), np.array([h]))  # type: ignore[attr-defined]
    return dict(zip(block.names, block.values[0].tolist(), strict=True))


def test_before_origin_never_reads_at_or_after_the_origin() -> None:
    values = np.arange(10.0)
    got = before_origin(values, np.array([2, 5, 6, -1]), np.array([5, 5, 9, 5]))
    np.testing.assert_array_equal(got, [2.0, np.nan, 6.0, np.nan])


def test_trailing_stats_match_a_direct_computation() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=60)
    values[[5, 17, 18]] = np.nan
    stats = trailing_stats(values, 7)
    for p in range(len(values) + 1):
        window = values[max(0, p - 7) : p]
        window = window[~np.isnan(window)]
        if len(window) == 0:
            assert np.isnan(stats["mean"][p])
            continue
        assert stats["mean"][p] == pytest.approx(window.mean())
        assert stats["std"][p] == pytest.approx(window.std(), abs=1e-9)
        assert stats["min"][p] == window.min()
        assert stats["max"][p] == window.max()


def test_horizon_feature() -> None:
    block = HorizonFeature().transform(ramp(10), np.array([3, 4]), np.array([1, 5]))
    assert block.names == ("horizon",)
    np.testing.assert_array_equal(block.values[:, 0], [1, 5])


def test_calendar_of_the_target_time() -> None:
    frame = ramp(24 * 8)
    # Index 24*5 + 13 is Saturday 2000-06-10 13:00.
    got = one(CalendarFeatures(), frame, 24 * 5 + 13, 30)
    season = {k: got.pop(k) for k in ("year_sin", "year_cos")}
    assert got == {"hour": 13.0, "day_of_week": 5.0, "weekend": 1.0}
    assert one(CalendarFeatures(), frame, 2, 1)["day_of_week"] == 0.0
    assert season["year_sin"] ** 2 + season["year_cos"] ** 2 == pytest.approx(1.0)


def test_time_of_year_is_a_circle_that_closes_at_new_year() -> None:
    times = np.datetime64("1999-12-31T00", "h") + np.arange(24 * 400).astype("timedelta64[h]")
    frame = HourlyFrame(times, np.zeros(len(times)))
    block = CalendarFeatures().transform(frame, np.arange(len(times)), np.ones(len(times), int))
    point = block.values[:, [block.names.index("year_sin"), block.names.index("year_cos")]]

    def at(day: int) -> np.ndarray:
        return point[24 * day]

    # 31 December and 1 January are neighbours, as are any two consecutive days ...
    assert np.linalg.norm(at(0) - at(1)) == pytest.approx(2 * np.sin(np.pi / 365.25))
    # ... half a year apart is the opposite point, a year apart (almost) the same one.
    assert np.linalg.norm(at(0) - at(183)) > 1.99
    assert np.linalg.norm(at(0) - at(366)) < 0.02
    # The hours of one day share the day's point.
    assert np.ptp(point[:24], axis=0) == pytest.approx([0.0, 0.0])


def test_lags_are_never_shorter_than_the_horizon() -> None:
    frame = ramp(400)
    lags = LagFeatures((24, 48, 168))
    assert one(lags, frame, 350, 1) == {"lag_24": 326, "lag_48": 302, "lag_168": 182}
    short = one(lags, frame, 350, 30)  # origin 321: lag 24 would read index 326 >= 321
    assert np.isnan(short["lag_24"])
    assert short["lag_48"] == 302
    assert np.isnan(one(lags, frame, 350, 169)["lag_168"])


def test_seasonal_lags_use_the_newest_known_same_hour() -> None:
    frame = ramp(24 * 40)
    got = one(SeasonalLagFeatures((24, 168), (2, 2)), frame, 900, 30)
    assert got["last_same_24"] == 900 - 48  # ceil(30/24) = 2 days back
    assert got["profile_24x2"] == pytest.approx((852 + 828) / 2)
    assert got["last_same_168"] == 900 - 168
    assert got["profile_168x2"] == pytest.approx((732 + 564) / 2)


def test_rolling_statistics_stop_just_before_the_origin() -> None:
    frame = ramp(200)
    got = one(RollingFeatures((24,), ("mean", "min", "max")), frame, 110, 11)  # origin 100
    assert got["last_value"] == 99
    assert got["roll24_mean"] == pytest.approx(np.mean(np.arange(76, 100)))
    assert got["roll24_min"] == 76
    assert got["roll24_max"] == 99


def test_short_rolling_means_stop_just_before_the_origin() -> None:
    frame = ramp(200)
    got = one(RollingFeatures((24,), ("mean",), short_windows=(3, 12)), frame, 110, 11)
    assert got["roll3_mean"] == pytest.approx(98.0)  # indices 97, 98, 99
    assert got["roll12_mean"] == pytest.approx(np.mean(np.arange(88, 100)))
    assert set(got) == {"last_value", "roll24_mean", "roll3_mean", "roll12_mean"}


def test_rolling_units_tell_levels_from_spreads() -> None:
    block = RollingFeatures((24,), ("mean", "std"), short_windows=(6,)).transform(
        ramp(50), np.array([40]), np.array([1])
    )
    assert block.units == ("level", "level", "delta", "level")


def test_seasonal_change_against_a_week_before() -> None:
    frame = ramp(24 * 30)
    got = one(SeasonalChangeFeatures(168), frame, 500, 1)  # origin 500
    # On a ramp every difference over a week is exactly 168.
    assert got == {
        "change168_last": 168.0,
        "change168_mean24": 168.0,
        "change168_same_hour": 168.0,
    }


def test_baselines_on_a_pure_weekly_pattern_are_exact() -> None:
    n = 24 * 30
    pattern = np.sin(np.arange(n) * 2 * np.pi / 168) * 10 + 50
    frame = HourlyFrame(START + np.arange(n).astype("timedelta64[h]"), pattern)
    t = np.array([600, 610, 700])
    h = np.array([1, 24, 100])
    block = BaselineFeatures().transform(frame, t, h)
    np.testing.assert_allclose(block.values[:, 0], pattern[t], atol=1e-9)
    np.testing.assert_allclose(block.values[:, 1], pattern[t], atol=1e-9)


def test_baselines_follow_a_level_shift() -> None:
    n = 24 * 30
    values = np.tile(np.arange(24.0), n // 24)
    values[500:] += 100.0  # a step the week-old value does not know about
    frame = HourlyFrame(START + np.arange(n).astype("timedelta64[h]"), values)
    got = one(BaselineFeatures(), frame, 530, 1)  # origin 530: 30 h after the step
    assert got["week_adjusted"] == pytest.approx(values[530])
    assert got["day_adjusted"] == pytest.approx(values[530])


def test_weather_past_covariates_are_read_before_the_origin() -> None:
    temp = np.arange(100.0) + 1000
    frame = ramp(100, temp=temp)
    got = one(WeatherFeatures(past=("temp",)), frame, 80, 5)  # origin 76
    assert got["temp_last"] == 1075
    assert got["temp_mean24"] == pytest.approx(np.mean(temp[52:76]))
    assert got["temp_same_hour"] == 1080 - 24


def test_weather_future_covariates_are_read_at_the_target_time() -> None:
    times = START + np.arange(100).astype("timedelta64[h]")
    forecast = np.arange(100.0)
    frame = HourlyFrame(times, np.zeros(100), future={"tf": forecast})
    got = one(WeatherFeatures(future=("tf",)), frame, 80, 5)
    assert got["tf_at_target"] == 80
    assert got["tf_mean24_to_target"] == pytest.approx(np.mean(forecast[57:81]))


def issues_every_6h(n: int, lead: int, value: object,
                    start: np.datetime64 = START) -> IssuedSeries:
    """A forecast issued every 6 h at hh:30 for the next `lead` hours; `value(issue, hour)`
    says what each issue forecast for each hour (indices into a frame starting at `start`)."""
    issued, valid, values = [], [], []
    for i in range(0, n, 6):
        for hour in range(i + 1, min(n, i + 1 + lead)):
            issued.append(start.astype("datetime64[s]") + np.timedelta64(i * 3600 + 1800, "s"))
            valid.append(start + np.timedelta64(hour, "h"))
            values.append(value(i, hour))  # type: ignore[operator]
    return IssuedSeries(np.array(issued), np.array(valid), np.array(values, dtype=float))


def test_weather_issued_covariates_are_read_as_each_origin_knew_them() -> None:
    times = START + np.arange(100).astype("timedelta64[h]")
    # Issue i forecasts 1000 * i + hour: the value names the issue it came from.
    frame = HourlyFrame(times, np.zeros(100),
                        issued={"tf": issues_every_6h(100, 48, lambda i, h: 1000 * i + h)})
    # Origin 76 (target 80, horizon 5): the newest issue before 76:00 is the one of 72:30.
    got = one(WeatherFeatures(future=("tf",)), frame, 80, 5)
    assert got["tf_at_target"] == 72_000 + 80
    # The 24 h up to the target: hours 57..72 from earlier issues (each the newest before the
    # origin that covers it, i.e. issue 72 from hour 73 on, issue 66 for 67..72 ...), all
    # from issues before the origin.
    expected = [1000 * (max(i for i in range(0, 76, 6) if i + 1 <= h and i * 3600 + 1800
                                < 76 * 3600)) + h for h in range(57, 81)]
    assert got["tf_mean24_to_target"] == pytest.approx(np.mean(expected))
    # One hour later the 78:30 issue is still unknown at origin 77; at origin 79 it is known.
    assert one(WeatherFeatures(future=("tf",)), frame, 81, 5)["tf_at_target"] == 72_081
    assert one(WeatherFeatures(future=("tf",)), frame, 83, 5)["tf_at_target"] == 78_083
    # Origin 78: the issue of 78:30 came half an hour after it.
    assert one(WeatherFeatures(future=("tf",)), frame, 82, 5)["tf_at_target"] == 72_082


def test_a_frame_view_keeps_only_the_issues_made_before_its_origin() -> None:
    times = START + np.arange(100).astype("timedelta64[h]")
    frame = HourlyFrame(times, np.zeros(100),
                        issued={"tf": issues_every_6h(100, 48, lambda i, h: 1000 * i + h)})
    view = frame.visible_at(76, 24)
    assert (view.issued["tf"].issued_at < (START + np.timedelta64(76, "h"))).all()
    # As a plain column: each hour after the origin from the newest issue before it.
    column = view.future_column("tf")
    assert column[80] == 72_080 and column[99 - 24] == 72_075
    assert column[50] == 48_050  # before the origin: the newest issue before that hour
    with pytest.raises(ValueError, match="both issued"):
        HourlyFrame(times, np.zeros(100), future={"tf": np.zeros(100)},
                    issued={"tf": frame.issued["tf"]})


def test_apparent_temperature_needs_both_sensors() -> None:
    n = 60
    frame = ramp(n, avg_temperature=np.full(n, 30.0), avg_humidity=np.full(n, 70.0))
    got = one(WeatherFeatures(past=("avg_temperature", "avg_humidity")), frame, 50, 1)
    assert got["apparent_temperature_last"] == pytest.approx(
        float(apparent_temperature(np.array(30.0), np.array(70.0)))
    )
    assert got["apparent_temperature_last"] > 30  # humid heat feels hotter
    alone = one(
        WeatherFeatures(past=("avg_temperature",)), ramp(n, avg_temperature=np.ones(n)), 50, 1
    )
    assert "apparent_temperature_last" not in alone


def test_pipeline_concatenates_blocks() -> None:
    pipeline = FeaturePipeline([HorizonFeature(), LagFeatures((24,))])
    matrix = pipeline.transform(ramp(50), np.array([30, 40]), np.array([1, 2]))
    assert matrix.names == ("horizon", "lag_24")
    assert matrix.units == ("none", "level")
    np.testing.assert_array_equal(matrix.values, [[1, 6], [2, 16]])


def test_horizon_zero_is_refused() -> None:
    with pytest.raises(ValueError):
        default_pipeline().transform(ramp(50), np.array([10]), np.array([0]))


# -- the no-lookahead guarantee ------------------------------------------------------------


def perturbed_at(frame: HourlyFrame, origin: int, seed: int) -> HourlyFrame:
    """The frame with target and past covariates replaced by garbage at and after `origin`."""
    rng = np.random.default_rng(seed)
    target = frame.target.copy()
    target[origin:] = rng.normal(1e6, 1e5, len(frame) - origin)
    past = {}
    for name, values in frame.past.items():
        changed = values.copy()
        changed[origin:] = rng.normal(-1e6, 1e5, len(frame) - origin)
        past[name] = changed
    # Issues made at or after the origin's hour began: garbage too.
    start = frame.start + np.timedelta64(origin, "h")
    issued = {}
    for name, series in frame.issued.items():
        late = series.issued_at >= start
        values = np.where(late, rng.normal(5e5, 1e5, len(series)), series.values)
        issued[name] = IssuedSeries(series.issued_at, series.valid_time, values)
    return HourlyFrame(frame.times, target, past=past, future=frame.future, issued=issued)


def assert_no_lookahead(pipeline: FeaturePipeline, frame: HourlyFrame) -> None:
    """Fails if any feature of any (origin, horizon) changes when the future changes."""
    horizons = np.arange(1, 169)
    for k, origin in enumerate((170, 337, 500, 701, len(frame) - 168)):
        target_idx = origin + horizons - 1
        before = pipeline.transform(frame, target_idx, horizons)
        after = pipeline.transform(perturbed_at(frame, origin, k), target_idx, horizons)
        for j, name in enumerate(before.names):
            np.testing.assert_array_equal(
                before.values[:, j],
                after.values[:, j],
                err_msg=f"feature {name!r} sees data at or after origin {origin}",
            )


def test_no_feature_sees_data_at_or_after_the_origin() -> None:
    base = synthetic_building(24 * 40, seed=3)
    times = base.times
    frame = HourlyFrame(
        times,
        base.target,
        past=base.past,
        future={"temp_forecast": base.past["avg_temperature"] + 0.5},
        issued={"temp_issued": issues_every_6h(len(times), 168, lambda i, h: float(
            base.past["avg_temperature"][h] + (h - i) * 0.01), start=times[0])},
    )
    pipeline = default_pipeline(past=PAST_COLUMNS, future=("temp_forecast", "temp_issued"))
    # The issued covariate is there to be read (the check below would pass on NaN alone).
    matrix = pipeline.transform(frame, np.arange(500, 650), np.arange(1, 151))
    assert not np.isnan(matrix.column("temp_issued_at_target")).any()
    assert_no_lookahead(pipeline, frame)


@dataclass(frozen=True)
class LeakyLag:
    """A broken transform: reads the target at the target time itself."""

    def transform(
        self, frame: HourlyFrame, target_idx: np.ndarray, horizon: np.ndarray
    ) -> FeatureBlock:
        return FeatureBlock(("leak",), frame.target[target_idx][:, None])


def test_the_lookahead_check_catches_a_leaky_feature() -> None:
    frame = synthetic_building(24 * 40, seed=3)
    with pytest.raises(AssertionError, match="leak"):
        assert_no_lookahead(FeaturePipeline([HorizonFeature(), LeakyLag()]), frame)
