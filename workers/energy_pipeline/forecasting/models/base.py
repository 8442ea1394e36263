"""The one interface every forecasting model implements, and text (de)serialisation."""

from __future__ import annotations

import json
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
    """

    kind: ClassVar[str]

    def fit(self, frame: HourlyFrame, max_horizon: int) -> None: ...

    def predict(
        self, frame: HourlyFrame, origin: int, horizons: np.ndarray
    ) -> QuantileForecast: ...

    def to_text(self) -> str: ...


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
