"""BRIDGE_CONNECTIONS above 1 (one shared subscription per sensor type, each with a queue of
its own on HiveMQ CE): bridge replicas added and removed mid-stream lose and duplicate
nothing, and changing the setting leaves no second subscription behind.

Against the real 3-broker Kafka, PostgreSQL and HiveMQ CE, with the `energy-pipeline`
processes the operator deploys.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from energy_harness.testing import wait_for
from energy_pipeline.core.contracts import SENSOR_NAMES, kafka_topic

from .conftest import Pipeline
from .test_data_plane import SMALL, expected_rows, finish, simulate, stored_count

pytestmark = pytest.mark.e2e

SHARDED = str(len(SENSOR_NAMES))


def test_bridge_replicas_scaled_1_3_2_mid_stream_store_every_reading_once(
    pipeline: Pipeline,
) -> None:
    def bridge(n: int) -> None:
        pipeline.start(f"bridge-{n}", ["bridge"], MQTT_CLIENT_ID=f"bridge-{n}",
                       BRIDGE_CONNECTIONS=SHARDED).wait_ready()

    bridge(0)
    for i in range(2):
        pipeline.start(f"ingest-{i}", ["ingest"])
    # Paced so that both changes land mid-stream: 11,520 readings over ~23 s.
    simulate(pipeline, SMALL, rate=500)
    total = len(expected_rows(SMALL))
    dsn = pipeline.env["DATABASE_URL"]
    wait_for(lambda: stored_count(dsn) >= total // 5, 120, "a fifth of the stream stored")
    bridge(1)
    bridge(2)
    stored_at_scale_up = stored_count(dsn)
    wait_for(lambda: stored_count(dsn) >= total // 2, 120, "half of the stream stored")
    first = next(w for w in pipeline.workers if w.name == "bridge-0")
    # Scaled 3 -> 2 as Kubernetes does it: SIGTERM, and it acknowledges what Kafka confirmed.
    assert first.stop() == 0
    stored_at_scale_down = stored_count(dsn)
    finish(pipeline, SMALL)
    # Both changes happened while readings were still arriving.
    assert stored_at_scale_up < total and stored_at_scale_down < total, (
        stored_at_scale_up, stored_at_scale_down, total)


def records_in(bootstrap: str, topics: list[str]) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4()}"})
    try:
        metadata = consumer.list_topics(timeout=10)
        total = 0
        for topic in topics:
            for partition in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                total += high - low
        return total
    finally:
        consumer.close()


def test_changing_bridge_connections_leaves_no_second_subscription(pipeline: Pipeline) -> None:
    # One client id throughout, as a pod keeps its name: its persistent session still holds
    # the subscriptions of the previous setting, which would deliver every reading twice
    # (two shared subscriptions, two queues) unless the bridge unsubscribes them.
    bootstrap = pipeline.env["KAFKA_BOOTSTRAP_SERVERS"]
    topics = [kafka_topic(pipeline.env["KAFKA_TOPIC_PREFIX"], s) for s in SENSOR_NAMES]
    sent = 0
    for step, connections in enumerate(("1", SHARDED, "1")):
        bridge = pipeline.start(f"bridge-step{step}", ["bridge"], MQTT_CLIENT_ID="bridge-x",
                                BRIDGE_CONNECTIONS=connections)
        bridge.wait_ready()
        # Ready means every connection's subscriptions are confirmed, each a dependency.
        names = ["mqtt"] if connections == "1" else [f"mqtt-{i}" for i in range(5)]
        assert [bridge.metric("energy_dependency_up", {"worker": "bridge", "dependency": n})
                for n in names] == [1.0] * len(names)
        args = ["--sites", "2", "--devices", "2", "--interval", "5m", "--duration", "2h",
                "--start", f"2025-0{step + 1}-01T00:00:00Z", "--seed", str(step)]
        sim = pipeline.start(f"simulate-{step}", ["simulate", *args, "--client-id",
                                                  f"simulator-{step}"], wait_ready=False)
        assert sim.wait(timeout=120) == 0
        sent += len(expected_rows(args))
        wait_for(lambda want=sent: records_in(bootstrap, topics) >= want, 120,
                 f"{sent} records in Kafka")
        time.sleep(3)  # a second copy of any reading would arrive meanwhile
        assert (connections, records_in(bootstrap, topics)) == (connections, sent)
        assert bridge.stop() == 0
