"""Prometheus metrics and health endpoints served by every worker on one small HTTP port.

/metrics  Prometheus text format
/healthz  liveness: the worker's main loop has made progress recently
/readyz   readiness: the worker is connected to what it needs (a check it supplies)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from energy_pipeline.core.errors import port_in_use


class Heartbeat:
    """The main loop beats; liveness fails when it has not beaten for `stale_after` seconds."""

    def __init__(self, stale_after: float = 60.0) -> None:
        self.stale_after = stale_after
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self._last

    def alive(self) -> bool:
        return self.age() < self.stale_after


class HealthServer:
    def __init__(
        self,
        port: int,
        heartbeat: Heartbeat,
        ready: Callable[[], tuple[bool, str]],
        host: str = "0.0.0.0",
        variable: str = "HTTP_PORT",
    ) -> None:
        """Raises CommandError naming `variable` (the setting that chose `port`) when the port
        cannot be bound, e.g. another worker on this machine has it."""
        self.heartbeat = heartbeat
        self.ready = ready
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = server.heartbeat.alive()
                    body = {
                        "status": "ok" if ok else "stalled",
                        "loop_age_s": server.heartbeat.age(),
                    }
                    self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
                elif path == "/readyz":
                    ok, detail = server.ready()
                    body = {"status": "ready" if ok else "not ready", "detail": detail}
                    self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
                else:
                    self._send(404, b'{"error": "not found"}', "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds would drown the worker's own logs

        try:
            self._httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise port_in_use(variable, port, exc) from exc
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
