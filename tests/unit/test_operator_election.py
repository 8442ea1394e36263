"""Leader election decisions (client-go's rules), without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from energy_operator.election import Observation, decide, lease_spec, micro_time

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def held_by(holder: str, renew: str = "t1", duration: int = 15) -> dict:
    return {"holderIdentity": holder, "renewTime": renew, "leaseDurationSeconds": duration}


def test_no_lease_is_created() -> None:
    assert decide(None, "me", Observation(), 0.0) == "create"


def test_own_lease_is_renewed_and_a_free_one_taken() -> None:
    assert decide(held_by("me"), "me", Observation(), 0.0) == "renew"
    assert decide(held_by(""), "me", Observation(), 0.0) == "acquire"


def test_a_live_holder_is_waited_for_a_full_duration_on_our_own_clock() -> None:
    seen = Observation()
    spec = held_by("other")
    seen.see(spec, 100.0)
    assert decide(spec, "me", seen, 110.0) == "wait"
    assert decide(spec, "me", seen, 115.0) == "acquire"


def test_each_renewal_restarts_the_wait() -> None:
    seen = Observation()
    seen.see(held_by("other", "t1"), 100.0)
    seen.see(held_by("other", "t2"), 112.0)  # the holder renewed
    assert decide(held_by("other", "t2"), "me", seen, 120.0) == "wait"
    seen.see(held_by("other", "t2"), 126.0)  # unchanged record: the clock keeps running
    assert decide(held_by("other", "t2"), "me", seen, 127.0) == "acquire"


def test_lease_spec_counts_transitions_and_keeps_acquire_time() -> None:
    taken = lease_spec(held_by("other") | {"leaseTransitions": 3}, "me", 15, NOW)
    assert taken["holderIdentity"] == "me"
    assert taken["leaseTransitions"] == 4
    assert taken["acquireTime"] == taken["renewTime"] == "2026-01-01T12:00:00.123456Z"
    renewed = lease_spec(taken | {"acquireTime": "earlier"}, "me", 15, NOW)
    assert renewed["acquireTime"] == "earlier" and renewed["leaseTransitions"] == 4
    assert lease_spec(None, "me", 15, NOW)["leaseTransitions"] == 0
    assert micro_time(NOW) == "2026-01-01T12:00:00.123456Z"
