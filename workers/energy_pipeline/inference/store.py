"""The promoted models, loaded from the registry and hot-swapped when a new one is promoted.

`refresh()` polls the registry for {site: promoted version} (cheap: no artifacts), loads
only versions it does not hold yet, and then replaces its whole site -> model mapping in
one assignment. A request looks its model up once, at its start, and keeps that object, so
a swap never affects a request in flight and never fails one: requests started before the
swap finish on the old model, later ones use the new one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from energy_pipeline.db.connect import connect, worker_name
from energy_pipeline.forecasting.models import Forecaster, load_model
from energy_pipeline.forecasting.registry import ModelRecord, promoted_versions, read_models

log = logging.getLogger("energy_pipeline.inference.store")


@dataclass(frozen=True)
class LoadedModel:
    version: str
    site_id: str | None
    created_at: datetime
    trained_on_until: datetime | None
    promoted_at: datetime | None
    metrics: Mapping[str, Any]
    model: Forecaster

    @property
    def kind(self) -> str:
        """`default`, `seed`, ...: the artifact's own word, whatever the registry row says."""
        return self.model.kind

    @classmethod
    def from_record(cls, record: ModelRecord) -> LoadedModel:
        return cls(
            version=record.version,
            site_id=record.site_id,
            created_at=record.created_at,
            trained_on_until=record.trained_on_until,
            promoted_at=record.promoted_at,
            metrics=dict(record.metrics),
            model=load_model(record.artifact),
        )


@dataclass(frozen=True)
class RefreshResult:
    loaded: tuple[str, ...]  # versions newly loaded
    dropped: tuple[str, ...]  # versions no longer promoted
    failed: tuple[str, ...]  # versions whose artifact could not be loaded
    seconds: float

    @property
    def changed(self) -> bool:
        return bool(self.loaded or self.dropped)


class ModelStore:
    """site_id -> promoted model; a NULL-site model serves sites without their own."""

    def __init__(
        self, database_url: str, *, application_name: str = worker_name("inference")
    ) -> None:
        self.database_url = database_url
        self.application_name = application_name
        self._models: dict[str | None, LoadedModel] = {}
        # Versions that failed to load are not retried until the registry changes them.
        self._broken: set[str] = set()

    def get(self, site_id: str) -> LoadedModel | None:
        models = self._models  # one read: the mapping may be replaced meanwhile
        return models.get(site_id) or models.get(None)

    def newest(self) -> LoadedModel | None:
        models = list(self._models.values())
        if not models:
            return None
        return max(models, key=lambda m: (m.promoted_at or m.created_at, m.version))

    def models(self) -> dict[str | None, LoadedModel]:
        return dict(self._models)

    @property
    def loaded(self) -> bool:
        return bool(self._models)

    def refresh(self) -> RefreshResult:
        """Bring the loaded models in line with the registry; raises psycopg2.Error."""
        started = time.perf_counter()
        conn = connect(self.database_url, application_name=self.application_name, readonly=True)
        try:
            with conn:
                wanted = promoted_versions(conn)
                current = {site: m.version for site, m in self._models.items()}
                missing = [
                    v
                    for site, v in wanted.items()
                    if current.get(site) != v and v not in self._broken
                ]
                records = read_models(conn, missing) if missing else []
        finally:
            conn.close()
        fresh: dict[str, LoadedModel] = {}
        failed: list[str] = []
        for record in records:
            try:
                fresh[record.version] = LoadedModel.from_record(record)
            except Exception:
                # A bad artifact must not take down the models that do work.
                log.exception("model artifact failed to load", extra={"version": record.version})
                self._broken.add(record.version)
                failed.append(record.version)
        models: dict[str | None, LoadedModel] = {}
        for site, version in wanted.items():
            if version in fresh:
                models[site] = fresh[version]
            elif current.get(site) == version or site in self._models:
                # Unchanged, or the new version failed to load: keep serving what we have.
                models[site] = self._models[site]
        dropped = tuple(
            m.version for site, m in self._models.items() if site not in wanted
        )
        self._models = models
        return RefreshResult(
            loaded=tuple(fresh),
            dropped=dropped,
            failed=tuple(failed),
            seconds=time.perf_counter() - started,
        )
