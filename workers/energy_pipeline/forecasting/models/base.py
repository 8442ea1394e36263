"""The one interface every forecasting model implements, and text (de)serialisation."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol

import numpy as np

from energy_pipeline.forecasting.frame import HourlyFrame
from energy_pipeline.forecasting.quantiles import QuantileForecast

FORMAT = "energy-pipeline/forecaster"
FORMAT_VERSION = 1


class Forecaster(Protocol):
    """A model that forecasts P10/P50/P90 of the target for given horizons.

    `fit(frame, max_horizon)` learns from every row of `frame` (all of it is history).
    `predict(frame, origin, horizons)` forecasts target times origin + h - 1 for each h in
    `horizons` (1-based). It must read the target and past covariates only at indices
    < origin and may read future covariates up to the last target time. It never raises
    for lack of history: it falls back and says so in `QuantileForecast.method`.
    `to_text()` gives JSON that `models.load_model` turns back into an equal model.
    `feature_importances()` says what the fitted model's trees split on: (feature, share of
    the gain) pairs, largest first, shares summing to 1; [] for a model without trees.
    """

    kind: ClassVar[str]

    def fit(self, frame: HourlyFrame, max_horizon: int) -> None: ...

    def predict(
        self, frame: HourlyFrame, origin: int, horizons: np.ndarray
    ) -> QuantileForecast: ...

    def to_text(self) -> str: ...

    def feature_importances(self) -> list[tuple[str, float]]: ...


class Booster(Protocol):
    """What `gain_shares` reads of a `lightgbm.Booster` (this module loads no LightGBM)."""

    def feature_name(self) -> list[str]: ...

    def feature_importance(self, importance_type: str = ...) -> np.ndarray: ...


def gain_shares(boosters: Iterable[Booster]) -> list[tuple[str, float]]:
    """Per feature, its share of each booster's total split gain, averaged over the boosters.

    Normalising each booster first gives every booster (a quantile, a step ahead) the same
    weight whatever the scale of its loss. Boosters without a split are left out; features
    never split on are listed with 0, so every input of the model is named.
    """
    total: dict[str, float] = {}
    counted = 0
    for booster in boosters:
        gains = np.asarray(booster.feature_importance(importance_type="gain"), dtype=np.float64)
        names = booster.feature_name()
        if len(names) != len(gains):
            raise ValueError("a booster's feature names and gains differ in number")
        for name in names:
            total.setdefault(name, 0.0)
        whole = float(gains.sum())
        if not np.isfinite(whole) or whole <= 0:
            continue
        counted += 1
        for name, gain in zip(names, gains, strict=True):
            total[name] += float(gain) / whole
    if counted == 0:
        return []
    shares = [(name, value / counted) for name, value in total.items()]
    return sorted(shares, key=lambda item: (-item[1], item[0]))


def envelope(kind: str, body: dict[str, Any]) -> str:
    """The JSON document a model serialises to: format tag, kind and the model's own body."""
    return json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "kind": kind, **body})


def open_envelope(text: str) -> tuple[str, dict[str, Any]]:
    doc = json.loads(text)
    if doc.get("format") != FORMAT:
        raise ValueError("not a serialised energy-pipeline forecaster")
    if doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported forecaster format version {doc.get('version')}")
    return str(doc["kind"]), doc
