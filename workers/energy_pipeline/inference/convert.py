"""hourly_features rows and forecasts to and from the protobuf messages of forecaster.proto.

Times travel as google.protobuf.Timestamp in UTC; hours as `datetime64[h]` inside the
forecasting code. Missing sensor averages travel as NaN (proto3 doubles have no null).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from energy_pipeline.core.contracts import WEATHER_VARIABLES
from energy_pipeline.forecasting.issued import IssuedSeries
from energy_pipeline.forecasting.rows import HourlyRow, WindowForecast
from energy_pipeline.proto import forecaster_pb2 as pb

_EPOCH_HOURS = np.datetime64(0, "h")


def hour_seconds(value: datetime | np.datetime64) -> int:
    """Seconds since the epoch of the start of the hour `value` falls in."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp()) // 3600 * 3600
    return int(np.datetime64(value, "h").astype(np.int64)) * 3600


def timestamp(value: datetime | np.datetime64) -> Timestamp:
    """The hour `value` falls in, as a Timestamp."""
    return Timestamp(seconds=hour_seconds(value))


def hour_of(ts: Timestamp) -> np.datetime64:
    return _EPOCH_HOURS + np.timedelta64(ts.seconds // 3600, "h")


def datetime_of(ts: Timestamp) -> datetime:
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def rows_to_proto(rows: Iterable[HourlyRow]) -> list[pb.HourlyFeatures]:
    return [
        pb.HourlyFeatures(
            hour=timestamp(r.hour),
            avg_temperature=_number(r.avg_temperature),
            avg_humidity=_number(r.avg_humidity),
            avg_squarefootage=_number(r.avg_squarefootage),
            avg_renewableenergy=_number(r.avg_renewableenergy),
            avg_energyconsumption=_number(r.avg_energyconsumption),
            n_readings=int(r.n_readings),
        )
        for r in rows
    ]


def proto_to_rows(window: Sequence[pb.HourlyFeatures]) -> list[HourlyRow]:
    return [
        HourlyRow(
            hour=hour_of(r.hour),
            avg_temperature=r.avg_temperature,
            avg_humidity=r.avg_humidity,
            avg_squarefootage=r.avg_squarefootage,
            avg_renewableenergy=r.avg_renewableenergy,
            avg_energyconsumption=r.avg_energyconsumption,
            n_readings=r.n_readings,
        )
        for r in window
    ]


# (issued_at, valid_time, temperature, humidity): a weather forecast hour as the database
# and the request hold it, values None/NaN where a variable was not forecast.
WeatherRow = tuple[datetime, datetime, float | None, float | None]


def weather_to_proto(rows: Iterable[WeatherRow]) -> list[pb.WeatherForecastPoint]:
    return [
        pb.WeatherForecastPoint(
            issued_at=Timestamp(seconds=int(_utc(issued).timestamp())),
            valid_time=timestamp(valid),
            temperature=_number(temperature),
            humidity=_number(humidity),
        )
        for issued, valid, temperature, humidity in rows
    ]


def proto_to_issued(points: Sequence[pb.WeatherForecastPoint]) -> dict[str, IssuedSeries]:
    """The request's weather forecast as one IssuedSeries per variable that has a value
    (an hour named twice by one issue is a bad request: IssuedSeries raises ValueError)."""
    if not points:
        return {}
    issued = np.array([p.issued_at.seconds for p in points], dtype="datetime64[s]")
    valid = np.array([p.valid_time.seconds // 3600 for p in points], dtype="datetime64[h]")
    series = {}
    for name in WEATHER_VARIABLES:
        values = np.array([getattr(p, name) for p in points], dtype=np.float64)
        if not np.isnan(values).all():
            series[name] = IssuedSeries(issued, valid, values)
    return series


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def forecast_to_proto(
    site_id: str, model_version: str, forecast: WindowForecast
) -> pb.ForecastResponse:
    return pb.ForecastResponse(
        site_id=site_id,
        model_version=model_version,
        issued_at=timestamp(forecast.origin),
        method=forecast.method,
        missing_inputs=list(forecast.missing_inputs),
        points=[
            pb.Quantiles(
                target_time=timestamp(p.target_time),
                horizon=p.horizon,
                p10=p.p10,
                p50=p.p50,
                p90=p.p90,
            )
            for p in forecast.points
        ],
    )
