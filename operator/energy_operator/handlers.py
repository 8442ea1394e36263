"""kopf handlers: thin. Each one calls `reconcile` (or the finalizer's topic deletion).

Run with `energy-pipeline operator` (leader election, health endpoint) or, for a single
replica during development, `kopf run -m energy_operator.handlers --all-namespaces`.

Drift repair is a periodic pass started at startup rather than a `@kopf.timer`: kopf puts a
finalizer on every object that has a timer, and a finalizer makes deletion wait for the
operator. Here the only finalizer is the one spec.kafka.deleteTopicsOnDelete asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from energy_pipeline.core.observability import Heartbeat
from energy_pipeline.core.settings import load
from prometheus_client import Counter, Gauge, Histogram

from energy_operator import crd
from energy_operator.kube import Kube, new_api_client
from energy_operator.naming import ANNOTATION_PREFIX, FINALIZER
from energy_operator.reconcile import Outcome, delete_pipeline_topics, reconcile
from energy_operator.settings import OperatorSettings
from energy_operator.status import is_settling

log = logging.getLogger("energy_operator.handlers")

RECONCILES = Counter("energy_operator_reconciles_total", "Reconcile passes", ["trigger", "result"])
RECONCILE_SECONDS = Histogram("energy_operator_reconcile_seconds", "Duration of one pass")
PIPELINES = Gauge("energy_operator_pipelines", "EnergyPipelines this operator reconciles")
# A pipeline still settling (rollout, transient trouble) is looked at again this soon.
SETTLE_S = 3.0
RESOURCE = (crd.GROUP, crd.VERSION, crd.PLURAL)


def _adopt(children: list[dict[str, Any]], owner: Mapping[str, Any]) -> None:
    """Owner references (so deletion cascades), namespace and the owner's labels."""
    kopf.adopt(children, owner=dict(owner))  # type: ignore[arg-type]


@dataclass
class Runtime:
    """What the handlers share; set up by `energy-pipeline operator` or at kopf startup."""

    settings: OperatorSettings | None = None
    kube: Kube | None = None
    heartbeat: Heartbeat | None = None
    on_cleanup: list[Callable[[], None]] = field(default_factory=list)
    due: dict[tuple[str, str], float] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Stopping: no new passes; cleanup waits for running ones before the Lease is handed
    # over, so a former leader never writes after a new one started.
    stopping: threading.Event = field(default_factory=threading.Event)
    running: int = 0
    idle: threading.Condition = field(default_factory=threading.Condition)

    def ensure(self) -> None:
        if self.settings is None:
            self.settings = load(OperatorSettings)
        if self.kube is None:
            self.kube = Kube(new_api_client())

    def reconcile(self, namespace: str, name: str, trigger: str) -> Outcome:
        assert self.kube is not None and self.settings is not None
        with self.idle:
            if self.stopping.is_set():
                return Outcome(skipped="stopping")
            self.running += 1
        started = time.monotonic()
        try:
            outcome = reconcile(self.kube, namespace, name, _adopt,
                                scope=self.settings.namespaces)
        except Exception:
            RECONCILES.labels(trigger, "error").inc()
            self.due[(namespace, name)] = time.monotonic() + SETTLE_S
            raise
        finally:
            with self.idle:
                self.running -= 1
                self.idle.notify_all()
        RECONCILE_SECONDS.observe(time.monotonic() - started)
        RECONCILES.labels(trigger, "ok").inc()
        settling = outcome.skipped is None and is_settling(outcome.status)
        delay = SETTLE_S if settling else self.settings.reconcile_interval_s
        self.due[(namespace, name)] = time.monotonic() + delay
        return outcome

    def drain(self, timeout: float) -> None:
        """Refuse new passes and wait (bounded) for the running ones to finish."""
        with self.idle:
            self.stopping.set()
            self.idle.wait_for(lambda: self.running == 0, timeout=timeout)


RUNTIME = Runtime()


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    RUNTIME.ensure()
    # kopf's bookkeeping in our own annotations; the status stays ours alone (its schema has
    # no room for kopf's progress records).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER
    # Our own Events say what changed; kopf's would add one per handler run.
    settings.posting.level = logging.WARNING
    # Discovery once at startup: no need to watch CRDs and namespaces (and no RBAC for it).
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 4
    # Leaves time for the cleanup handler to hand the Lease over.
    settings.process.ultimate_exiting_timeout = 30
    RUNTIME.tasks = [asyncio.create_task(_drift_loop(), name="drift repair")]
    if RUNTIME.heartbeat is not None:
        RUNTIME.tasks.append(asyncio.create_task(_beat(RUNTIME.heartbeat), name="heartbeat"))


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for task in RUNTIME.tasks:
        task.cancel()
    for task in RUNTIME.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, RUNTIME.drain, 20.0)
    for fn in RUNTIME.on_cleanup:
        await loop.run_in_executor(None, fn)


@kopf.index(*RESOURCE)
def pipelines(namespace: str, name: str, **_: Any) -> dict[str, tuple[str, str]]:
    """Every EnergyPipeline in scope; the drift loop walks this (kopf drops deleted ones)."""
    return {"all": (namespace, name)}


@kopf.on.create(*RESOURCE, backoff=10)
@kopf.on.update(*RESOURCE, backoff=10)
@kopf.on.resume(*RESOURCE, backoff=10)
def reconcile_handler(namespace: str, name: str, reason: str, **_: Any) -> None:
    RUNTIME.reconcile(namespace, name, trigger=str(reason))


def delete_topics_requested(spec: Mapping[str, Any], **_: Any) -> bool:
    return bool((spec.get("kafka") or {}).get("deleteTopicsOnDelete"))


@kopf.on.delete(*RESOURCE, when=delete_topics_requested, backoff=10)
def delete_topics_handler(body: kopf.Body, **_: Any) -> None:
    """Runs only while deleteTopicsOnDelete is true, and so does kopf's finalizer."""
    assert RUNTIME.kube is not None
    try:
        delete_pipeline_topics(RUNTIME.kube, dict(body), scope=RUNTIME.settings.namespaces
                               if RUNTIME.settings else ())
    except Exception as exc:
        raise kopf.TemporaryError(f"could not delete the topics yet: {exc}", delay=10) from exc


async def _beat(heartbeat: Heartbeat) -> None:
    """Liveness proves kopf's event loop still turns, not merely that the process exists."""
    while True:
        heartbeat.beat()
        await asyncio.sleep(5)


async def _drift_loop() -> None:
    """Reconcile each pipeline when due: every RECONCILE_INTERVAL_S, sooner while settling."""
    loop = asyncio.get_running_loop()
    inflight: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def one(key: tuple[str, str]) -> None:
        try:
            await loop.run_in_executor(None, RUNTIME.reconcile, key[0], key[1], "drift")
        except Exception:
            log.exception("periodic reconcile failed", extra={"pipeline": "/".join(key)})
        finally:
            inflight.pop(key, None)

    while True:
        await asyncio.sleep(1.0)
        keys = set(_INDEX.get("all", ()) if _INDEX is not None else ())
        PIPELINES.set(len(keys))
        now = time.monotonic()
        for key in keys - set(inflight):
            due = RUNTIME.due.setdefault(key, now + (RUNTIME.settings.reconcile_interval_s
                                                     if RUNTIME.settings else 30.0))
            if due <= now:
                RUNTIME.due[key] = now + 3600  # until the pass itself schedules the next
                inflight[key] = asyncio.create_task(one(key), name=f"drift {key[0]}/{key[1]}")
        for key in set(RUNTIME.due) - keys:
            del RUNTIME.due[key]


_INDEX: kopf.Index[str, tuple[str, str]] | None = None


@kopf.on.startup()
async def capture_index(pipelines: kopf.Index[str, tuple[str, str]], **_: Any) -> None:
    """Keep kopf's live index of pipelines for the drift loop (it is updated in place)."""
    global _INDEX
    _INDEX = pipelines
