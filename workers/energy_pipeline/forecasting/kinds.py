"""The model kinds a pipeline can train and serve: names only, no model library.

`models` maps each name to its class (and loads LightGBM); this module holds what the
workers' settings, the operator's CRD and the read API need to know about the kinds
without importing a model library.

How kinds meet in the registry: a pipeline serves one kind, FORECAST_MODEL
(`spec.forecast.model`), and every site has at most one promoted version. `train` promotes
a candidate of the pipeline's kind by comparing its backtest with the promoted version's
only when both are of that kind; a promoted version of another kind is replaced without a
comparison (the pipeline was switched, and a seed model would rarely out-score a default
one: the switch would never take effect). A candidate of another kind than the pipeline's
(`train --model seed` on a default pipeline) is stored, with its metrics and feature
importances, for comparison, and not promoted unless forced (`registry.promotion_decision`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from energy_pipeline.core.settings import env

# What `spec.forecast.model` / FORECAST_MODEL accept. `backtest` also knows the seasonal
# naive baselines (models.MODEL_NAMES), which are never trained into the registry.
SERVED_MODELS = ("default", "seed")
DEFAULT_KIND = "default"


def forecast_model_field() -> Any:
    """FORECAST_MODEL, for the settings of `train` and `inference` (one name, one meaning)."""
    return env(
        "FORECAST_MODEL", DEFAULT_KIND,
        doc="model kind the pipeline trains and serves: `default` (LightGBM quantile "
        "boosters) or `seed` (the original report's recipe, P10 = P50 = P90); `train` "
        "promotes only models of this kind, replacing a promoted model of another kind",
    )


def model_kind_problems(value: str) -> list[str]:
    """What is wrong with a FORECAST_MODEL value (nothing: [])."""
    if value in SERVED_MODELS:
        return []
    return [f"FORECAST_MODEL must be one of {', '.join(SERVED_MODELS)}, got {value!r}"]


def kind_of(params: Any) -> str:
    """The kind of a registry version from its `params` (versions from before seed models
    could be served recorded only default ones; a hand-made row without it counts as one)."""
    if isinstance(params, Mapping):
        kind = params.get("model")
        if isinstance(kind, str) and kind:
            return kind
    return DEFAULT_KIND
