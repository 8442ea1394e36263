"""Bad input never crashes a worker or disappears: it reaches the dead-letter topic with its
reason in the headers, and the rejected-by-reason metric counts it."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import paho.mqtt.client as mqtt
import psycopg2
import pytest
from confluent_kafka import Consumer, Producer
from energy_harness.localstack import KafkaCluster
from energy_harness.localstack.hivemq import HiveMQBroker
from energy_harness.localstack.workers import WorkerProcess
from energy_pipeline.core.contracts import deadletter_topic, kafka_topic

from .conftest import Pipeline

pytestmark = pytest.mark.e2e

OK_TS = "2025-01-01T00:00:00Z"

# (MQTT topic, payload, expected reason)
BAD_MQTT: list[tuple[str, bytes, str]] = [
    ("energy/site-x/temperature/0", b"{not json", "malformed_json"),
    ("energy/site-x/temperature/0", b"\xff\xfe\x00", "malformed_json"),
    (
        "energy/site-x/temperature/0",
        json.dumps({"ts": OK_TS, "value": "hot"}).encode(),
        "wrong_type",
    ),
    (
        "energy/site-x/temperature/0",
        json.dumps({"ts": OK_TS, "value": True}).encode(),
        "wrong_type",
    ),
    ("energy/site-x/temperature/0", json.dumps([1, 2]).encode(), "wrong_type"),
    ("energy/site-x/temperature/0", b'{"ts":"2025-01-01T00:00:00Z","value":NaN}', "non_finite"),
    (
        "energy/site-x/temperature/0",
        b'{"ts":"2025-01-01T00:00:00Z","value":-Infinity}',
        "non_finite",
    ),
    ("energy/site-x/temperature/0", b'{"ts":"2025-01-01T00:00:00Z","value":1e999}', "non_finite"),
    ("energy/site-x/humidity/0", json.dumps({"ts": OK_TS, "value": 150}).encode(), "out_of_range"),
    (
        "energy/site-x/energyconsumption/0",
        json.dumps({"ts": OK_TS, "value": -5}).encode(),
        "out_of_range",
    ),
    (
        "energy/site-x/pressure/0",
        json.dumps({"ts": OK_TS, "value": 1013}).encode(),
        "unknown_sensor",
    ),
    (
        "energy/site-x/temperature/0",
        json.dumps({"ts": "yesterday", "value": 20}).encode(),
        "bad_timestamp",
    ),
    (
        "energy/site-x/temperature/0",
        json.dumps({"ts": "2025-01-01T00:00:00", "value": 20}).encode(),
        "bad_timestamp",
    ),
    (
        "energy/site-x/temperature/0",
        json.dumps({"ts": "1970-01-01T00:00:00Z", "value": 20}).encode(),
        "bad_timestamp",
    ),
    (
        "energy/site-x/temperature/0",
        json.dumps({"ts": "2099-01-01T00:00:00Z", "value": 20}).encode(),
        "future_timestamp",
    ),
    (
        "energy/site-x/temperature/0",
        json.dumps({"ts": OK_TS, "value": 20, "pad": "x" * 10_000}).encode(),
        "oversized",
    ),
    ("energy/site-x/temperature", json.dumps({"ts": OK_TS, "value": 20}).encode(), "bad_topic"),
    (
        "energy/site-x/temperature/0/extra",
        json.dumps({"ts": OK_TS, "value": 20}).encode(),
        "bad_topic",
    ),
    ("energy/site x!/temperature/0", json.dumps({"ts": OK_TS, "value": 20}).encode(), "bad_topic"),
    ("energy/site-x/temperature/0", json.dumps({"ts": OK_TS}).encode(), "missing_field"),
    (
        "energy/site-x/combined/1",
        json.dumps({"Timestamp": "01/01/2025 13:00", "DeviceId": 1, "Temperature": 20.0}).encode(),
        "missing_field",
    ),
]
GOOD_MQTT = [
    ("energy/site-x/temperature/0", json.dumps({"ts": OK_TS, "value": 20.5}).encode()),
    (
        "energy/site-x/combined/1",
        json.dumps(
            {
                "Timestamp": "01/01/2025 13:00",
                "DeviceId": 1,
                "Temperature": 20.05,
                "Humidity": 44.05,
                "SquareFootage": 1506.05,
                "RenewableEnergy": 6.05,
                "EnergyConsumption": 60.05,
            }
        ).encode(),
    ),
]

# Records someone other than the bridge wrote into a sensor topic: (value, expected reason).
BAD_KAFKA: list[tuple[bytes | None, str]] = [
    (b"garbage", "malformed_json"),
    (None, "missing_field"),
    (
        json.dumps(
            {
                "schema": 99,
                "site": "s",
                "sensor": "temperature",
                "device": "0",
                "ts": OK_TS,
                "value": 1,
            }
        ).encode(),
        "unsupported_schema",
    ),
    (
        json.dumps(
            {
                "schema": 1,
                "site": "s",
                "sensor": "temperature",
                "device": "0",
                "ts": OK_TS,
                "value": "1",
            }
        ).encode(),
        "wrong_type",
    ),
    (
        json.dumps(
            {"schema": 1, "site": "s", "sensor": "pressure", "device": "0", "ts": OK_TS, "value": 1}
        ).encode(),
        "unknown_sensor",
    ),
    (
        json.dumps(
            {"schema": 1, "sensor": "temperature", "device": "0", "ts": OK_TS, "value": 1}
        ).encode(),
        "missing_field",
    ),
    (
        json.dumps(
            {
                "schema": 1,
                "site": "s",
                "sensor": "temperature",
                "device": "0",
                "ts": "2099-01-01T00:00:00Z",
                "value": 1,
            }
        ).encode(),
        "future_timestamp",
    ),
]


def publish_all(broker: HiveMQBroker, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"bad-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(10)
            assert info.is_published(), topic
    finally:
        client.disconnect()
        client.loop_stop()


def dead_letters(bootstrap: str, topic: str, count: int, timeout: float = 60) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dl-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            got += [m for m in consumer.consume(100, 1.0) if m.error() is None]
    finally:
        consumer.close()
    return got


def headers(msg) -> dict[str, str]:
    return {k: v.decode() for k, v in (msg.headers() or [])}


def wait_for_metric(
    worker: WorkerProcess, name: str, labels: dict[str, str], value: float
) -> float:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = worker.metric(name, labels)
        if got >= value:
            return got
        time.sleep(0.5)
    return worker.metric(name, labels)


def test_bad_mqtt_input_is_dead_lettered_with_its_reason(
    pipeline: Pipeline,
    own_mqtt_broker: HiveMQBroker,
    kafka_cluster: KafkaCluster,
) -> None:
    bridge = pipeline.start("bridge", ["bridge"], MQTT_CLIENT_ID="bridge-bad")
    bridge.wait_ready()
    ingest = pipeline.start("ingest", ["ingest"])
    publish_all(own_mqtt_broker, [(t, p) for t, p, _ in BAD_MQTT] + GOOD_MQTT)

    prefix = pipeline.env["KAFKA_TOPIC_PREFIX"]
    letters = dead_letters(kafka_cluster.bootstrap_servers, deadletter_topic(prefix), len(BAD_MQTT))
    got = Counter((headers(m)["source_topic"], headers(m)["reason"]) for m in letters)
    assert got == Counter((t, r) for t, _, r in BAD_MQTT)
    for msg in letters:
        h = headers(msg)
        assert h["source"] == "mqtt" and h["detail"]
        assert len(msg.value()) <= 4096  # the oversized payload is kept, truncated
    oversized = next(m for m in letters if headers(m)["reason"] == "oversized")
    assert headers(oversized)["truncated_from_bytes"] == str(len(BAD_MQTT[15][1]))

    for reason, n in Counter(r for _, _, r in BAD_MQTT).items():
        assert (
            wait_for_metric(
                bridge, "energy_rejected_total", {"stage": "bridge", "reason": reason}, n
            )
            == n
        ), reason
    # The good messages behind the bad ones still arrive: one reading and one combined record.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with psycopg2.connect(pipeline.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM readings WHERE site_id = 'site-x'")
            if cur.fetchone()[0] == 6:
                break
        time.sleep(0.5)
    else:
        raise AssertionError("valid readings after the bad ones were not stored")
    bridge.require_alive()
    ingest.require_alive()


def test_bad_kafka_records_are_dead_lettered_by_ingest(
    pipeline: Pipeline,
    kafka_cluster: KafkaCluster,
) -> None:
    ingest = pipeline.start("ingest", ["ingest"])
    prefix = pipeline.env["KAFKA_TOPIC_PREFIX"]
    producer = Producer({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    for value, _ in BAD_KAFKA:
        producer.produce(kafka_topic(prefix, "temperature"), key=b"s/0", value=value)
    good = {
        "schema": 1,
        "site": "s",
        "sensor": "temperature",
        "device": "0",
        "ts": OK_TS,
        "value": 1.5,
    }
    producer.produce(
        kafka_topic(prefix, "temperature"), key=b"s/0", value=json.dumps(good).encode()
    )
    assert producer.flush(30) == 0

    letters = dead_letters(
        kafka_cluster.bootstrap_servers, deadletter_topic(prefix), len(BAD_KAFKA)
    )
    assert Counter(headers(m)["reason"] for m in letters) == Counter(r for _, r in BAD_KAFKA)
    for msg in letters:
        h = headers(msg)
        assert h["source"] == "kafka"
        assert h["source_topic"] == kafka_topic(prefix, "temperature")
        assert int(h["source_offset"]) >= 0
    for reason, n in Counter(r for _, r in BAD_KAFKA).items():
        assert (
            wait_for_metric(
                ingest, "energy_rejected_total", {"stage": "ingest", "reason": reason}, n
            )
            == n
        ), reason
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg2.connect(pipeline.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
            cur.execute("SELECT value FROM readings WHERE site_id = 's'")
            rows = cur.fetchall()
        if rows:
            assert rows == [(1.5,)]
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the valid record after the bad ones was not stored")
    ingest.require_alive()
