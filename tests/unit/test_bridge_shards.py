"""BRIDGE_CONNECTIONS: how the bridge splits its topic filter over MQTT connections, each
subscription with a queue of its own on the broker."""

from __future__ import annotations

import pytest
from energy_pipeline.core.contracts import SENSOR_NAMES, mqtt_topic
from energy_pipeline.core.settings import SettingsError, load
from energy_pipeline.dataplane.bridge import (
    BridgeSettings,
    every_layout_filter,
    shard_filters,
    shard_root,
)
from paho.mqtt.client import topic_matches_sub

pytestmark = pytest.mark.unit

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}


def test_one_connection_subscribes_to_the_filter_as_it_is() -> None:
    assert shard_filters("energy/site-a/#", 1) == [("energy/site-a/#",)]


@pytest.mark.parametrize("connections", range(2, len(SENSOR_NAMES) + 1))
def test_every_reading_topic_matches_exactly_one_connection(connections: int) -> None:
    shards = shard_filters("energy/#", connections)
    assert len(shards) == connections and all(shards)
    for sensor in SENSOR_NAMES:
        topic = mqtt_topic("site-1", sensor, "dev-7")
        owners = [i for i, filters in enumerate(shards)
                  if any(topic_matches_sub(f, topic) for f in filters)]
        assert len(owners) == 1, (sensor, owners)


def test_sensor_types_are_dealt_evenly() -> None:
    sizes = [sum("/+/" in f and f.endswith("/#") and "weather" not in f for f in shard)
             for shard in shard_filters("energy/#", 2)]
    assert sizes == [3, 2]


@pytest.mark.parametrize("connections", range(1, len(SENSOR_NAMES) + 1))
def test_forecast_weather_reaches_exactly_the_first_connection(connections: int) -> None:
    shards = shard_filters("campus/energy/#", connections)
    topic = "campus/energy/site-1/weather_forecast/met"
    owners = [i for i, shard in enumerate(shards) if any(topic_matches_sub(f, topic)
                                                          for f in shard)]
    assert owners == [0]


@pytest.mark.parametrize("topic", ["energy", "energy/site-1", "energy/site-1/bogus"])
def test_topics_too_short_for_a_sensor_still_reach_the_first_connection(topic: str) -> None:
    # Dead-lettered there, as with one connection.
    shards = shard_filters("energy/#", 3)
    assert any(topic_matches_sub(f, topic) for f in shards[0])
    assert not any(topic_matches_sub(f, topic) for shard in shards[1:] for f in shard)


def test_a_topic_naming_no_known_sensor_matches_no_connection() -> None:
    # The documented trade-off: the broker answers PUBACK 0x10 instead of a dead letter.
    shards = shard_filters("energy/#", 5)
    topic = mqtt_topic("site-1", "pressure", "dev-1")
    assert not any(topic_matches_sub(f, topic) for shard in shards for f in shard)


def test_every_layout_filter_holds_each_layouts_filters() -> None:
    every = every_layout_filter("energy/#")
    for connections in range(1, len(SENSOR_NAMES) + 1):
        for shard in shard_filters("energy/#", connections):
            assert set(shard) <= every
    # A filter that cannot be split has one layout only.
    assert every_layout_filter("energy/+/temperature/#") == {"energy/+/temperature/#"}


@pytest.mark.parametrize(
    ("topic_filter", "root"),
    [("energy/#", "energy"), ("campus/energy/#", "campus/energy"), ("energy/+/#", None),
     ("#", None), ("energy/site", None), ("energy/#/#", None)],
)
def test_shard_root(topic_filter: str, root: str | None) -> None:
    assert shard_root(topic_filter) == root


def test_subscriptions_keep_the_shared_group() -> None:
    settings = load(BridgeSettings, {**BASE, "BRIDGE_CONNECTIONS": "2"})
    assert settings.subscription("energy/+/humidity/#") == "$share/bridge/energy/+/humidity/#"
    plain = load(BridgeSettings, {**BASE, "MQTT_SHARED_GROUP": ""})
    assert plain.subscription("energy/#") == "energy/#"


def test_settings_report_every_problem_at_once() -> None:
    with pytest.raises(SettingsError) as err:
        load(BridgeSettings, {**BASE, "BRIDGE_CONNECTIONS": "6",
                              "MQTT_TOPIC_FILTER": "energy/+/temperature/#"})
    message = str(err.value)
    assert "BRIDGE_CONNECTIONS must be at most 5" in message
    assert "must be <root>/# with no wildcard in <root>, got 'energy/+/temperature/#'" in message


def test_one_connection_takes_any_filter() -> None:
    settings = load(BridgeSettings, {**BASE, "MQTT_TOPIC_FILTER": "energy/+/temperature/#"})
    assert settings.link_filters() == [("energy/+/temperature/#",)]
