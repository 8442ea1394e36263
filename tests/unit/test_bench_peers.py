"""The Telegraf peer's configuration (energy_harness.bench.peers): the comparison with the
bridge is fair only if Telegraf also acknowledges after Kafka and uses the same shards."""

from __future__ import annotations

import tomllib

import pytest
from energy_harness.bench.peers import telegraf_config

pytestmark = pytest.mark.unit

SHARDS = [("$share/g/energy/+/temperature/#", "$share/g/energy"), ("$share/g/energy/+/humidity/#",)]


def test_each_shard_is_one_at_least_once_input_with_its_own_session() -> None:
    config = tomllib.loads(
        telegraf_config("tcp://127.0.0.1:1883", SHARDS, "peer", "a:1,b:2", "pre", 10, 100)
    )
    inputs = config["inputs"]["mqtt_consumer"]
    assert [tuple(i["topics"]) for i in inputs] == SHARDS
    assert [i["client_id"] for i in inputs] == ["peer-0", "peer-1"]
    for i in inputs:
        # Without a persistent session Telegraf acknowledges on receipt, before Kafka.
        assert i["persistent_session"] is True
        assert i["qos"] == 1
        assert i["topic_parsing"][0]["tags"] == "_/site_id/sensor/device_id"
    assert config["agent"]["metric_batch_size"] == 100
    assert config["agent"]["flush_interval"] == "10ms"


def test_records_go_to_the_bridges_topics_keyed_by_device_with_acks_all() -> None:
    (kafka,) = tomllib.loads(
        telegraf_config("tcp://h:1", SHARDS, "peer", "a:1,b:2", "pre", 10, 100)
    )["outputs"]["kafka"]
    assert kafka["brokers"] == ["a:1", "b:2"]
    assert kafka["topic"] == "pre"
    assert kafka["topic_suffix"] == {"method": "tags", "keys": ["sensor"], "separator": "."}
    assert kafka["routing_tag"] == "device_id"
    assert kafka["required_acks"] == -1
    assert kafka["idempotent_writes"] is True
