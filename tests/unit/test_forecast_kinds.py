"""Model kinds: one name -> class mapping for train, backtest and inference; FORECAST_MODEL in
the settings and the CRD; how promotion treats a candidate of another kind."""

from __future__ import annotations

import json

import pytest
from energy_harness.synthetic import PAST_COLUMNS
from energy_operator import crd
from energy_pipeline.core.settings import SettingsError, load
from energy_pipeline.forecasting import kinds
from energy_pipeline.forecasting.models import (
    MODEL_NAMES,
    DefaultModel,
    DefaultParams,
    SeasonalNaive,
    SeedModel,
    build_model,
    load_model,
)
from energy_pipeline.forecasting.registry import ModelRecord, promotion_decision
from energy_pipeline.forecasting.train import TrainSettings
from energy_pipeline.inference.server import InferenceSettings, numeric_metrics

pytestmark = pytest.mark.unit

URL = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}


def test_each_name_builds_its_class_and_each_kind_loads_back() -> None:
    expected = {"default": DefaultModel, "seed": SeedModel, "naive24": SeasonalNaive,
                "naive168": SeasonalNaive}
    assert set(MODEL_NAMES) == set(expected)
    for name, cls in expected.items():
        model = build_model(name, PAST_COLUMNS)
        assert type(model) is cls, name
        restored = load_model(model.to_text())  # unfitted: still a valid artifact
        assert type(restored) is cls and restored.kind == model.kind
    assert build_model("seed", PAST_COLUMNS).past == PAST_COLUMNS  # type: ignore[attr-defined]
    params = DefaultParams(num_leaves=7)
    assert build_model("default", params=params).params is params  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown model 'prophet'; choose one of default"):
        build_model("prophet")
    envelope = json.loads(build_model("seed").to_text())
    with pytest.raises(ValueError, match="unknown model kind 'prophet'"):
        load_model(json.dumps({**envelope, "kind": "prophet"}))


def test_served_kinds_are_trainable_names_and_the_crd_enum() -> None:
    assert set(kinds.SERVED_MODELS) <= set(MODEL_NAMES)
    assert kinds.DEFAULT_KIND in kinds.SERVED_MODELS
    # A served kind is what its model writes into its artifact, so inference can tell.
    assert {build_model(name).kind for name in kinds.SERVED_MODELS} == set(kinds.SERVED_MODELS)
    forecast = crd.spec_schema()["properties"]["forecast"]["properties"]
    assert forecast["model"]["enum"] == list(kinds.SERVED_MODELS)
    assert forecast["model"]["default"] == kinds.DEFAULT_KIND
    setting = {s.env: s for s in crd.settings()}["FORECAST_MODEL"]
    assert setting.path == ("forecast", "model")
    assert set(setting.workers) == {"train", "inference"}


@pytest.mark.parametrize("cls", [TrainSettings, InferenceSettings])
def test_forecast_model_setting(cls: type) -> None:
    extra = {"GRPC_TLS": "false"} if cls is InferenceSettings else {}
    assert load(cls, {**URL, **extra}).forecast_model == "default"
    assert load(cls, {**URL, **extra, "FORECAST_MODEL": "seed"}).forecast_model == "seed"
    with pytest.raises(SettingsError, match="FORECAST_MODEL must be one of default, seed, got "
                                            "'naive168'"):
        load(cls, {**URL, **extra, "FORECAST_MODEL": "naive168"})


def test_kind_of_a_registry_row() -> None:
    assert kinds.kind_of({"model": "seed"}) == "seed"
    assert kinds.kind_of({}) == "default"  # rows from before there were other kinds
    assert kinds.kind_of({"model": ""}) == "default"
    assert kinds.kind_of(None) == "default"
    record = ModelRecord("v", "s", None, None, {"model": "seed"}, {}, True, None)  # type: ignore[arg-type]
    assert record.kind == "seed"


def test_promotion_compares_only_within_the_pipelines_kind() -> None:
    good, bad = {"mase": 0.5}, {"mase": 5.0}
    # Same kind as the promoted one and as the pipeline: the backtest decides.
    assert promotion_decision(good, bad, kind="seed", incumbent_kind="seed", serving="seed").promote
    assert not promotion_decision(bad, good, kind="seed", incumbent_kind="seed",
                                  serving="seed").promote
    # The pipeline switched kinds: its first model of the new kind replaces the old one,
    # however much better the old one backtested.
    switched = promotion_decision(bad, good, kind="seed", incumbent_kind="default",
                                  serving="seed")
    assert switched.promote and "replaces the promoted default model" in switched.reason
    # A model of another kind than the pipeline serves is kept for comparison only, even
    # when it is better or nothing is promoted.
    for incumbent in (bad, None):
        other = promotion_decision(good, incumbent, kind="seed", incumbent_kind="default",
                                   serving="default")
        assert not other.promote and "stored for comparison only" in other.reason
    # Unless forced.
    assert promotion_decision(bad, good, True, kind="seed", incumbent_kind="default",
                              serving="default").promote
    # Without a pipeline kind (a caller that does not say), the candidate's kind serves.
    assert not promotion_decision(bad, good, kind="seed", incumbent_kind="seed").promote


def test_model_info_metrics_flatten_the_report_split() -> None:
    metrics = {"mase": 0.8, "n": 3, "ok": True, "rmse": None, "note": "x",
               "report_split": {"test_rmse": 4.5, "n_test": 62, "bad": None}}
    assert numeric_metrics(metrics) == {"mase": 0.8, "n": 3.0, "report_split.test_rmse": 4.5,
                                        "report_split.n_test": 62.0}
