"""Prometheus metrics shared by the workers (one process runs one worker)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECEIVED = Counter(
    "energy_messages_received_total", "Messages received from the source of a stage", ["stage"]
)
PRODUCED = Counter("energy_readings_produced_total", "Readings confirmed by Kafka", ["topic"])
ACKED = Counter("energy_mqtt_acked_total", "MQTT messages acknowledged after Kafka delivery")
WRITTEN = Counter("energy_readings_written_total", "New readings stored in PostgreSQL")
WEATHER_WRITTEN = Counter(
    "energy_weather_forecast_hours_written_total",
    "New hours of forecast weather (one per issue and valid time) stored in PostgreSQL",
)
DUPLICATES = Counter(
    "energy_readings_duplicate_total", "Redelivered readings that were already stored"
)
REJECTED = Counter(
    "energy_rejected_total", "Inputs rejected to the dead-letter topic", ["stage", "reason"]
)
BATCH_SECONDS = Histogram(
    "energy_batch_seconds",
    "Time to process one batch",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "energy_consumer_lag", "Messages not yet consumed per partition", ["topic", "partition"]
)
INFLIGHT = Gauge("energy_bridge_inflight", "MQTT messages received but not yet acknowledged")
ERRORS = Counter("energy_errors_total", "Transient errors that were retried", ["stage", "kind"])
# Read at scrape time from each worker's readiness tracker (core/readiness.py).
DEPENDENCY_UP = Gauge(
    "energy_dependency_up",
    "1 while a dependency of the worker answers (its /readyz detail says why not)",
    ["worker", "dependency"],
)
READY = Gauge("energy_ready", "1 while the worker's /readyz answers 200", ["worker"])
# Ingest: how long the oldest batch has been failing to reach the database (0 while writes
# succeed). Retries go on forever (a stall, never a loss); this says a person is needed.
WRITE_STALLED_SECONDS = Gauge(
    "energy_ingest_write_stalled_seconds",
    "Seconds since the batch ingest is retrying first failed to be written (0: none failing)",
)
# Records Kafka deleted (retention) before ingest stored them: offsets skipped between what
# the group had committed or consumed and what the broker still had.
LOST_RECORDS = Counter(
    "energy_ingest_lost_records_total",
    "Kafka records deleted by retention before ingest stored them",
    ["topic", "partition"],
)
# Bridge: connections on which the broker had no session for the client id (a first start, or
# a session that expired: readings published while every bridge's session was gone were not
# kept for it; MQTT_SESSION_EXPIRY_S).
NEW_SESSIONS = Counter(
    "energy_bridge_new_sessions_total",
    "MQTT connections on which the broker had no session for the bridge's client id",
)
