"""`energy-pipeline train` against a real PostgreSQL: register, backtest, promote if not worse."""

from __future__ import annotations

import json
import os
import subprocess

import psycopg2
import pytest
from energy_harness.localstack.workers import energy_pipeline_argv
from energy_harness.synthetic import synthetic_building
from energy_pipeline.forecasting.hourly_db import write_hourly_frame
from energy_pipeline.forecasting.models import load_model

pytestmark = pytest.mark.integration

# Few boosting rounds: these tests are about the registry, not about model quality.
FAST_PARAMS = json.dumps({"num_boost_round": 30, "early_stopping_rounds": 5, "max_rows": 8000})


@pytest.fixture
def db(database: str) -> str:
    return database


def seed(url: str, site: str, hours: int, seed: int) -> None:
    with psycopg2.connect(url) as conn:
        write_hourly_frame(conn, site, synthetic_building(hours, seed=seed))
    conn.close()


def train(
    url: str, *args: str, backtest_days: int = 7, **extra: str
) -> tuple[int, list[dict], str]:
    env = {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "DATABASE_URL": url,
        "TRAIN_BACKTEST_DAYS": str(backtest_days),
        "TRAIN_MODEL_PARAMS": FAST_PARAMS,
        **extra,
    }
    done = subprocess.run(
        energy_pipeline_argv(["train", *args]), env=env, capture_output=True, text=True,
        timeout=300,
    )
    logs = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    registered = [entry for entry in logs if entry.get("msg") == "model registered"]
    return done.returncode, registered, done.stdout + done.stderr


def models(url: str) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            """SELECT version, site_id, promoted, metrics, params, trained_on_until, artifact
               FROM models ORDER BY created_at, version"""
        )
        rows = cur.fetchall()
    conn.close()
    return rows


def test_train_registers_and_promotes_only_if_not_worse(db: str) -> None:
    seed(db, "site-a", 24 * 35, seed=1)
    seed(db, "site-b", 24 * 35, seed=2)

    code, lines, stderr = train(db)
    assert code == 0, stderr
    assert {line["site_id"] for line in lines} == {"site-a", "site-b"}
    first = models(db)
    assert [(r[1], r[2]) for r in first] == [("site-a", True), ("site-b", True)]
    for _version, _site, _promoted, metrics, params, until, artifact in first:
        # A real backtest: 7 days of daily origins, 3.5-day horizon, beating seasonal naive.
        assert metrics["backtest_origins"] >= 3
        assert 0 < metrics["mase"] < 1.0
        assert 0.5 <= metrics["coverage_p10_p90"] <= 1.0
        assert params["backtest"]["origins"] == metrics["backtest_origins"]
        assert params["training"]["training_rows"] > 0
        # The newest hour may still be filling, so training stops before it.
        assert until.isoformat().startswith("2025-02-09T23:00")
        assert load_model(artifact).kind == "default"

    # Same data, same parameters: the same backtest, which is "not worse".
    code, lines, stderr = train(db, "--site", "site-a")
    assert code == 0, stderr
    assert lines[0]["promoted"] is True, lines
    promoted = {r[1]: r[0] for r in models(db) if r[2]}
    assert promoted["site-a"] == lines[0]["version"]
    assert len(models(db)) == 3

    # An incumbent that backtested far better keeps serving; the candidate is still stored.
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute(
            """UPDATE models SET metrics = jsonb_set(metrics, '{mase}', '0.01')
               WHERE promoted AND site_id = 'site-a'"""
        )
    conn.close()
    code, lines, stderr = train(db, "--site", "site-a")
    assert code == 0, stderr
    assert lines[0]["promoted"] is False
    assert "0.0100" in lines[0]["reason"]
    after = {r[1]: r[0] for r in models(db) if r[2]}
    assert after["site-a"] == promoted["site-a"]
    assert len(models(db)) == 4

    # --force overrides the rule.
    code, lines, stderr = train(db, "--site", "site-a", "--force")
    assert code == 0 and lines[0]["promoted"] is True, stderr


def test_short_history_gives_a_fallback_model_and_unknown_site_fails(db: str) -> None:
    seed(db, "tiny", 24 * 3 + 1, seed=3)  # the newest hour is left out
    code, lines, stderr = train(db, backtest_days=1)
    assert code == 0, stderr
    [(version, site, promoted, metrics, params, _until, artifact)] = models(db)
    assert (site, promoted, version) == ("tiny", True, lines[0]["version"])
    assert "fallback" in params["training"]
    assert metrics["fallback_origins"] == metrics["backtest_origins"] >= 1
    assert load_model(artifact).fallback_only  # type: ignore[attr-defined]

    code, lines, stderr = train(db, "--site", "nowhere")
    assert code == 2 and not lines
    assert "no closed hours" in stderr


def test_no_data_is_not_an_error(db: str) -> None:
    code, lines, _ = train(db)
    assert code == 0 and lines == []


def stored(url: str, version: str) -> tuple:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            """SELECT promoted, params, metrics, feature_importances, artifact FROM models
               WHERE version = %s""", (version,),
        )
        row = cur.fetchone()
    conn.close()
    return row


def check_importances(shares: list[dict], names: set[str]) -> None:
    assert shares and {s["feature"] for s in shares} <= names
    gains = [s["gain"] for s in shares]
    assert sum(gains) == pytest.approx(1.0) and gains == sorted(gains, reverse=True)


def test_seed_models_are_trained_recorded_and_promoted_within_the_pipelines_kind(
    db: str,
) -> None:
    seed(db, "site-a", 24 * 35, seed=4)

    # The pipeline's kind is default (FORECAST_MODEL unset): a default model, with the
    # report's 80/20 split beside its backtest, and its feature importances.
    code, [line], stderr = train(db)
    assert code == 0 and line["model"] == "default" and line["promoted"], stderr
    promoted, params, metrics, shares, artifact = stored(db, line["version"])
    split = metrics["report_split"]
    assert (split["n_train"], split["n_test"]) == (94, 24)  # 119 windows of 7 h: 118 pairs
    assert split["train_rmse"] > 0 and split["test_rmse"] > 0
    assert split["test_rmse"] == line["report_test_rmse"]
    assert "test_rmse_smoothed" not in split
    check_importances(shares, set(load_model(artifact).feature_names))  # type: ignore[attr-defined]
    assert line["top_feature"] == shares[0]["feature"]

    # `train --model seed` on that pipeline: the report's model, stored for comparison.
    code, [line], stderr = train(db, "--model", "seed")
    assert code == 0, stderr
    assert (line["model"], line["promoted"]) == ("seed", False)
    assert "stored for comparison only" in line["reason"]
    promoted, params, metrics, shares, artifact = stored(db, line["version"])
    model = load_model(artifact)
    assert (model.kind, params["model"], promoted) == ("seed", "seed", False)
    assert len(model.boosters) == 7  # type: ignore[attr-defined]
    assert params["hyper_parameters"]["num_boost_round"] == 200  # the report's, not FAST
    assert metrics["backtest_origins"] >= 3 and metrics["mase"] > 0
    assert metrics["coverage_p10_p90"] == 0.0  # P10 = P50 = P90: the band covers nothing
    split = metrics["report_split"]
    assert (split["n_train"], split["n_test"]) == (94, 24)
    # The report's own figures: scored against its smoothed target, lower than ours.
    assert 0 < split["test_rmse_smoothed"] < split["test_rmse"]
    assert 0 < split["train_rmse_smoothed"] < split["train_rmse"]
    check_importances(shares, set(model.feature_names()))  # type: ignore[attr-defined]
    assert all("_lag" in s["feature"] for s in shares)

    # The pipeline switched to seed (spec.forecast.model): its first seed model replaces
    # the default one, whatever their backtests.
    code, [line], stderr = train(db, FORECAST_MODEL="seed")
    assert code == 0 and (line["model"], line["promoted"]) == ("seed", True), stderr
    assert "replaces the promoted default model" in line["reason"]
    # From then on seed models compete with seed models only.
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute("UPDATE models SET metrics = jsonb_set(metrics, '{mase}', '0.01')"
                    " WHERE promoted AND site_id = 'site-a'")
    conn.close()
    code, [line], stderr = train(db, FORECAST_MODEL="seed")
    assert code == 0 and not line["promoted"] and "0.0100" in line["reason"], stderr
    # A bad FORECAST_MODEL stops the command before it connects, naming the choices.
    code, lines, stderr = train(db, FORECAST_MODEL="prophet")
    assert code != 0 and not lines and "FORECAST_MODEL must be one of default, seed" in stderr
    assert [r[2] for r in models(db)] == [False, False, True, False]
