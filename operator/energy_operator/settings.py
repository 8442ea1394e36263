"""The operator's own settings, from environment variables (as the workers' are)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from energy_pipeline.core.settings import env

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    log_level: str = env("LOG_LEVEL", "INFO", doc="DEBUG, INFO, WARNING or ERROR")
    http_port: int = env("HTTP_PORT", 8080, doc="port of /healthz, /readyz and /metrics",
                         minimum=0)
    operator_namespace: str = env(
        "OPERATOR_NAMESPACE", "",
        doc="namespace whose EnergyPipelines are reconciled; empty: all namespaces",
    )
    watch_namespaces: tuple[str, ...] = env(
        "WATCH_NAMESPACES", (),
        doc="comma-separated namespaces to reconcile; overrides OPERATOR_NAMESPACE",
    )
    reconcile_interval_s: float = env(
        "RECONCILE_INTERVAL_S", 30.0,
        doc="how often every pipeline is checked for drift (deleted or edited children)",
        minimum=1,
    )
    leader_election: bool = env(
        "LEADER_ELECTION", True, doc="hold a Lease so that only one replica reconciles",
    )
    lease_name: str = env("LEADER_ELECTION_LEASE_NAME", "energy-operator", doc="Lease name")
    lease_namespace: str = env(
        "LEADER_ELECTION_NAMESPACE", "",
        doc="namespace of the Lease; empty: POD_NAMESPACE, the pod's own, OPERATOR_NAMESPACE, "
        "else default",
    )
    lease_duration_s: float = env(
        "LEADER_ELECTION_LEASE_S", 15.0,
        doc="a follower takes over after the leader has not renewed for this long", minimum=2,
    )
    renew_period_s: float = env(
        "LEADER_ELECTION_RENEW_S", 5.0, doc="how often the leader renews", minimum=0.5,
    )

    @property
    def namespaces(self) -> list[str]:
        """Namespaces to watch; empty means cluster-wide."""
        if self.watch_namespaces:
            return list(self.watch_namespaces)
        return [self.operator_namespace] if self.operator_namespace else []

    def resolved_lease_namespace(self) -> str:
        if self.lease_namespace:
            return self.lease_namespace
        if os.environ.get("POD_NAMESPACE"):  # downward API, as the chart sets it
            return os.environ["POD_NAMESPACE"]
        if SERVICE_ACCOUNT_NAMESPACE.exists():
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        return self.operator_namespace or "default"


def identity() -> str:
    """Unique per process: a restarted pod must not mistake the old holder's lease for its own."""
    host = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host}_{uuid.uuid4().hex[:8]}"
