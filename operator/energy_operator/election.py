"""Leader election on a coordination.k8s.io Lease, as client-go does it.

Two operator replicas are safe because only the holder of the Lease runs kopf at all; the
other waits, serving only its liveness endpoint. A holder that cannot renew within the
renew deadline stops reconciling and exits (its pod restarts as a follower), so two leaders
never act at once for longer than the clock skew-free lease arithmetic allows.

Expiry is judged on the follower's own monotonic clock: a record is stale when it has not
changed for leaseDurationSeconds since this process first saw it. Comparing renewTime with
the local wall clock would trust the clocks of two machines to agree.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from energy_operator.kube import Kube, KubeError

log = logging.getLogger("energy_operator.election")

API_VERSION = "coordination.k8s.io/v1"


def micro_time(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Observation:
    """The last Lease record seen and when (monotonic) it last changed."""

    record: tuple[str, str] | None = None  # (holderIdentity, renewTime)
    changed_at: float = 0.0

    def see(self, spec: Mapping[str, Any], now: float) -> None:
        record = (str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""))
        if record != self.record:
            self.record = record
            self.changed_at = now


def decide(spec: Mapping[str, Any] | None, me: str, observation: Observation, now: float) -> str:
    """'create' (no Lease), 'renew' (ours), 'acquire' (free or expired) or 'wait'."""
    if spec is None:
        return "create"
    holder = spec.get("holderIdentity") or ""
    if holder == me:
        return "renew"
    if not holder:
        return "acquire"
    duration = float(spec.get("leaseDurationSeconds") or 15)
    if now - observation.changed_at >= duration:
        return "acquire"
    return "wait"


def lease_spec(previous: Mapping[str, Any] | None, me: str, duration: int, now: datetime
               ) -> dict[str, Any]:
    previous = previous or {}
    taking_over = previous.get("holderIdentity") != me
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": duration,
        "acquireTime": micro_time(now) if taking_over else previous.get("acquireTime",
                                                                         micro_time(now)),
        "renewTime": micro_time(now),
        "leaseTransitions": int(previous.get("leaseTransitions") or 0) + (
            1 if taking_over and previous.get("holderIdentity") else 0),
    }


@dataclass
class LeaderElector:
    kube: Kube
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_period: float = 5.0
    clock: Callable[[], float] = time.monotonic
    observation: Observation = field(default_factory=Observation)
    last_renewed: float | None = None
    released: bool = False

    @property
    def renew_deadline(self) -> float:
        """Give up leading well before a follower may take over (client-go: 2/3 of it)."""
        return self.lease_duration * 2 / 3

    def try_acquire_or_renew(self) -> bool:
        if self.released:  # after a hand-over, never take the Lease back
            return False
        now = self.clock()
        lease = self.kube.get(API_VERSION, "Lease", self.namespace, self.name)
        spec = (lease or {}).get("spec") or {}
        if lease is not None:
            self.observation.see(spec, now)
        action = decide(spec if lease is not None else None, self.identity, self.observation, now)
        if action == "wait":
            return False
        body = {
            "apiVersion": API_VERSION,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": lease_spec(spec, self.identity, round(self.lease_duration),
                               datetime.now(UTC)),
        }
        try:
            if action == "create":
                self.kube.create(body)
            else:
                body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
                self.kube.replace(body)
        except KubeError as exc:
            if exc.status in (409, 422):  # someone else wrote first: not ours this round
                return False
            raise
        if action != "renew":
            log.info("acquired leadership", extra={"lease": f"{self.namespace}/{self.name}",
                                                    "identity": self.identity})
        self.last_renewed = now
        return True

    def wait_for_leadership(self, stop: threading.Event, beat: Callable[[], None]) -> bool:
        """Block until leading (True) or `stop` is set (False)."""
        logged = False
        while not stop.is_set():
            beat()
            try:
                if self.try_acquire_or_renew():
                    return True
            except (KubeError, OSError) as exc:
                log.warning("lease unreachable", extra={"error": str(exc)})
            if not logged:
                holder = self.observation.record[0] if self.observation.record else "?"
                log.info("waiting for leadership", extra={
                    "lease": f"{self.namespace}/{self.name}", "holder": holder})
                logged = True
            stop.wait(self.renew_period / 2)
        return False

    def keep_renewing(self, stop: threading.Event, lost: threading.Event,
                      beat: Callable[[], None] | None = None) -> None:
        """Renew until `stop`; on failure past the renew deadline, set `lost` and return."""
        while not stop.wait(self.renew_period):
            if self.released:
                return
            try:
                if self.try_acquire_or_renew():
                    if beat:
                        beat()
                    continue
            except (KubeError, OSError) as exc:
                log.warning("lease renewal failed", extra={"error": str(exc)})
            if self.last_renewed is None or self.clock() - self.last_renewed > self.renew_deadline:
                log.error("lost leadership", extra={"lease": f"{self.namespace}/{self.name}"})
                lost.set()
                return

    def release(self) -> None:
        """Hand the Lease over at once instead of letting a follower wait for it to expire."""
        self.released = True
        # A renewal already in flight may bump the resourceVersion under us: read and retry.
        for _ in range(5):
            try:
                lease = self.kube.get(API_VERSION, "Lease", self.namespace, self.name)
                if lease is None or (lease.get("spec") or {}).get("holderIdentity") != (
                    self.identity
                ):
                    return
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                self.kube.replace(lease)
                log.info("released leadership", extra={"lease": f"{self.namespace}/{self.name}"})
                return
            except KubeError as exc:
                if exc.status != 409:
                    log.warning("could not release the lease", extra={"error": str(exc)})
                    return
            except OSError as exc:
                log.warning("could not release the lease", extra={"error": str(exc)})
                return
            time.sleep(0.2)
