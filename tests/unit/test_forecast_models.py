"""The four models behind one interface: fit/predict, fallbacks, text form, no lookahead."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from energy_harness.synthetic import PAST_COLUMNS, synthetic_building
from energy_pipeline.forecasting.features import FeatureMatrix, FeaturePipeline, default_pipeline
from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.forecasting.models import (
    MODEL_NAMES,
    DefaultModel,
    DefaultParams,
    SeasonalNaive,
    SeedModel,
    build_model,
    fallback_forecast,
    load_model,
)
from energy_pipeline.forecasting.models import default as default_module
from energy_pipeline.forecasting.models.seed import smooth

pytestmark = pytest.mark.unit

# Small and fast: a few weeks of data, few trees.
FAST = DefaultParams(num_boost_round=25, early_stopping_rounds=5, max_rows=6000, num_threads=1)
HORIZONS = np.arange(1, 49)


@pytest.fixture(scope="module")
def frame() -> HourlyFrame:
    return synthetic_building(24 * 42, seed=5)


@pytest.fixture(scope="module")
def default_model(frame: HourlyFrame) -> DefaultModel:
    model = DefaultModel(past=PAST_COLUMNS, params=FAST)
    model.fit(frame.slice(0, 24 * 35), 48)
    return model


@pytest.fixture(scope="module")
def seed_model(frame: HourlyFrame) -> SeedModel:
    model = SeedModel(past=PAST_COLUMNS, num_threads=1)
    model.fit(frame.slice(0, 24 * 35), 48)
    return model


def garbage_from(frame: HourlyFrame, origin: int) -> HourlyFrame:
    target = frame.target.copy()
    target[origin:] = 1e9
    past = {k: np.where(np.arange(len(frame)) >= origin, -1e9, v) for k, v in frame.past.items()}
    return HourlyFrame(frame.times, target, past=past, future=frame.future)


def mae(frame: HourlyFrame, origin: int, p50: np.ndarray) -> float:
    return float(np.mean(np.abs(frame.target[origin + HORIZONS - 1] - p50)))


def test_every_name_builds_a_model() -> None:
    for name in MODEL_NAMES:
        assert hasattr(build_model(name), "predict")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("prophet")


def test_default_forecasts_beat_weekly_naive_and_never_cross(
    frame: HourlyFrame, default_model: DefaultModel
) -> None:
    origin = 24 * 35
    forecast = default_model.predict(frame.visible_at(origin, 48), origin, HORIZONS)
    assert forecast.method == "model"
    assert np.all(forecast.p10 <= forecast.p50) and np.all(forecast.p50 <= forecast.p90)
    naive = SeasonalNaive(168)
    naive.fit(frame.slice(0, origin), 48)
    weekly = naive.predict(frame.visible_at(origin, 48), origin, HORIZONS)
    assert mae(frame, origin, forecast.p50) < mae(frame, origin, weekly.p50)


def test_default_round_trips_through_text(frame: HourlyFrame, default_model: DefaultModel) -> None:
    text = default_model.to_text()
    doc = json.loads(text)
    assert doc["kind"] == "default"
    assert set(doc["boosters"]) == {"0.1", "0.5", "0.9"}
    assert all(s.startswith("tree\n") for s in doc["boosters"].values())  # LightGBM text
    restored = load_model(text)
    origin = 24 * 36
    view = frame.visible_at(origin, 48)
    a = default_model.predict(view, origin, HORIZONS)
    b = restored.predict(view, origin, HORIZONS)
    np.testing.assert_array_equal(a.p50, b.p50)
    np.testing.assert_array_equal(a.p90, b.p90)


@pytest.mark.parametrize("name", ["default", "seed", "naive24", "naive168"])
def test_forecasts_ignore_everything_at_or_after_the_origin(
    name: str, frame: HourlyFrame, default_model: DefaultModel, seed_model: SeedModel
) -> None:
    models = {
        "default": default_model,
        "seed": seed_model,
        "naive24": SeasonalNaive(24),
        "naive168": SeasonalNaive(168),
    }
    model = models[name]
    origin = 24 * 37 + 5
    clean = model.predict(frame, origin, HORIZONS)
    dirty = model.predict(garbage_from(frame, origin), origin, HORIZONS)
    for q in ("p10", "p50", "p90"):
        np.testing.assert_array_equal(getattr(clean, q), getattr(dirty, q), err_msg=q)


def test_parameters_lightgbm_refuses_raise_instead_of_crashing_the_process() -> None:
    """The three quantile boosters train in threads on one Dataset. A parameter LightGBM
    refuses once made a thread free that Dataset while the others trained on it: SIGSEGV
    in about every second fit. In a child process, so a crash fails this test, not the run."""
    code = textwrap.dedent("""
        import lightgbm
        from energy_harness.synthetic import PAST_COLUMNS, synthetic_building
        from energy_pipeline.forecasting.models import DefaultModel, DefaultParams
        frame = synthetic_building(24 * 35, seed=1)
        params = DefaultParams(num_leaves=1, num_boost_round=5, max_rows=2000, num_threads=3)
        for _ in range(12):
            try:
                DefaultModel(past=PAST_COLUMNS, params=params).fit(frame, 48)
            except lightgbm.basic.LightGBMError as exc:
                assert "num_leaves" in str(exc), exc
            else:
                raise AssertionError("num_leaves=1 was accepted")
        print("refused 12 times")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert (done.returncode, done.stdout) == (0, "refused 12 times\n"), done.stderr[-2000:]


def test_default_with_short_history_falls_back_instead_of_failing(frame: HourlyFrame) -> None:
    model = DefaultModel(past=PAST_COLUMNS, params=FAST)
    model.fit(frame.slice(0, 200), 48)  # under two weeks
    assert model.fallback_only
    forecast = model.predict(frame.visible_at(200, 48), 200, HORIZONS)
    assert forecast.method == "fallback:naive168"
    assert np.all(np.isfinite(forecast.p50))
    assert np.all(forecast.p10 <= forecast.p50) and np.all(forecast.p50 <= forecast.p90)


def test_a_fitted_model_falls_back_on_a_window_too_short(default_model: DefaultModel) -> None:
    window = synthetic_building(30, seed=9)
    forecast = default_model.predict(window.extended_to(30 + 48), 30, HORIZONS)
    assert forecast.method == "fallback:naive24"
    assert np.all(np.isfinite(forecast.p50))


def test_fallback_band_is_wider_than_the_naive_band(frame: HourlyFrame) -> None:
    origin = 24 * 20
    naive = SeasonalNaive(168)
    naive.fit(frame.slice(0, origin), 24)
    plain = naive.predict(frame, origin, np.arange(1, 25))
    fallback = fallback_forecast(frame, origin, np.arange(1, 25))
    np.testing.assert_allclose(fallback.p50, plain.p50)
    np.testing.assert_allclose(fallback.p90 - fallback.p50, 1.5 * (plain.p90 - plain.p50))


def test_fallback_with_nothing_known_is_nan_not_an_exception(frame: HourlyFrame) -> None:
    empty = HourlyFrame(frame.times[:10], np.full(10, np.nan))
    forecast = fallback_forecast(empty, 5, np.arange(1, 4))
    assert forecast.method == "fallback:none"
    assert np.all(np.isnan(forecast.p50))
    one_value = HourlyFrame(frame.times[:10], [3.0] + [np.nan] * 9)
    assert fallback_forecast(one_value, 5, np.arange(1, 4)).method == "fallback:last"


def test_seasonal_naive_repeats_the_season_with_an_empirical_band(frame: HourlyFrame) -> None:
    origin = 24 * 30
    for period in (24, 168):
        model = SeasonalNaive(period)
        model.fit(frame.slice(0, origin), 48)
        forecast = model.predict(frame.visible_at(origin, 48), origin, HORIZONS)
        lag = period * np.ceil(HORIZONS / period).astype(int)
        np.testing.assert_array_equal(forecast.p50, frame.target[origin + HORIZONS - 1 - lag])
        assert np.all(forecast.p90 > forecast.p10)
        restored = load_model(model.to_text())
        np.testing.assert_array_equal(restored.predict(frame, origin, HORIZONS).p90, forecast.p90)


def test_seasonal_naive_steps_back_over_gaps(frame: HourlyFrame) -> None:
    target = frame.target.copy()
    origin = 24 * 30
    target[origin - 24 : origin] = np.nan
    gappy = HourlyFrame(frame.times, target)
    forecast = SeasonalNaive(24).predict(gappy, origin, np.array([1]))
    assert forecast.p50[0] == frame.target[origin - 48]


def test_seed_smoothing_is_savitzky_golay_5_2() -> None:
    quadratic = 0.5 * np.arange(20.0) ** 2 - 3 * np.arange(20.0)
    np.testing.assert_allclose(smooth(quadratic), quadratic, atol=1e-9)  # order 2 is exact
    spike = np.zeros(20)
    spike[10] = 1.0
    spread = np.flatnonzero(np.abs(smooth(spike)) > 1e-12)
    np.testing.assert_array_equal(spread, [8, 9, 10, 11, 12])  # window 5
    gappy = np.arange(10.0)
    gappy[4] = np.nan
    np.testing.assert_allclose(smooth(gappy), np.arange(10.0), atol=1e-9)


def test_seed_has_seven_lightgbm_models_and_chains_beyond_seven(
    frame: HourlyFrame, seed_model: SeedModel
) -> None:
    doc = json.loads(seed_model.to_text())
    assert len(doc["boosters"]) == 7
    assert doc["params"]["learning_rate"] == 0.05
    assert doc["params"]["num_boost_round"] == 200
    assert doc["params"]["max_depth"] == 5
    assert doc["params"]["num_leaves"] == 31
    assert all(s.startswith("tree\n") for s in doc["boosters"])
    origin = 24 * 36
    forecast = seed_model.predict(frame.visible_at(origin, 48), origin, HORIZONS)
    assert forecast.method == "model"
    assert np.all(np.isfinite(forecast.p50)) and len(forecast.p50) == 48
    np.testing.assert_array_equal(forecast.p10, forecast.p50)  # the recipe has no band
    restored = load_model(seed_model.to_text())
    np.testing.assert_array_equal(
        restored.predict(frame.visible_at(origin, 48), origin, HORIZONS).p50, forecast.p50
    )


def test_seed_with_too_little_history_falls_back(frame: HourlyFrame) -> None:
    model = SeedModel()
    model.fit(frame.slice(0, 50), 24)
    assert model.predict(frame, 50, np.arange(1, 25)).method.startswith("fallback:")


def test_load_model_rejects_foreign_text() -> None:
    with pytest.raises(ValueError):
        load_model(json.dumps({"format": "something-else"}))


def test_each_booster_validates_on_a_dataset_of_its_own(
        frame: HourlyFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quantile boosters train side by side in threads, and `lgb.train` writes to its
    valid sets through LightGBM's C API: one Dataset shared by them aborted the process. Real
    training, every call to `lgb.train` recorded."""
    import lightgbm as lgb

    seen: list[list[int]] = []
    train = lgb.train

    def recording(*args: object, **kwargs: object) -> lgb.Booster:
        seen.append([id(v) for v in kwargs.get("valid_sets") or []])  # type: ignore[union-attr]
        return train(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(lgb, "train", recording)
    params = DefaultParams(num_boost_round=25, early_stopping_rounds=5, max_rows=6000,
                           num_threads=5, holdout_hours=24 * 7)
    model = DefaultModel(past=PAST_COLUMNS, params=params)
    model.fit(frame.slice(0, 24 * 35), 48)
    assert "fallback" not in model.trained
    with_valid = [ids for ids in seen if ids]
    assert len(with_valid) >= 2  # the early-stopping pass, one call per quantile
    ids = [i for each in with_valid for i in each]
    assert len(ids) == len(set(ids))


def hourly(values: np.ndarray) -> HourlyFrame:
    times = np.datetime64("2021-01-04T00", "h") + np.arange(len(values)).astype("timedelta64[h]")
    return HourlyFrame(times, values.astype(np.float64))


def test_auto_anchor_takes_the_baseline_that_forecast_the_last_weeks_best() -> None:
    hours = np.arange(24 * 7 * 12)  # anchor_hours (8 weeks) plus the weeks they look back
    # A noise-free weekly shape: the seasonal baselines are exact, the weekly mean is not;
    # "blend" and "week" tie at zero error, and a tie goes to "blend".
    shape = 50 + 20 * np.sin(2 * np.pi * hours / 24) + 10 * (hours % 168 >= 120)
    weekly = DefaultModel(params=FAST)
    weekly.fit(hourly(shape), 24)
    assert weekly.anchor == "blend"
    assert weekly.trained["anchor"]["mae"]["blend"] == pytest.approx(0.0, abs=1e-9)
    assert weekly.trained["anchor"]["mae"]["level"] > 5
    # Noise around a constant: any single past hour is as noisy as the target, the mean of
    # the week is not, so "level" wins.
    noise = 50 + np.random.default_rng(3).normal(0, 5, len(hours))
    flat = DefaultModel(params=FAST)
    flat.fit(hourly(noise), 24)
    assert flat.anchor == "level"
    mae = flat.trained["anchor"]["mae"]
    assert mae["level"] < min(mae["blend"], mae["week"])
    # A fixed anchor is used as given, and nothing is chosen.
    fixed = DefaultModel(params=dataclasses.replace(FAST, anchor="week"))
    fixed.fit(hourly(noise), 24)
    assert fixed.anchor == "week" and "anchor" not in fixed.trained


def test_the_chosen_anchor_is_saved_and_old_texts_keep_theirs(
        frame: HourlyFrame, default_model: DefaultModel) -> None:
    assert default_model.anchor == default_model.trained["anchor"]["chosen"]
    doc = json.loads(default_model.to_text())
    assert doc["anchor"] == default_model.anchor
    # A text saved before "auto" existed has no "anchor"; its params name it.
    other = "level" if default_model.anchor != "level" else "blend"
    del doc["anchor"]
    doc["params"]["anchor"] = other
    old = load_model(json.dumps(doc))
    assert isinstance(old, DefaultModel) and old.anchor == other
    origin = 24 * 36
    view = frame.visible_at(origin, 48)
    assert not np.array_equal(old.predict(view, origin, HORIZONS).p50,
                              default_model.predict(view, origin, HORIZONS).p50)


NEW_FEATURES = ("year_sin", "year_cos", "roll3_mean", "roll6_mean", "roll12_mean", "roll72_mean")


def test_a_model_saved_before_features_were_added_predicts_as_it_did(
        frame: HourlyFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    """Models in a registry outlive releases: one trained without today's newer features
    reads only the columns it was trained on."""

    class Older:
        def __init__(self, inner: FeaturePipeline) -> None:
            self.inner = inner

        def transform(self, frame: HourlyFrame, target_idx: np.ndarray,
                      horizon: np.ndarray) -> FeatureMatrix:
            matrix = self.inner.transform(frame, target_idx, horizon)
            return matrix.select([n for n in matrix.names if n not in NEW_FEATURES])

    origin = 24 * 36
    view = frame.visible_at(origin, 48)
    with monkeypatch.context() as patch:
        patch.setattr(default_module, "default_pipeline",
                      lambda past=(), future=(): Older(default_pipeline(past, future)))
        model = DefaultModel(past=PAST_COLUMNS, params=FAST)
        model.fit(frame.slice(0, 24 * 35), 48)
        then = model.predict(view, origin, HORIZONS)
        text = model.to_text()
    restored = load_model(text)
    assert isinstance(restored, DefaultModel)
    assert not set(NEW_FEATURES) & set(restored.feature_names)
    assert set(NEW_FEATURES) <= set(default_pipeline(PAST_COLUMNS).transform(
        view, np.array([origin]), np.array([1])).names)
    now = restored.predict(view, origin, HORIZONS)
    np.testing.assert_array_equal(then.p50, now.p50)
    np.testing.assert_array_equal(then.p90, now.p90)
