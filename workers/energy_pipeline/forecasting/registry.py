"""The model registry: the `models` table, written by `train`, read by inference.

A version is one trained model of one site: its serialised artifact (JSON with the
LightGBM model strings inside, `models.load_model` reads it back), the parameters and
training window that produced it, and the metrics of the backtest run before it was
stored. At most one version per site is promoted (a unique partial index enforces it);
inference serves exactly the promoted ones.

Promotion rule ("not worse than the current one"): the candidate is promoted when its
backtest MASE is at most the promoted version's recorded backtest MASE. MASE is the
model's MAE over that of seasonal naive 168 h on the same points, so it is scale-free
and comparable across backtest periods. Re-scoring the promoted model on the candidate's
backtest period instead would not be fair: with regular retraining it was trained on
most of that period, and in-sample errors would make it look better than it is.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg2.extensions

# Per-site advisory lock namespace, so two `train` runs for one site promote one at a time.
_LOCK_NAMESPACE = "energy-pipeline:models:"


@dataclass(frozen=True)
class ModelRecord:
    version: str
    site_id: str | None
    created_at: datetime
    trained_on_until: datetime | None
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]
    promoted: bool
    promoted_at: datetime | None
    artifact: str = ""


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def promotion_decision(
    candidate: Mapping[str, Any], incumbent: Mapping[str, Any] | None, force: bool = False
) -> Decision:
    """Whether a candidate with backtest `candidate` metrics replaces the promoted model."""
    if force:
        return Decision(True, "promotion forced")
    if incumbent is None:
        return Decision(True, "no promoted model for this site yet")
    theirs = _finite(incumbent.get("mase"))
    ours = _finite(candidate.get("mase"))
    if theirs is None:
        return Decision(True, "the promoted model has no backtest MASE to compare with")
    if ours is None:
        return Decision(False, "the candidate has no backtest MASE; the promoted model stays")
    # A relative epsilon: a retrain on identical data must count as "not worse".
    if ours <= theirs * (1 + 1e-9):
        return Decision(True, f"backtest MASE {ours:.4f} <= promoted {theirs:.4f}")
    return Decision(False, f"backtest MASE {ours:.4f} > promoted {theirs:.4f}")


def new_version(site_id: str, artifact: str, created_at: datetime) -> str:
    digest = hashlib.sha256(artifact.encode()).hexdigest()[:8]
    return f"{site_id}.{created_at.astimezone(UTC):%Y%m%dT%H%M%SZ}.{digest}"


_COLUMNS = (
    "version, site_id, created_at, trained_on_until, params, metrics, promoted, promoted_at"
)


def _record(row: tuple[Any, ...], artifact: str = "") -> ModelRecord:
    version, site_id, created_at, until, params, metrics, promoted, promoted_at = row[:8]
    return ModelRecord(
        version=version,
        site_id=site_id,
        created_at=created_at,
        trained_on_until=until,
        params=params or {},
        metrics=metrics or {},
        promoted=bool(promoted),
        promoted_at=promoted_at,
        artifact=artifact,
    )


def promoted_versions(conn: psycopg2.extensions.connection) -> dict[str | None, str]:
    """{site_id: version} of every promoted model (artifacts not read: this is polled)."""
    with conn.cursor() as cur:
        cur.execute("SELECT site_id, version FROM models WHERE promoted")
        return {site: version for site, version in cur.fetchall()}


def read_models(
    conn: psycopg2.extensions.connection, versions: list[str]
) -> list[ModelRecord]:
    """Full records, artifact included, of the given versions."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_COLUMNS}, artifact FROM models WHERE version = ANY(%s)", (versions,)
        )
        return [_record(row, row[8]) for row in cur.fetchall()]


def promoted_model(
    conn: psycopg2.extensions.connection, site_id: str, lock: bool = False
) -> ModelRecord | None:
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM models WHERE promoted AND site_id = %s"
            + (" FOR UPDATE" if lock else ""),
            (site_id,),
        )
        row = cur.fetchone()
    return _record(row) if row else None


def register_model(
    conn: psycopg2.extensions.connection,
    *,
    site_id: str,
    artifact: str,
    trained_on_until: datetime | None,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    force: bool = False,
) -> tuple[ModelRecord, Decision]:
    """Store a new version and promote it if the rule allows, in the caller's transaction.

    The per-site advisory lock makes concurrent registrations for one site take turns, so
    each compares itself with what is promoted when it commits.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK_NAMESPACE + site_id,))
        cur.execute("SELECT now()")
        now = cur.fetchone()[0]
    incumbent = promoted_model(conn, site_id, lock=True)
    decision = promotion_decision(metrics, incumbent.metrics if incumbent else None, force)
    version = new_version(site_id, artifact, now)
    with conn.cursor() as cur:
        if decision.promote:
            cur.execute(
                "UPDATE models SET promoted = false WHERE promoted AND site_id = %s", (site_id,)
            )
        cur.execute(
            f"""INSERT INTO models (version, site_id, created_at, trained_on_until, params,
                                    metrics, artifact, promoted, promoted_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                RETURNING {_COLUMNS}""",
            (
                version,
                site_id,
                now,
                trained_on_until,
                json.dumps(json_safe(params)),
                json.dumps(json_safe(metrics)),
                artifact,
                decision.promote,
                now if decision.promote else None,
            ),
        )
        record = _record(cur.fetchone(), artifact)
    return record, decision


def json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars as numbers, NaN/inf as null (jsonb rejects them),
    anything else unknown as its string."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if number.is_integer() and not isinstance(value, float) and "int" in type(value).__name__:
        return int(number)
    return number if math.isfinite(number) else None
