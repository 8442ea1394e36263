"""Forecasting models behind one interface (`base.Forecaster`), built by name."""

from __future__ import annotations

from collections.abc import Sequence

from energy_pipeline.forecasting.models.base import Forecaster, open_envelope
from energy_pipeline.forecasting.models.default import DefaultModel, DefaultParams
from energy_pipeline.forecasting.models.naive import SeasonalNaive, fallback_forecast
from energy_pipeline.forecasting.models.seed import SeedModel

MODEL_NAMES = ("default", "seed", "naive24", "naive168")


def build_model(name: str, past: Sequence[str] = (), future: Sequence[str] = ()) -> Forecaster:
    """A fresh, unfitted model; covariate names are the columns it will read."""
    if name == "default":
        return DefaultModel(past=tuple(past), future=tuple(future))
    if name == "seed":
        return SeedModel(past=tuple(past), future=tuple(future))
    if name == "naive24":
        return SeasonalNaive(24)
    if name == "naive168":
        return SeasonalNaive(168)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def load_model(text: str) -> Forecaster:
    """The model serialised by its `to_text()` (JSON with LightGBM model strings inside)."""
    kind, doc = open_envelope(text)
    if kind == "default":
        return DefaultModel.from_doc(doc)
    if kind == "seed":
        return SeedModel.from_doc(doc)
    if kind == "naive":
        return SeasonalNaive.from_doc(doc)
    raise ValueError(f"unknown model kind {kind!r}")


__all__ = [
    "MODEL_NAMES",
    "DefaultModel",
    "DefaultParams",
    "Forecaster",
    "SeasonalNaive",
    "SeedModel",
    "build_model",
    "fallback_forecast",
    "load_model",
]
