"""Pipeline workers (`energy-pipeline <command>`) as managed local processes.

Used by the tests and by `make demo`: the same commands and environment variables that the
operator renders into Deployments.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from energy_harness.localstack.process import ManagedProcess, ServiceError, free_port, wait_until


def energy_pipeline_argv(command: list[str]) -> list[str]:
    """Run the CLI of the interpreter we are in, installed or not."""
    installed = Path(sys.executable).with_name("energy-pipeline")
    if installed.exists():
        return [str(installed), *command]
    found = shutil.which("energy-pipeline")
    if found:
        return [found, *command]
    return [sys.executable, "-m", "energy_pipeline.cli", *command]


@dataclass
class WorkerProcess:
    name: str
    command: list[str]
    env: Mapping[str, str]
    log_dir: Path
    http_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = field(default=None, init=False)

    def start(self, wait_ready: bool = True, timeout: float = 60) -> WorkerProcess:
        env = {**self.env, "HTTP_PORT": str(self.http_port)}
        self.process = ManagedProcess(
            name=self.name,
            argv=energy_pipeline_argv(self.command),
            log_path=self.log_dir / f"{self.name}.log",
            env=env,
            # SIGTERM is the graceful stop the workers implement (as Kubernetes sends it).
            stop_signal=signal.SIGTERM,
        )
        self.process.start()
        if wait_ready:
            wait_until(
                self.healthy, timeout=timeout, what="waiting for /healthz", process=self.process
            )
        return self

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=3) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def healthy(self) -> bool:
        return self._get("/healthz")[0] == 200

    def ready(self) -> tuple[bool, str]:
        status, body = self._get("/readyz")
        return status == 200, json.loads(body or b"{}").get("detail", "")

    def metrics_text(self) -> str:
        return self._get("/metrics")[1].decode()

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in (labels or {}).items()
                ):
                    total += sample.value
        return total

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def wait(self, timeout: float) -> int:
        """Wait for the worker to exit by itself; its exit code."""
        assert self.process is not None
        wait_until(
            lambda: not self.process.alive(),
            timeout=timeout,  # type: ignore[union-attr]
            what=f"waiting for {self.name} to finish",
        )
        code = self.process.returncode()
        assert code is not None
        return code

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.process is not None
        wait_until(
            lambda: self.ready()[0],
            timeout=timeout,
            what="waiting for /readyz",
            process=self.process,
        )

    def kill(self) -> None:
        """kill -9: no chance to flush, acknowledge or commit anything."""
        if self.process is not None:
            self.process.kill()

    def stop(self, timeout: float = 60) -> int | None:
        """Graceful stop; returns the exit code."""
        if self.process is None:
            return None
        self.process.stop(timeout)
        return self.process.returncode()

    def require_alive(self) -> None:
        if not self.alive():
            assert self.process is not None
            raise self.process.failure("worker exited")


def service_env(
    kafka_bootstrap: str, database_url: str, mqtt_host: str, mqtt_port: int, **extra: str
) -> dict[str, str]:
    """The environment variables the operator sets on every worker."""
    import os

    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TZ"}}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "DATABASE_URL": database_url,
            "MQTT_HOST": mqtt_host,
            "MQTT_PORT": str(mqtt_port),
            **extra,
        }
    )
    return env


__all__ = ["ServiceError", "WorkerProcess", "energy_pipeline_argv", "service_env"]
