"""The original report's 80/20 split of windows, and the models' feature importances."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pytest
from energy_harness.synthetic import PAST_COLUMNS, synthetic_building
from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.forecasting.models import (
    DefaultModel,
    DefaultParams,
    Forecaster,
    SeasonalNaive,
    SeedModel,
    build_model,
    load_model,
)
from energy_pipeline.forecasting.models.base import gain_shares
from energy_pipeline.forecasting.quantiles import QuantileForecast
from energy_pipeline.forecasting.registry import importance_rows
from energy_pipeline.forecasting.split import WINDOW, report_split, rmse, split_counts

pytestmark = pytest.mark.unit

FAST = DefaultParams(num_boost_round=25, early_stopping_rounds=5, max_rows=6000, num_threads=1)


# ---- the split ------------------------------------------------------------------------------


@pytest.mark.parametrize(("pairs", "expected"), [
    # sklearn's train_test_split(test_size=0.2, shuffle=False): ceil(20 %) are the test set.
    (2, (1, 1)), (5, (4, 1)), (10, (8, 2)), (11, (8, 3)), (307, (245, 62)),
])
def test_split_counts_are_train_test_splits(pairs: int, expected: tuple[int, int]) -> None:
    assert split_counts(pairs) == expected


def test_rmse_skips_unknown_actuals() -> None:
    assert rmse(np.array([3.0, np.nan, -4.0])) == pytest.approx(math.sqrt(12.5))
    assert math.isnan(rmse(np.array([np.nan])))


@dataclass
class Constant:
    """A model that forecasts the mean of what it was fitted on, and checks what it sees."""

    kind: ClassVar[str] = "constant"
    fitted_rows: int = 0
    level: float = 0.0
    origins: list[int] = field(default_factory=list)

    def fit(self, frame: HourlyFrame, max_horizon: int) -> None:
        assert max_horizon == WINDOW
        self.fitted_rows = len(frame)
        self.level = float(np.nanmean(frame.target))

    def predict(self, frame: HourlyFrame, origin: int, horizons: np.ndarray) -> QuantileForecast:
        assert np.isnan(frame.target[origin:]).all(), "the split showed the future"
        assert list(horizons) == list(range(1, WINDOW + 1))
        self.origins.append(origin)
        p50 = np.full(len(horizons), self.level)
        return QuantileForecast(p50, p50, p50)

    def to_text(self) -> str:
        return ""

    def feature_importances(self) -> list[tuple[str, float]]:
        return []


def test_report_split_fits_on_the_first_80_percent_and_scores_each_part() -> None:
    hours = 7 * 11 + 3  # 11 windows of 7 rows (10 pairs), 3 rows left over
    target = np.arange(hours, dtype=float)
    frame = HourlyFrame(np.datetime64("2025-01-06T00", "h") + np.arange(hours), target)
    model = Constant()
    split = report_split(frame, lambda: model)
    assert split is not None
    assert (split.n_train, split.n_test) == (8, 2)
    # Training pairs 0..7 cover rows 0..62: that and nothing more was fitted on.
    assert model.fitted_rows == 63
    assert model.origins == [7 * (i + 1) for i in range(10)]
    level = np.mean(target[:63])
    assert split.train_rmse == pytest.approx(rmse(level - target[7:63]))
    assert split.test_rmse == pytest.approx(rmse(level - target[63:77]))
    assert split.smoothed == {}
    assert split.as_dict() == {"train_rmse": split.train_rmse, "test_rmse": split.test_rmse,
                               "n_train": 8.0, "n_test": 2.0}
    assert report_split(frame.slice(0, 20), Constant) is None  # one pair: nothing to split


@pytest.fixture(scope="module")
def building() -> HourlyFrame:
    return synthetic_building(24 * 42, seed=3)


def test_seed_split_reproduces_the_reports_figures_without_seeing_the_test_part(
    building: HourlyFrame,
) -> None:
    split = report_split(building, lambda: SeedModel(past=PAST_COLUMNS))
    assert split is not None
    figures = split.as_dict()
    assert set(figures) == {"train_rmse", "test_rmse", "n_train", "n_test",
                            "train_rmse_smoothed", "test_rmse_smoothed"}
    assert (split.n_train, split.n_test) == split_counts(len(building) // 7 - 1)
    # The report scored against its smoothed target: easier than the measured one.
    assert figures["test_rmse_smoothed"] < figures["test_rmse"]
    assert all(np.isfinite(v) and v > 0 for v in figures.values())
    # Changing the test part far from the cut (beyond the smoothing window) changes the
    # test figures only: the boosters never saw it.
    cut = 7 * (split.n_train + 1)
    target = building.target.copy()
    target[cut + 9 :] += 50.0
    changed = HourlyFrame(building.times, target, past=building.past)
    again = SeedModel(past=PAST_COLUMNS).smoothed_split(changed, split.n_train)
    assert again["train_rmse_smoothed"] == pytest.approx(figures["train_rmse_smoothed"])
    assert again["test_rmse_smoothed"] > figures["test_rmse_smoothed"] + 10


@pytest.mark.parametrize("kind", ["default", "seed"])
def test_split_forecasts_with_bounded_history_are_those_with_all_of_it(kind: str) -> None:
    """Each window's forecast sees CONTEXT_HOURS of history: what the models read, so the
    figures equal those with the whole history (which cost more for every window)."""
    frame = synthetic_building(24 * 56, seed=8)  # 8 weeks: longer than the context

    def factory() -> Forecaster:
        return build_model(kind, PAST_COLUMNS, params=FAST)

    bounded, whole = report_split(frame, factory), report_split(frame, factory, context=None)
    assert bounded is not None and whole is not None
    assert bounded.as_dict() == pytest.approx(whole.as_dict(), rel=1e-12)
    assert report_split(frame, factory, context=WINDOW).as_dict() != bounded.as_dict()  # type: ignore[union-attr]


def test_default_split_has_no_smoothed_figures(building: HourlyFrame) -> None:
    split = report_split(building, lambda: DefaultModel(past=PAST_COLUMNS, params=FAST))
    assert split is not None and split.smoothed == {}
    assert 0 < split.test_rmse < 20


# ---- feature importances -------------------------------------------------------------------


@dataclass
class FakeBooster:
    names: list[str]
    gains: list[float]

    def feature_name(self) -> list[str]:
        return self.names

    def feature_importance(self, importance_type: str = "split") -> np.ndarray:
        assert importance_type == "gain"
        return np.array(self.gains)


def test_gain_shares_normalise_each_booster_then_average() -> None:
    names = ["a", "b", "c"]
    shares = gain_shares([
        FakeBooster(names, [3.0, 1.0, 0.0]),  # shares .75 .25 0
        FakeBooster(names, [0.0, 100.0, 100.0]),  # .0 .5 .5: its scale does not matter
        FakeBooster(names, [0.0, 0.0, 0.0]),  # no split: left out
    ])
    # a: (.75 + 0) / 2, b: (.25 + .5) / 2, c: (0 + .5) / 2; ties in name order.
    assert shares == [("a", pytest.approx(0.375)), ("b", pytest.approx(0.375)),
                      ("c", pytest.approx(0.25))]
    assert gain_shares([FakeBooster(names, [0.0, 0.0, 0.0])]) == []
    assert gain_shares([]) == []
    with pytest.raises(ValueError):
        gain_shares([FakeBooster(names, [1.0])])
    assert importance_rows([("a", np.float64(0.5))]) == [{"feature": "a", "gain": 0.5}]


def test_seed_importances_find_the_feature_that_drives_the_target() -> None:
    """Consumption that is 10 x humidity 7 hours earlier: step s of the recipe reads it at
    lag 8 - s, so the seven humidity lags must carry nearly all the gain."""
    rng = np.random.default_rng(11)
    hours = 24 * 30
    humidity = rng.normal(50, 10, hours)
    target = np.full(hours, np.nan)
    target[7:] = 10 * humidity[:-7]
    noise = {name: rng.normal(0, 1, hours) for name in ("avg_temperature", "avg_squarefootage")}
    frame = HourlyFrame(np.datetime64("2025-01-06T00", "h") + np.arange(hours), target,
                        past={"avg_humidity": humidity, **noise})
    model = SeedModel(past=("avg_humidity", *noise))
    model.fit(frame, 7)
    shares = dict(model.feature_importances())
    assert set(shares) == set(model.feature_names())
    assert len(shares) == 7 * 4 and "target_lag1" in shares and "avg_humidity_lag7" in shares
    assert sum(shares.values()) == pytest.approx(1.0)
    humidity_share = sum(v for k, v in shares.items() if k.startswith("avg_humidity_lag"))
    assert humidity_share > 0.8, sorted(shares.items(), key=lambda kv: -kv[1])[:8]
    # The names are in the LightGBM text export too, and survive the round trip.
    restored = load_model(model.to_text())
    assert restored.feature_importances() == model.feature_importances()
    assert "avg_humidity_lag1" in model.to_text()


def test_default_importances_name_its_features(building: HourlyFrame) -> None:
    model = DefaultModel(past=PAST_COLUMNS, params=FAST)
    model.fit(building, 48)
    shares = model.feature_importances()
    assert [n for n, _ in shares if n not in model.feature_names] == []
    assert sum(v for _, v in shares) == pytest.approx(1.0)
    assert [v for _, v in shares] == sorted((v for _, v in shares), reverse=True)
    assert load_model(model.to_text()).feature_importances() == shares


def test_models_without_trees_have_no_importances(building: HourlyFrame) -> None:
    short = DefaultModel(past=PAST_COLUMNS, params=FAST)
    short.fit(building.slice(0, 100), 24)  # falls back to seasonal naive
    assert short.fallback_only and short.feature_importances() == []
    assert SeasonalNaive(168).feature_importances() == []
    assert SeedModel().feature_importances() == []
