"""Forecasting models behind one interface (`base.Forecaster`), built by name.

The one place a model's name becomes its class: `build_model` (a fresh model by name, for
`train`, `backtest` and the benchmarks) and `load_model` (a stored one by the kind its
text names, for inference) both read the tables below. `kinds.SERVED_MODELS`, the names a
pipeline may train and serve, are a subset of `MODEL_NAMES` (a unit test keeps them so);
the seasonal naive ones are baselines for backtests only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from energy_pipeline.forecasting.models.base import Forecaster, open_envelope
from energy_pipeline.forecasting.models.default import DefaultModel, DefaultParams
from energy_pipeline.forecasting.models.naive import SeasonalNaive, fallback_forecast
from energy_pipeline.forecasting.models.seed import SeedModel

# (past covariates, future covariates, default-model hyper-parameters) -> a fresh model.
Builder = Callable[[tuple[str, ...], tuple[str, ...], DefaultParams], Forecaster]

_BUILDERS: dict[str, Builder] = {
    "default": lambda past, future, params: DefaultModel(past=past, future=future, params=params),
    "seed": lambda past, future, _params: SeedModel(past=past, future=future),
    "naive24": lambda _past, _future, _params: SeasonalNaive(24),
    "naive168": lambda _past, _future, _params: SeasonalNaive(168),
}
MODEL_NAMES = tuple(_BUILDERS)

# The kind a serialised model names (its class's `kind`) -> the class that reads it back.
_CLASSES: dict[str, type[DefaultModel] | type[SeedModel] | type[SeasonalNaive]] = {
    cls.kind: cls for cls in (DefaultModel, SeedModel, SeasonalNaive)
}


def build_model(
    name: str,
    past: Sequence[str] = (),
    future: Sequence[str] = (),
    params: DefaultParams | None = None,
) -> Forecaster:
    """A fresh, unfitted model; covariate names are the columns it will read. `params`
    are the default model's hyper-parameters (the others have fixed recipes)."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return builder(tuple(past), tuple(future), params or DefaultParams())


def load_model(text: str) -> Forecaster:
    """The model serialised by its `to_text()` (JSON with LightGBM model strings inside)."""
    kind, doc = open_envelope(text)
    cls = _CLASSES.get(kind)
    if cls is None:
        raise ValueError(f"unknown model kind {kind!r}")
    return cls.from_doc(doc)


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
