"""Names and labels of an EnergyPipeline's children (a fixed contract: charts, dashboards and
people look them up by these names)."""

from __future__ import annotations

from dataclasses import dataclass

FIELD_MANAGER = "energy-operator"
MANAGED_BY = "energy-operator"
PART_OF = "energy-pipeline"
APP_NAME = "energy-pipeline"

# Pod template annotation: a digest of the configuration a worker reads, so a change rolls it.
CONFIG_HASH_ANNOTATION = "energy.pipeline.dev/config-hash"
# On Job <name>-train-first: which of the operator's tries it is (the retry backoff grows).
FIRST_TRAINING_ATTEMPT_ANNOTATION = "energy.pipeline.dev/first-training-attempt"
# The Prometheus Operator's PodMonitor: a child only while its CRD is in the cluster.
POD_MONITOR_API = "monitoring.coreos.com/v1"
POD_MONITOR = "PodMonitor"
# kopf's finalizer, present only while spec.kafka.deleteTopicsOnDelete is true.
FINALIZER = "energy.pipeline.dev/delete-topics"
# kopf's bookkeeping annotations (last handled spec, handler progress) use this prefix.
ANNOTATION_PREFIX = "energy.pipeline.dev"

HTTP_PORT = 8080
GRPC_PORT = 50051
API_PORT = 8000
CLUSTER_DOMAIN = "cluster.local"

# Always deployed.
DEPLOYMENT_WORKERS = ("bridge", "ingest", "inference")
# Deployed only while their spec section says `enabled: true` (the read API: spec.api).
OPTIONAL_WORKERS = ("api",)


@dataclass(frozen=True)
class ChildNames:
    pipeline: str

    def deployment(self, worker: str) -> str:
        return f"{self.pipeline}-{worker}"

    def pdb(self, worker: str) -> str:
        return f"{self.pipeline}-{worker}"

    @property
    def config(self) -> str:
        return f"{self.pipeline}-config"

    @property
    def inference_service(self) -> str:
        return f"{self.pipeline}-inference"

    @property
    def api_service(self) -> str:
        return f"{self.pipeline}-api"

    @property
    def api_tokens(self) -> str:
        """The read API's tokens Secret, made by the operator when spec.api names none."""
        return f"{self.pipeline}-api-tokens"

    @property
    def train(self) -> str:
        return f"{self.pipeline}-train"

    @property
    def first_training(self) -> str:
        """The Job the operator starts once, when enough history is stored and no model is."""
        return f"{self.pipeline}-train-first"

    @property
    def pod_monitor(self) -> str:
        return self.pipeline

    @property
    def service_account(self) -> str:
        return f"{self.pipeline}-workers"


def selector_labels(pipeline: str, component: str) -> dict[str, str]:
    """Immutable once a Deployment exists: only what identifies the pods."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": pipeline,
        "app.kubernetes.io/component": component,
    }


def labels(pipeline: str, component: str) -> dict[str, str]:
    return {
        **selector_labels(pipeline, component),
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def instance_selector(pipeline: str) -> str:
    """Label selector of every child of one pipeline."""
    return (
        f"app.kubernetes.io/instance={pipeline},"
        f"app.kubernetes.io/managed-by={MANAGED_BY}"
    )
