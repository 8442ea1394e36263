"""`energy-pipeline operator`: the EnergyPipeline operator with leader election and a health
endpoint, as its Deployment runs it.

Order of events: serve /healthz at once (a follower must look alive too); wait for the Lease;
then run kopf in the main thread (it installs the SIGTERM handling) while a thread renews the
Lease. Losing the Lease stops kopf and exits 1, so Kubernetes restarts the pod as a follower.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import threading
from types import FrameType

from energy_pipeline.core.errors import CommandError
from energy_pipeline.core.observability import HealthServer, Heartbeat
from energy_pipeline.core.settings import environment_help, load
from prometheus_client import Gauge

from energy_operator.settings import OperatorSettings

log = logging.getLogger("energy_operator.command")

LEADER = Gauge("energy_operator_leader", "1 while this replica holds the Lease and reconciles")


def _drop_kopf_extras(record: logging.LogRecord) -> bool:
    """kopf attaches its whole settings object to per-object records; JSON lines get huge."""
    record.__dict__.pop("settings", None)
    record.__dict__.pop("k8s_skip", None)
    return True


def run(args: argparse.Namespace) -> int:
    import kopf
    from kubernetes.config import ConfigException

    from energy_operator import handlers
    from energy_operator.election import LeaderElector
    from energy_operator.kube import Kube, new_api_client
    from energy_operator.settings import identity

    settings = load(OperatorSettings)
    # `kill -USR1 <pid>` prints every thread's stack: the way to see what a hung operator does.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    logging.getLogger().setLevel(settings.log_level.upper())
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_kopf_extras)
    heartbeat = Heartbeat(stale_after=60)
    role = {"value": "starting"}
    health = HealthServer(settings.http_port, heartbeat, lambda: (True, role["value"])).start()
    try:
        kube = Kube(new_api_client())
    except ConfigException as exc:
        health.stop()
        raise CommandError(
            f"no Kubernetes cluster to reconcile in: {exc}",
            fix="run it in a pod, or set KUBECONFIG to a kubeconfig file",
        ) from exc
    handlers.RUNTIME.settings = settings
    handlers.RUNTIME.kube = kube
    handlers.RUNTIME.heartbeat = heartbeat

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    lost = threading.Event()
    kopf_stop = threading.Event()
    # kopf waits for a threading.Event stop flag in an executor thread, and asyncio waits for
    # that thread at exit: however kopf stops (SIGTERM), the flag must end up set.
    handlers.RUNTIME.on_cleanup.append(kopf_stop.set)
    try:
        if settings.leader_election:
            elector = LeaderElector(
                kube, settings.resolved_lease_namespace(), settings.lease_name, identity(),
                lease_duration=settings.lease_duration_s, renew_period=settings.renew_period_s,
            )
            role["value"] = "standby"
            if not elector.wait_for_leadership(stop, heartbeat.beat):
                return 0
            handlers.RUNTIME.on_cleanup.append(elector.release)

            def renew() -> None:
                elector.keep_renewing(kopf_stop, lost)
                kopf_stop.set()

            threading.Thread(target=renew, name="lease renewal", daemon=True).start()
        role["value"] = "leader"
        LEADER.set(1)
        # kopf takes over SIGTERM/SIGINT from here on.
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if stop.is_set():
            return 0
        namespaces = settings.namespaces
        kopf.run(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            stop_flag=kopf_stop,
        )
    finally:
        LEADER.set(0)
        kopf_stop.set()
        health.stop()
    if lost.is_set():
        log.error("exiting: the Lease was lost, another replica may be leading now")
        return 1
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "operator",
        help="the EnergyPipeline operator (kopf, leader election, /healthz on HTTP_PORT)",
        description=(
            "Reconciles EnergyPipeline resources (Deployments, the training CronJob, Kafka "
            "topics, database migrations) in WATCH_NAMESPACES or OPERATOR_NAMESPACE (empty: "
            "all namespaces), with the cluster credentials of its pod or, outside one, of "
            "KUBECONFIG (or ~/.kube/config). With LEADER_ELECTION only the replica holding "
            "the Lease reconciles; /healthz, /readyz (leader or standby) and /metrics on "
            "HTTP_PORT. Runs until SIGTERM or Ctrl-C."
        ),
        epilog=environment_help(OperatorSettings),
    )
    p.set_defaults(func=run)
