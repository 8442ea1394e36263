"""The bridge stays alive (/healthz) while it waits for Kafka at start: waiting for a
dependency is progress, which readiness reports, not a hang for the kubelet to restart.
Real librdkafka against a port where nothing listens (no Kafka at all)."""

from __future__ import annotations

import threading
import time

import pytest
from energy_harness.localstack.process import free_port
from energy_pipeline.core.settings import load
from energy_pipeline.dataplane.bridge import Bridge, BridgeSettings

pytestmark = pytest.mark.integration


def test_waiting_for_kafka_at_start_keeps_the_heartbeat_fresh() -> None:
    bridge = Bridge(load(BridgeSettings, {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}))
    time.sleep(3)  # the heartbeat was made with the bridge: 3 s old now
    thread = threading.Thread(target=bridge._run, daemon=True)
    thread.start()
    try:
        time.sleep(1)
        # The first attempt (a metadata request that waits 10 s) is under way: the loop beat
        # when it began it, while nothing else has beaten since the bridge was made.
        assert bridge.heartbeat.age() < 2.5, bridge.heartbeat.age()
        ok, detail = bridge.ready()
        assert not ok and "kafka" in detail, detail
    finally:
        bridge.stopping.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
