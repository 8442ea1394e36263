"""The simulator's forecast weather end to end (issue #20), through real processes: `simulate`
-> Mosquitto -> `bridge` -> Kafka `<prefix>.weather_forecast` -> `ingest` -> PostgreSQL
`weather_forecasts`. Every published (site, source, issue, hour) is stored with its values and
nothing else is; malformed forecasts, on MQTT and on Kafka, are dead-lettered with their reason
and counted while both workers keep running."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest
from confluent_kafka import Producer
from energy_harness.localstack import KafkaCluster, MosquittoBroker
from energy_harness.localstack.workers import WorkerProcess, service_env
from energy_harness.testing import wait_for
from energy_pipeline.cli import build_parser
from energy_pipeline.core.contracts import deadletter_topic, weather_topic
from energy_pipeline.dataplane.mqtt_client import new_client
from energy_pipeline.simulation.commands import config_from_args
from energy_pipeline.simulation.signals import forecast_issues

from .test_ingest_pipeline import dead_letters

pytestmark = pytest.mark.integration

# A day of hourly readings from 02:00: issues at 06, 12, 18 and 00 for each of 2 sites.
SIMULATE = ["--start", "2025-03-01T02:00:00Z", "--duration", "1d", "--interval", "1h",
            "--sites", "2", "--devices", "1", "--seed", "7"]
READINGS = 24 * 2 * 5
ISSUED = "2025-03-01T06:00:00Z"
BAD_MQTT = {
    b"{": "malformed_json",
    json.dumps({"issued_at": ISSUED, "forecasts": [
        {"valid_time": "2025-03-01T07:00:00Z", "pressure": 1013}]}).encode(): "unknown_sensor",
    json.dumps({"issued_at": ISSUED, "forecasts": [
        {"valid_time": "2025-03-30T07:00:00Z", "temperature": 4.0}]}).encode(): "bad_timestamp",
}
BAD_KAFKA = json.dumps({"schema": 1, "site": "site-0", "source": "met", "issued_at": ISSUED,
                        "forecasts": []}).encode()

Row = tuple[str, str, datetime, datetime, float | None, float | None]


def expected_rows() -> set[Row]:
    config = config_from_args(build_parser().parse_args(["simulate", *SIMULATE]),
                              datetime.now(UTC))
    rows = set()
    for f in forecast_issues(config):
        for p in f.points:
            values = dict(p.values)
            rows.add((f.site, f.source, f.issued_at, p.valid_time,
                      values.get("temperature"), values.get("humidity")))
    return rows


def stored(dsn: str, sql: str) -> list[tuple]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def count(dsn: str, table: str) -> int:
    return int(stored(dsn, f"SELECT count(*) FROM {table}")[0][0])


def publish_raw(broker: MosquittoBroker, topic: str, payloads: list[bytes]) -> None:
    client = new_client(f"bad-{uuid.uuid4().hex[:6]}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for payload in payloads:
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def produce_raw(bootstrap: str, topic: str, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=b"site-0/met", value=value)
    assert producer.flush(30) == 0


def test_simulated_forecasts_are_stored_exactly_and_bad_ones_dead_lettered(
    kafka_cluster: KafkaCluster, mqtt_broker: MosquittoBroker, database: str,
    topic_prefix: str, tmp_path: Path,
) -> None:
    prefix = topic_prefix  # a fresh topic set, the weather topic with it (tests/conftest.py)
    root = f"w{uuid.uuid4().hex[:8]}"  # this test's topics on the session's broker
    bootstrap = kafka_cluster.bootstrap_servers
    env = service_env(
        bootstrap, database, mqtt_broker.host, mqtt_broker.port,
        KAFKA_TOPIC_PREFIX=prefix, MQTT_TOPIC_ROOT=root, MQTT_CLIENT_ID=f"bridge-{prefix}",
        KAFKA_CONSUMER_GROUP=f"ingest-{prefix}", KAFKA_SESSION_TIMEOUT_MS="6000",
        PIPELINE_NAME="weather",
    )
    logs = tmp_path / "logs"
    bridge = WorkerProcess("bridge", ["bridge"], env, logs).start()
    ingest = WorkerProcess("ingest", ["ingest"], env, logs).start()
    try:
        bridge.wait_ready(60)
        ingest.wait_ready(60)

        # Malformed forecasts first: the workers must go on to store the good ones.
        publish_raw(mqtt_broker, f"{root}/site-0/weather_forecast/simulator", list(BAD_MQTT))
        produce_raw(bootstrap, weather_topic(prefix), BAD_KAFKA)

        simulator = WorkerProcess("simulate", ["simulate", *SIMULATE, "--client-id",
                                               f"sim-{prefix}"], env, logs)
        simulator.start(wait_ready=False)
        assert simulator.wait(timeout=120) == 0, simulator.process.log_tail()  # type: ignore[union-attr]
        log = simulator.process.log_path.read_text()  # type: ignore[union-attr]
        summary = next(json.loads(line) for line in log.splitlines()
                       if line.startswith("{") and '"forecasts"' in line and '"msg"' not in line)
        assert (summary["published"], summary["confirmed"], summary["future"]) == (
            READINGS, READINGS, 0), summary
        assert (summary["forecasts"], summary["forecasts_future"]) == (8, 0), summary

        expected = expected_rows()
        assert len(expected) == 8 * 48
        wait_for(lambda: count(database, "weather_forecasts") >= len(expected)
                 and count(database, "readings") >= READINGS, 120,
                 "every forecast hour and reading stored", 0.5)
        rows = stored(database, """SELECT site_id, source, issued_at, valid_time, temperature,
                                          humidity FROM weather_forecasts""")
        assert len(rows) == len(expected)
        assert set(rows) == expected
        assert count(database, "readings") == READINGS

        # Each bad one dead-lettered with its reason, and counted where it was rejected.
        letters = dead_letters(bootstrap, deadletter_topic(prefix), len(BAD_MQTT) + 1)
        assert Counter((h["reason"], h.get("source")) for h in letters) == Counter(
            [(reason, "mqtt") for reason in BAD_MQTT.values()] + [("wrong_type", "kafka")])
        for reason in BAD_MQTT.values():
            assert bridge.metric("energy_rejected_total",
                                 {"stage": "bridge", "reason": reason}) == 1, reason
        assert ingest.metric("energy_rejected_total",
                             {"stage": "ingest", "reason": "wrong_type"}) == 1
        assert ingest.metric("energy_weather_forecast_hours_written_total") == len(expected)
        assert bridge.alive() and ingest.alive()
    finally:
        assert bridge.stop(timeout=60) == 0
        assert ingest.stop(timeout=60) == 0
