"""Weather forecasts in the live forecast path (issue #20), against a real PostgreSQL and a
real inference process: `train` fits the default model with the site's stored forecasts as
issued; the scheduler sends each origin the forecast as it stood before it; a forecast made
without one is marked, counted, and reported to the operator."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg2
import psycopg2.extras
import pytest
from energy_harness.localstack.process import free_port
from energy_harness.localstack.workers import WorkerProcess
from energy_harness.pki import grpc_tls_env
from energy_harness.synthetic import synthetic_building
from energy_operator.reconcile import registry_facts
from energy_pipeline.core.contracts import Reading
from energy_pipeline.dataplane.forecast_scheduler import ForecastScheduler, ForecastSettings
from energy_pipeline.forecasting.hourly_db import read_window, write_hourly_frame
from energy_pipeline.forecasting.issued import IssuedSeries
from energy_pipeline.forecasting.models import DefaultModel, load_model
from energy_pipeline.forecasting.train import TrainSettings, train_site
from energy_pipeline.forecasting.window import forecast_window
from prometheus_client import REGISTRY

pytestmark = pytest.mark.integration

START = datetime(2025, 1, 6, tzinfo=UTC)
DAYS = 30
FAST = json.dumps({"num_boost_round": 30, "early_stopping_rounds": 5, "max_rows": 8000})
# Forecasts issued every 6 h (20 min past the hour) for the next 48 h, until this hour: the
# origins after the last one's reach are forecast without weather.
LAST_ISSUE_HOUR = 24 * DAYS - 60
# Closed hours owed a forecast: from the first reading observed to the watermark.
FIRST, LAST = 24 * DAYS - 80, 24 * DAYS - 1
HORIZONS = 24


def hour(n: int) -> datetime:
    return START + timedelta(hours=n)


def issues(frame_temperature: np.ndarray, frame_humidity: np.ndarray) -> list[tuple]:
    """(issued_at, valid_time, temperature, humidity) rows; the error grows with the lead."""
    rng = np.random.default_rng(5)
    rows = []
    for at in range(0, LAST_ISSUE_HOUR + 1, 6):
        error = 0.0
        for lead in range(1, 49):
            error = 0.9 * error + rng.normal(0, 0.05)
            h = at + lead
            if h < len(frame_temperature):
                rows.append((hour(at) + timedelta(minutes=20), hour(h),
                             float(frame_temperature[h] + error * np.sqrt(lead)),
                             float(frame_humidity[h] - 2 * error)))
    return rows


def query(url: str, sql: str, *args: object) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        rows = cur.fetchall() if cur.description else []
    conn.close()
    return rows


def missing_counted() -> float:
    return REGISTRY.get_sample_value(
        "energy_forecasts_missing_input_total", {"input": "weather_forecast"}) or 0.0


def test_weather_forecasts_reach_the_model_and_their_absence_is_reported(
    database: str, tmp_path: Path
) -> None:
    url = database
    frame = synthetic_building(24 * DAYS, seed=4)
    weather = issues(frame.past["avg_temperature"], frame.past["avg_humidity"])
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        write_hourly_frame(conn, "site-a", frame)
        psycopg2.extras.execute_values(
            cur,
            """INSERT INTO weather_forecasts (site_id, issued_at, valid_time, source,
                                              temperature, humidity) VALUES %s""",
            [("site-a", i, v, "sim", t, h) for i, v, t, h in weather],
        )
    conn.close()

    # `train` reads the forecasts as issued and records that it did.
    settings = TrainSettings(database_url=url, train_backtest_days=5, train_model_params=FAST)
    conn = psycopg2.connect(url)
    try:
        assert train_site(conn, "site-a", settings) is not None
    finally:
        conn.close()
    [(version, artifact, params)] = query(
        url, "SELECT version, artifact, params FROM models WHERE promoted")
    model = load_model(artifact)
    assert isinstance(model, DefaultModel) and model.future == ("temperature", "humidity")
    # Issues made before the end of the training data only (all of them here).
    assert params["weather_forecast"] == {
        "variables": ["temperature", "humidity"], "issues": LAST_ISSUE_HOUR // 6 + 1}
    assert any(name.startswith("temperature_") for name in model.feature_names)

    port = free_port()
    tls = grpc_tls_env(tmp_path / "grpc-tls")
    env = {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "DATABASE_URL": url, "GRPC_PORT": str(port), "MODEL_REFRESH_S": "0.5",
        **tls["inference"],
    }
    worker = WorkerProcess("inference", ["inference"], env, tmp_path / "logs").start()
    scheduler: ForecastScheduler | None = None
    try:
        # The scheduler's channel after the worker's fork: a process forked while gRPC
        # threads run can abort in gRPC's fork handlers.
        scheduler = ForecastScheduler(
            ForecastSettings(
                inference_target=f"127.0.0.1:{port}", forecast_horizons=HORIZONS,
                forecast_stream_idle_s=300,
                grpc_tls_cert_file=tls["ingest"]["GRPC_TLS_CERT_FILE"],
                grpc_tls_key_file=tls["ingest"]["GRPC_TLS_KEY_FILE"],
                grpc_tls_ca_file=tls["ingest"]["GRPC_TLS_CA_FILE"],
            ),
            url, close_every_s=0,
        )
        counted_before = missing_counted()
        worker.wait_ready(30)
        scheduler.observe(
            Reading("site-a", "energyconsumption", "0", hour(h) + timedelta(minutes=m), 1.0)
            for h in range(FIRST, LAST + 2) for m in (0, 30)
        )
        scheduler.step()
        deadline = time.monotonic() + 120
        while query(url, "SELECT count(*) FROM forecast_backlog")[0][0]:
            assert time.monotonic() < deadline, "the backlog did not drain"
            scheduler.step()
            time.sleep(0.05)
        origins = sorted(o.astimezone(UTC) for (o,) in query(
            url, "SELECT DISTINCT issued_at FROM forecasts WHERE site_id = 'site-a'"))
        assert origins == [hour(h + 1) for h in range(FIRST, LAST + 1)]

        # Without weather: the origins where no issue made before them reaches any target.
        issued_at = np.array([np.datetime64(i.replace(tzinfo=None), "s") for i, *_ in weather])
        valid = np.array([np.datetime64(v.replace(tzinfo=None), "h") for _, v, *_ in weather])
        series = IssuedSeries(issued_at, valid, np.array([t for _, _, t, _ in weather]))
        humidity = IssuedSeries(issued_at, valid, np.array([h for *_, h in weather]))

        def covered(origin: datetime) -> bool:
            at = np.datetime64(origin.replace(tzinfo=None), "s")
            targets = np.datetime64(origin.replace(tzinfo=None), "h") + np.arange(HORIZONS)
            return not np.isnan(series.as_of(np.full(HORIZONS, at), targets)[0]).all()

        bare = {o for o in origins if not covered(o)}
        assert bare and len(bare) < len(origins)
        assert missing_counted() - counted_before == len(bare)
        [(missing, inputs_origin)] = query(
            url, "SELECT missing_inputs, inputs_origin FROM forecast_sites")
        assert missing == ["weather_forecast"] and inputs_origin == origins[-1]
        assert registry_facts(url, inputs=True).missing_inputs == {
            "weather_forecast": ["site-a"]}

        # What was stored is what the model says offline with the same forecasts as issued
        # (every issue, each origin reading those before it), with weather and without.
        for origin in (min(set(origins) - bare), max(set(origins) - bare), min(bare)):
            conn = psycopg2.connect(url)
            try:
                window = read_window(conn, "site-a", origin, 336)
            finally:
                conn.close()
            issued = {"temperature": series, "humidity": humidity}
            offline = forecast_window(model, window, range(1, HORIZONS + 1), issued=issued)
            assert offline.missing_inputs == (("weather_forecast",) if origin in bare else ())
            stored = query(
                url, """SELECT horizon, p50, model_version FROM forecasts
                        WHERE site_id = 'site-a' AND issued_at = %s ORDER BY horizon""", origin)
            assert [(h, v) for h, _, v in stored] == [
                (p.horizon, version) for p in offline.points]
            for (_, p50, _), point in zip(stored, offline.points, strict=True):
                assert abs(p50 - point.p50) <= 1e-9 * max(1.0, abs(p50))
            if origin not in bare:
                # The forecast did change it: without the weather, the model says otherwise.
                blind = forecast_window(model, window, range(1, HORIZONS + 1))
                assert blind.missing_inputs == ("weather_forecast",)
                assert max(abs(a.p50 - b.p50) for a, b in zip(
                    blind.points, offline.points, strict=True)) > 1e-6
    finally:
        worker.stop()
        if scheduler is not None:
            scheduler.client.close()
