"""Pure parts of forecast scheduling, training and serving: no services."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest
from energy_harness.synthetic import synthetic_building
from energy_pipeline.core.contracts import Reading
from energy_pipeline.core.settings import SettingsError, load
from energy_pipeline.dataplane.forecast_scheduler import (
    MAX_ROW_BACKOFF_S,
    SERVICE_WIDE,
    ForecastSettings,
    last_closed_hour,
    late_hours,
    merge_marks,
    merge_oldest,
    row_backoff_s,
    service_backoff_s,
    stream_marks,
)
from energy_pipeline.forecasting.registry import json_safe, new_version, promotion_decision
from energy_pipeline.forecasting.rows import HourlyRow
from energy_pipeline.forecasting.train import plan_backtest
from energy_pipeline.forecasting.window import forecast_window
from energy_pipeline.inference.client import SERVICE_CONFIG, channel_target, forecast_request
from energy_pipeline.inference.convert import forecast_to_proto, hour_of, proto_to_rows
from energy_pipeline.inference.tls import CertFiles

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def reading(site: str, sensor: str, device: str, minutes: float) -> Reading:
    return Reading(site=site, sensor=sensor, device=device, ts=T0 + timedelta(minutes=minutes),
                   value=1.0)


# -- watermarks and closing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("watermark", "lateness_s", "closed"),
    [
        # Hour 10:00-11:00 closes once the watermark reaches 11:02 with 120 s lateness.
        (T0.replace(hour=11, minute=2), 120, T0.replace(hour=10)),
        (T0.replace(hour=11, minute=1, second=59), 120, T0.replace(hour=9)),
        (T0.replace(hour=11), 0, T0.replace(hour=10)),
        (T0.replace(hour=10, minute=59), 0, T0.replace(hour=9)),
        (T0.replace(hour=13, minute=30), 3600, T0.replace(hour=11)),
    ],
)
def test_an_hour_closes_when_the_watermark_passes_its_end_plus_lateness(
    watermark: datetime, lateness_s: int, closed: datetime
) -> None:
    assert last_closed_hour(watermark, lateness_s) == closed
    # The definition, checked directly: the closed hour qualifies, the next one does not.
    lateness = timedelta(seconds=lateness_s)
    assert closed + timedelta(hours=1) + lateness <= watermark
    assert closed + timedelta(hours=2) + lateness > watermark


def test_watermarks_are_per_site_and_stream_and_only_move_forward() -> None:
    batch = [
        reading("a", "temperature", "0", 5),
        reading("a", "temperature", "0", 65),
        reading("a", "temperature", "1", 30),
        reading("a", "humidity", "0", 10),
        reading("b", "temperature", "0", 99),
    ]
    marks = stream_marks(batch)

    def at(minutes: float) -> datetime:
        return T0 + timedelta(minutes=minutes)

    assert marks == {
        ("a", "temperature", "0"): (at(5), at(65)),
        ("a", "temperature", "1"): (at(30), at(30)),
        ("a", "humidity", "0"): (at(10), at(10)),
        ("b", "temperature", "0"): (at(99), at(99)),
    }
    # A replayed (older) batch never moves a watermark back; it only extends the start.
    merge_marks(marks, stream_marks([reading("a", "temperature", "0", 1)]))
    assert marks[("a", "temperature", "0")] == (at(1), at(65))
    merge_marks(marks, stream_marks([reading("a", "temperature", "1", 31)]))
    assert marks[("a", "temperature", "1")] == (at(30), at(31))


def test_readings_for_closed_hours_reopen_exactly_those_hours() -> None:
    """A backfill arriving after newer data reaches hours the watermark already closed; they
    are owed as if they had come first (the range is then filtered to hours with data and no
    forecast in the database)."""
    oldest: dict[str, datetime] = {}
    merge_oldest(oldest, stream_marks([reading("a", "temperature", "0", 130),
                                       reading("a", "humidity", "1", 70),
                                       reading("b", "temperature", "0", 600)]))
    merge_oldest(oldest, stream_marks([reading("a", "temperature", "0", 200)]))
    assert oldest == {"a": T0.replace(hour=1, minute=10), "b": T0.replace(hour=10)}
    closed_through = T0.replace(hour=5)
    # Site a's readings from 01:10 on fall into closed hours 01:00..05:00.
    assert late_hours(oldest["a"], closed_through) == (T0.replace(hour=1), closed_through)
    # The hour of site b's oldest reading is still open: the watermark closes it in time.
    assert late_hours(oldest["b"], closed_through) is None
    assert late_hours(closed_through + timedelta(minutes=59), closed_through) == (
        closed_through, closed_through)
    assert late_hours(None, closed_through) is None


def test_backoffs_grow_and_are_capped() -> None:
    delays = [row_backoff_s(n) for n in range(30)]
    assert delays == sorted(delays) and delays[0] == 1 and delays[-1] == MAX_ROW_BACKOFF_S
    pauses = [service_backoff_s(n) for n in range(1, 30)]
    assert pauses == sorted(pauses) and pauses[0] == 0.5 and pauses[-1] == 5
    # Losing an endpoint or the whole service pauses draining; it is never the request's fault.
    assert grpc.StatusCode.UNAVAILABLE in SERVICE_WIDE
    assert grpc.StatusCode.NOT_FOUND not in SERVICE_WIDE


def test_forecast_settings_names_defaults_and_bounds() -> None:
    settings = load(ForecastSettings, {})
    assert settings.inference_target == ""
    assert (settings.forecast_horizons, settings.forecast_lateness_s) == (168, 120)
    assert (settings.forecast_history_hours, settings.forecast_deadline_ms) == (336, 2000)
    custom = load(ForecastSettings, {"INFERENCE_TARGET": "a:1,b:2", "FORECAST_HORIZONS": "24",
                                     "GRPC_TLS": "false"})
    assert custom.inference_target == "a:1,b:2" and custom.forecast_horizons == 24
    with pytest.raises(SettingsError, match="FORECAST_HORIZONS"):
        load(ForecastSettings, {"FORECAST_HORIZONS": "169"})
    with pytest.raises(SettingsError, match="FORECAST_DEADLINE_MS"):
        load(ForecastSettings, {"FORECAST_DEADLINE_MS": "0"})


def test_ingest_settings_carry_the_forecast_settings() -> None:
    from energy_pipeline.dataplane.ingest import IngestSettings

    settings = load(
        IngestSettings,
        {"DATABASE_URL": "postgresql://x", "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
         "INFERENCE_TARGET": "dns:///ep-inference.ns.svc.cluster.local:50051", **TLS_FILES},
    )
    assert settings.inference_target.startswith("dns:///")
    assert settings.forecast_lateness_s == 120
    assert settings.tls_files() == CertFiles("/t/tls.crt", "/t/tls.key", "/t/ca.crt")


TLS_FILES = {"GRPC_TLS_CERT_FILE": "/t/tls.crt", "GRPC_TLS_KEY_FILE": "/t/tls.key",
             "GRPC_TLS_CA_FILE": "/t/ca.crt"}


def test_grpc_is_mutual_tls_unless_turned_off_explicitly() -> None:
    from energy_pipeline.inference.server import InferenceSettings

    db = {"DATABASE_URL": "postgresql://x"}
    # Both sides: the three files are required, every missing one named at once.
    for cls, base in ((ForecastSettings, {"INFERENCE_TARGET": "h:1"}), (InferenceSettings, db)):
        with pytest.raises(SettingsError) as error:
            load(cls, base)
        assert str(error.value) == (
            "invalid settings: "
            "GRPC_TLS_CERT_FILE is required while GRPC_TLS is true (GRPC_TLS=false for "
            "plaintext); GRPC_TLS_KEY_FILE is required while GRPC_TLS is true (GRPC_TLS=false "
            "for plaintext); GRPC_TLS_CA_FILE is required while GRPC_TLS is true "
            "(GRPC_TLS=false for plaintext)"
        )
        assert load(cls, {**base, **TLS_FILES}).tls_files() is not None
        assert load(cls, {**base, "GRPC_TLS": "false"}).tls_files() is None
    # With forecasting off, ingest needs no certificate.
    assert load(ForecastSettings, {}).inference_target == ""
    with pytest.raises(SettingsError) as both:
        load(ForecastSettings, {"INFERENCE_TARGET": "h:1", "FORECAST_HORIZONS": "169",
                                "GRPC_TLS_CERT_FILE": "c", "GRPC_TLS_KEY_FILE": "k"})
    assert str(both.value) == (
        "invalid settings: GRPC_TLS_CA_FILE is required while GRPC_TLS is true "
        "(GRPC_TLS=false for plaintext); FORECAST_HORIZONS must be at most 168, got 169"
    )
    client = load(ForecastSettings, {"GRPC_TLS_SERVER_NAME": "ep-inference.ns.svc.cluster.local"})
    assert (client.grpc_tls_server_name, client.grpc_tls_reload_s) == (
        "ep-inference.ns.svc.cluster.local", 10.0)


# -- the gRPC client -------------------------------------------------------------------


def test_inference_targets() -> None:
    assert channel_target("127.0.0.1:50051,127.0.0.1:50052") == (
        "ipv4:127.0.0.1:50051,127.0.0.1:50052"
    )
    assert channel_target(" 10.0.0.1:1 , 10.0.0.2:2 ") == "ipv4:10.0.0.1:1,10.0.0.2:2"
    assert channel_target("[::1]:5,[::1]:6") == "ipv6:[::1]:5,[::1]:6"
    assert channel_target("localhost:7,127.0.0.1:8").startswith("ipv4:127.0.0.1:7")
    # Single targets and URIs are gRPC's to resolve (DNS re-resolution included).
    for target in ("dns:///ep-inference.ns.svc.cluster.local:50051", "host:1", "ipv4:1.2.3.4:5"):
        assert channel_target(target) == target
    for bad in ("", "a:1,b", "dns:///a:1,b:2"):
        with pytest.raises(ValueError):
            channel_target(bad)


def test_client_balances_round_robin_and_retries_unavailable() -> None:
    assert SERVICE_CONFIG["loadBalancingConfig"] == [{"round_robin": {}}]
    assert SERVICE_CONFIG["healthCheckConfig"] == {"serviceName": "energy.v1.Forecaster"}
    [method] = SERVICE_CONFIG["methodConfig"]
    assert method["name"] == [{"service": "energy.v1.Forecaster"}]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    json.dumps(SERVICE_CONFIG)  # it travels as JSON in a channel option


def test_request_and_response_round_trip() -> None:
    frame = synthetic_building(48, seed=1)
    rows = [
        HourlyRow(
            hour=frame.times[i],
            avg_temperature=float(frame.past["avg_temperature"][i]),
            avg_humidity=math.nan,  # a sensor without readings that hour
            avg_squarefootage=float(frame.past["avg_squarefootage"][i]),
            avg_renewableenergy=float(frame.past["avg_renewableenergy"][i]),
            avg_energyconsumption=float(frame.target[i]),
            n_readings=20,
        )
        for i in range(48)
    ]
    origin = datetime(2025, 1, 8, tzinfo=UTC)
    request = forecast_request("s", rows, [1, 2, 24], origin)
    assert hour_of(request.origin) == np.datetime64("2025-01-08T00", "h")
    back = proto_to_rows(request.window)
    assert [r.hour for r in back] == list(frame.times[:48])
    assert math.isnan(back[0].avg_humidity)
    assert back[5].avg_energyconsumption == rows[5].avg_energyconsumption

    from energy_pipeline.forecasting.models import DefaultModel

    # An unfitted model answers with its documented fallback, which must travel too.
    forecast = forecast_window(DefaultModel(), back, [1, 2, 24], np.datetime64("2025-01-08T00"))
    response = forecast_to_proto("s", "v1", forecast)
    assert response.method.startswith("fallback:")
    assert hour_of(response.issued_at) == np.datetime64("2025-01-08T00", "h")
    assert [hour_of(p.target_time) for p in response.points] == [
        np.datetime64("2025-01-08T00", "h"),
        np.datetime64("2025-01-08T01", "h"),
        np.datetime64("2025-01-08T23", "h"),
    ]
    assert all(p.p10 <= p.p50 <= p.p90 for p in response.points)


# -- training and the registry ---------------------------------------------------------


def test_promotion_rule() -> None:
    assert promotion_decision({"mase": 0.9}, None).promote
    assert promotion_decision({"mase": 0.7}, {"mase": 0.7}).promote  # equal is not worse
    assert promotion_decision({"mase": 0.6}, {"mase": 0.7}).promote
    assert not promotion_decision({"mase": 0.71}, {"mase": 0.7}).promote
    assert not promotion_decision({}, {"mase": 0.7}).promote
    assert promotion_decision({"mase": 0.9}, {"mase": None}).promote
    assert promotion_decision({"mase": 9.0}, {"mase": 0.7}, force=True).promote


def test_backtest_plan_fits_the_period() -> None:
    frame = synthetic_building(24 * 30)  # whole days
    plan = plan_backtest(frame, 14)
    assert plan is not None and plan.horizon == 168
    assert frame.times[plan.test_start].astype(np.int64) % 24 == 0
    assert len(frame) - plan.test_start <= 14 * 24
    assert plan.origins == 8  # daily origins whose whole week is inside the data
    short = plan_backtest(frame, 2)
    assert short is not None and short.horizon == 24
    assert plan_backtest(synthetic_building(24), 14) is None  # nothing left to train on


def test_registry_values_are_plain_json() -> None:
    doc = json_safe({"a": np.float64(1.5), "b": math.nan, "c": [np.int64(3)], "d": "x"})
    assert doc == {"a": 1.5, "b": None, "c": [3], "d": "x"}
    json.dumps(doc, allow_nan=False)
    version = new_version("site-0", "artifact", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert version.startswith("site-0.20250102T030405Z.")
