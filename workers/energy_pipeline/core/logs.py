"""Structured logging: one JSON object per line, always carrying the pipeline name."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, pipeline: str, component: str) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "pipeline": self.pipeline,
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(component: str, pipeline: str | None = None, level: str = "INFO") -> None:
    """Route all logging to stdout as JSON lines; `pipeline` defaults to $PIPELINE_NAME."""
    handler = logging.StreamHandler(sys.stdout)
    pipeline = pipeline or os.environ.get("PIPELINE_NAME", "local")
    handler.setFormatter(JsonFormatter(pipeline, component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", level).upper())
