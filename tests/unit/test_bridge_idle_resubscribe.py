"""IdleResubscribe: when the bridge sends its shared subscription again (HiveMQ CE can stop
polling a shared queue for a connection; a SUBSCRIBE makes it poll again)."""

from __future__ import annotations

import pytest
from energy_pipeline.dataplane.bridge import Bridge, IdleResubscribe

pytestmark = pytest.mark.unit


def test_due_after_the_given_silence_and_again_after_as_much_more() -> None:
    idle = IdleResubscribe(5.0)
    assert not idle.due(100.0, busy=False)  # the first call only starts the clock
    assert not idle.due(104.9, busy=False)
    assert idle.due(105.0, busy=False)
    assert not idle.due(109.0, busy=False)
    assert idle.due(110.0, busy=False)


def test_messages_or_pending_acks_restart_the_silence() -> None:
    idle = IdleResubscribe(5.0)
    idle.due(100.0, busy=False)
    assert not idle.due(104.0, busy=True)
    assert not idle.due(108.0, busy=False)
    assert idle.due(109.0, busy=False)


def test_a_new_subscription_restarts_the_silence() -> None:
    idle = IdleResubscribe(5.0)
    idle.due(100.0, busy=False)
    idle.reset(104.0)
    assert not idle.due(108.0, busy=False)
    assert idle.due(109.0, busy=False)


def test_the_bridge_resubscribes_after_seconds_not_minutes() -> None:
    # A stalled shared subscription costs at most this (the e2e tests wait 180 s).
    assert 0 < Bridge.IDLE_RESUBSCRIBE_S <= 10
