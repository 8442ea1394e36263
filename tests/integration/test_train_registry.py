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


def train(url: str, *args: str, backtest_days: int = 7) -> tuple[int, list[dict], str]:
    env = {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "DATABASE_URL": url,
        "TRAIN_BACKTEST_DAYS": str(backtest_days),
        "TRAIN_MODEL_PARAMS": FAST_PARAMS,
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
