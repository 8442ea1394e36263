"""`energy-pipeline train`: fit a site's model on hourly_features, backtest it, register it.

The model is of the pipeline's kind, FORECAST_MODEL (`default` or `seed`), or of the kind
`--model` names. Per site (`--site`, or every site with hourly_features):
1. read the last TRAIN_HISTORY_DAYS days of closed hours (up to the forecasting
   watermark's last closed hour when ingest keeps one, else all but the newest hour,
   which may still be filling);
2. backtest: a model fitted on everything before the last TRAIN_BACKTEST_DAYS days
   forecasts daily 00:00 origins in them, scored against seasonal naive 168 h on the same
   points (MAE, RMSE, rMAE, MASE, pinball, P10-P90 coverage);
3. the original report's evaluation, an 80/20 chronological split of 7-hour windows
   (`split.report_split`), recorded as `metrics.report_split`;
4. fit the model to be stored on the whole window, and take its feature importances;
5. store it in `models` and promote it if the rule allows (`registry.promotion_decision`:
   within the pipeline's kind, not worse than the promoted one).

Short histories still give a model: the models' documented fallback (seasonal naive with
a widened band) is what it then serves, and its backtest says how good that is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import psycopg2

from energy_pipeline.core.errors import USAGE, CommandError
from energy_pipeline.core.logs import configure_logging
from energy_pipeline.core.settings import (
    CommonSettings,
    SettingsError,
    env,
    environment_help,
    load,
)
from energy_pipeline.db.connect import DatabaseSettings, connect, worker_name
from energy_pipeline.forecasting.backtest import BacktestConfig, origins, run_backtest
from energy_pipeline.forecasting.frame import HourlyFrame, iso_hour
from energy_pipeline.forecasting.hourly_db import (
    all_sites,
    read_site_rows,
    read_site_weather,
)
from energy_pipeline.forecasting.kinds import (
    SERVED_MODELS,
    forecast_model_field,
    model_kind_problems,
)
from energy_pipeline.forecasting.metrics import score
from energy_pipeline.forecasting.models import DefaultParams, Forecaster, build_model
from energy_pipeline.forecasting.registry import Decision, ModelRecord, register_model
from energy_pipeline.forecasting.rows import COVARIATE_COLUMNS, MAX_HORIZON
from energy_pipeline.forecasting.split import report_split
from energy_pipeline.forecasting.window import frame_from_rows

log = logging.getLogger("energy_pipeline.train")


@dataclass(frozen=True, kw_only=True)
class TrainSettings(CommonSettings, DatabaseSettings):
    train_history_days: int = env(
        "TRAIN_HISTORY_DAYS", 90, doc="days of hourly_features a model is trained on", minimum=1
    )
    train_backtest_days: int = env(
        "TRAIN_BACKTEST_DAYS", 14,
        doc="latest days held out for the backtest that decides promotion", minimum=1,
    )
    train_model_params: str = env(
        "TRAIN_MODEL_PARAMS", "{}",
        doc='JSON object overriding default-model hyper-parameters, e.g. `{"num_leaves": 31}`',
    )
    forecast_model: str = forecast_model_field()

    def __post_init__(self) -> None:
        problems = model_kind_problems(self.forecast_model)
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))

    def model_params(self) -> DefaultParams:
        try:
            overrides = json.loads(self.train_model_params or "{}")
            return dataclasses.replace(DefaultParams(), **overrides)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"TRAIN_MODEL_PARAMS: {exc}") from exc


@dataclass(frozen=True)
class BacktestPlan:
    horizon: int
    test_start: int
    origins: int


def plan_backtest(frame: HourlyFrame, backtest_days: int) -> BacktestPlan | None:
    """Daily 00:00 origins in the last `backtest_days` days, or None when none fits.

    The horizon is the full week when the period holds it at least twice over, shorter
    otherwise, so that there are always several origins to score.
    """
    hours = backtest_days * 24
    horizon = min(MAX_HORIZON, max(24, hours // 2))
    start = max(0, len(frame) - hours)
    while start < len(frame) and frame.times[start].astype(np.int64) % 24 != 0:
        start += 1
    if start <= 0:
        return None  # nothing left to train the backtest model on
    points = origins(len(frame), start, 24, horizon)
    if len(points) == 0:
        return None
    return BacktestPlan(horizon, start, len(points))


def backtest(
    frame: HourlyFrame, kind: str, factory: Callable[[], Forecaster], plan: BacktestPlan
) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of `factory`'s model on the plan's origins, fitted once before the first."""
    # One fit at the first origin: the period is short, and it keeps training cheap.
    config = BacktestConfig(
        horizon=plan.horizon, every=24, retrain_every=10**9, test_start=plan.test_start
    )
    ours = run_backtest(frame, kind, factory, config)
    naive = run_backtest(frame, "naive168", lambda: build_model("naive168"), config)
    metrics = score(ours.actual, ours.p10, ours.p50, ours.p90, naive.p50).as_dict()
    naive_metrics = score(naive.actual, naive.p10, naive.p50, naive.p90, naive.p50)
    metrics.update(
        {
            "naive168_mae": naive_metrics.mae,
            "backtest_origins": float(plan.origins),
            "backtest_horizon_hours": float(plan.horizon),
            "fallback_origins": float(sum(m != "model" for m in ours.methods)),
        }
    )
    info = {
        "first_origin": iso_hour(frame.times[plan.test_start]),
        "last_origin": iso_hour(ours.origin[-1]) if len(ours.origin) else None,
        "origins": plan.origins,
        "horizon_hours": plan.horizon,
        "fit_seconds": round(ours.fit_seconds, 3),
    }
    return metrics, info


@dataclass(frozen=True)
class TrainResult:
    site_id: str
    record: ModelRecord
    decision: Decision
    seconds: float

    def summary(self) -> dict[str, Any]:
        metrics = self.record.metrics
        split = metrics.get("report_split") or {}
        return {
            "site_id": self.site_id,
            "model": self.record.kind,
            "version": self.record.version,
            "promoted": self.record.promoted,
            "reason": self.decision.reason,
            "trained_on_until": self.record.trained_on_until,
            "mase": metrics.get("mase"),
            "mae": metrics.get("mae"),
            "coverage_p10_p90": metrics.get("coverage_p10_p90"),
            "report_test_rmse": split.get("test_rmse"),
            "top_feature": (self.record.feature_importances or [{}])[0].get("feature"),
            "seconds": round(self.seconds, 2),
        }


def train_site(
    conn: psycopg2.extensions.connection,
    site_id: str,
    settings: TrainSettings,
    force: bool = False,
    model_kind: str | None = None,
) -> TrainResult | None:
    """Train, backtest and register one site's model of `model_kind` (default: the
    pipeline's, FORECAST_MODEL); None when the site has no data."""
    started = time.perf_counter()
    kind = model_kind or settings.forecast_model
    params = settings.model_params()
    rows, until = read_site_rows(conn, site_id, settings.train_history_days)
    if not rows:
        conn.commit()
        return None
    frame = frame_from_rows(rows)
    # The site's weather forecasts as issued, for the default model only (the seed recipe is
    # the report's, which had none): each training row reads the newest issue before its
    # origin, as the live forecast will.
    weather = (
        read_site_weather(conn, site_id, min(r.hour for r in rows) - timedelta(days=1), until)
        if kind == "default" else {}
    )
    conn.commit()  # no transaction open while we compute
    future = tuple(weather)
    frame = dataclasses.replace(frame, issued=weather)

    def factory() -> Forecaster:
        return build_model(kind, past=COVARIATE_COLUMNS, future=future, params=params)

    plan = plan_backtest(frame, settings.train_backtest_days)
    metrics: dict[str, Any] = {}
    backtest_info: dict[str, Any] | None = None
    if plan is not None:
        scores, backtest_info = backtest(frame, kind, factory, plan)
        metrics.update(scores)
    split = report_split(frame, factory)
    if split is not None:
        metrics["report_split"] = split.as_dict()
    model = factory()
    model.fit(frame, MAX_HORIZON)
    artifact = model.to_text()
    # What the model keeps of its making, read back from its own text: the
    # hyper-parameters it was trained with and, for the default model, how training went.
    stored = json.loads(artifact)
    record_params = {
        "model": kind,
        "past_covariates": list(COVARIATE_COLUMNS),
        # Forecast weather variables read as issued ([]: none was stored for the site).
        "weather_forecast": {
            "variables": list(future),
            "issues": len({t for s in weather.values() for t in s.issued_at.tolist()}),
        },
        "hyper_parameters": stored.get("params"),
        "history_days": settings.train_history_days,
        "backtest_days": settings.train_backtest_days,
        "backtest": backtest_info,
        "training": stored.get("trained"),
        "rows": len(rows),
        "first_hour": iso_hour(frame.times[0]),
    }
    with conn:
        record, decision = register_model(
            conn,
            site_id=site_id,
            artifact=artifact,
            trained_on_until=until,
            params=record_params,
            metrics=metrics,
            force=force,
            feature_importances=model.feature_importances(),
            serving=settings.forecast_model,
        )
    return TrainResult(site_id, record, decision, time.perf_counter() - started)


def run(args: argparse.Namespace) -> int:
    settings = load(TrainSettings)
    settings.model_params()  # a bad TRAIN_MODEL_PARAMS fails here, before connecting
    configure_logging("train", settings.pipeline_name, settings.log_level)
    conn = connect(
        settings.database_dsn(),
        application_name=worker_name("train", settings.pipeline_name),
        connect_timeout_s=10,  # a one-shot job with no retry loop: a little more patience
    )
    failed: list[str] = []
    try:
        sites = [args.site] if args.site else all_sites(conn)
        conn.commit()
        if not sites:
            log.warning("no hourly_features yet; nothing to train")
            return 0
        for site in sites:
            try:
                result = train_site(conn, site, settings, force=args.force, model_kind=args.model)
            except Exception:
                conn.rollback()
                failed.append(site)
                log.exception("training failed", extra={"site_id": site})
                continue
            if result is None:
                log.error("no closed hours of hourly_features", extra={"site_id": site})
                if args.site:
                    raise CommandError(
                        f"--site {site}: no closed hours of hourly_features",
                        fix="check the site id, or train once ingest has closed an hour of it",
                        status=USAGE,
                    )
                continue
            # One JSON log line per site (stdout): what a CronJob's log should show.
            log.info("model registered", extra=result.summary())
    finally:
        conn.close()
    if failed:
        # A CronJob's Job fails, and its one line names the sites; the log has each error.
        raise CommandError(
            f"training failed for {len(failed)} of {len(sites)} site(s): {', '.join(failed)}",
            fix='their "training failed" log lines on stdout hold each error',
        )
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "train",
        help="train, backtest and register forecasting models from hourly_features",
        description=(
            "For --site (default: every site) read the last TRAIN_HISTORY_DAYS days of "
            "hourly_features, backtest on the last TRAIN_BACKTEST_DAYS days against "
            "seasonal naive 168 h, score the original report's 80/20 split, store a new "
            "version in `models` with its feature importances and promote it only if it is "
            "of the pipeline's kind (FORECAST_MODEL) and its backtest MASE is not worse "
            "than the promoted version's of that kind. Logs one JSON line per site "
            "(message \"model registered\"). Exits 1 naming the sites whose training "
            "failed, if any."
        ),
        epilog=environment_help(TrainSettings),
    )
    p.add_argument("--site", default=None, help="one site id (default: all sites)")
    p.add_argument(
        "--model", choices=SERVED_MODELS, default=None,
        help="the kind of model to train (default: FORECAST_MODEL); one of another kind than "
        "FORECAST_MODEL is stored for comparison, not promoted (unless --force)",
    )
    p.add_argument(
        "--force", action="store_true", help="promote the new version whatever its backtest"
    )
    p.set_defaults(func=run)
