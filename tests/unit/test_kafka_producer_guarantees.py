"""Every producer of the pipeline confirms a record only as Kafka's own guarantees allow:
acks=all, idempotence, and one request in flight per broker (core.kafka.PRODUCER_GUARANTEES
says why: with more, librdkafka can report a refused request's records delivered)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from energy_pipeline.core.kafka import PRODUCER_GUARANTEES
from energy_pipeline.core.settings import load
from energy_pipeline.dataplane.bridge import BridgeSettings, producer_config
from energy_pipeline.dataplane.ingest import IngestSettings, dead_letter_producer_config

pytestmark = pytest.mark.unit

ENV = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "KAFKA_TOPIC_PREFIX": "energy",
       "DATABASE_URL": "postgresql://u@127.0.0.1:1/db"}


def test_one_request_in_flight_with_acks_all_and_idempotence() -> None:
    assert PRODUCER_GUARANTEES == {"enable.idempotence": True, "acks": "all",
                                   "max.in.flight.requests.per.connection": 1}


@pytest.mark.parametrize("config", [
    lambda: producer_config(load(BridgeSettings, ENV)),
    lambda: dead_letter_producer_config(load(IngestSettings, ENV)),
], ids=["bridge", "ingest dead letters"])
def test_each_producer_keeps_the_guarantees_and_librdkafka_takes_them(
    config: Callable[[], dict[str, object]],
) -> None:
    built = config()
    # Nothing set after them overrides one (a later key of the dict literal would).
    assert {key: built[key] for key in PRODUCER_GUARANTEES} == PRODUCER_GUARANTEES
    # librdkafka refuses an idempotent producer with more than 5 in flight, or acks other
    # than all: constructing it checks the combination (no broker is contacted for that).
    Producer({key: value for key, value in built.items()
              if key not in ("logger", "error_cb")}).flush(0)
