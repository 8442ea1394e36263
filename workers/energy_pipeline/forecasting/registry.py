"""The model registry: the `models` table, written by `train`, read by inference.

A version is one trained model of one site: its serialised artifact (JSON with the
LightGBM model strings inside, `models.load_model` reads it back), the parameters and
training window that produced it (`params.model` is its kind, `default` or `seed`), the
metrics of the backtest run before it was stored (and of the report's 80/20 split,
`metrics.report_split`), and its feature importances (`feature_importances`: a list of
{feature, gain}, each feature's share of its boosters' split gain, largest first). At
most one version per site is promoted (a unique partial index enforces it); inference
serves exactly the promoted ones, whatever their kind.

Promotion rule ("not worse than the current one"), within the pipeline's model kind
(FORECAST_MODEL, see `kinds`):
- a candidate of another kind than the pipeline serves is stored, never promoted;
- a candidate replaces a promoted version of another kind (the pipeline was switched);
- against a promoted version of its own kind, the candidate is promoted when its
  backtest MASE is at most the promoted version's recorded backtest MASE.
`force` promotes whatever the rule says. MASE is the model's MAE over that of seasonal
naive 168 h on the same points, so it is scale-free and comparable across backtest
periods. Re-scoring the promoted model on the candidate's backtest period instead would
not be fair: with regular retraining it was trained on most of that period, and in-sample
errors would make it look better than it is.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg2.extensions

from energy_pipeline.forecasting.kinds import DEFAULT_KIND, kind_of

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
    # As `register_model` wrote them ({feature, gain}); the reads below leave them out.
    feature_importances: tuple[Mapping[str, Any], ...] = ()

    @property
    def kind(self) -> str:
        return kind_of(self.params)


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
    candidate: Mapping[str, Any],
    incumbent: Mapping[str, Any] | None,
    force: bool = False,
    *,
    kind: str = DEFAULT_KIND,
    incumbent_kind: str = DEFAULT_KIND,
    serving: str | None = None,
) -> Decision:
    """Whether a `kind` candidate with backtest `candidate` metrics replaces the promoted
    model (`incumbent` metrics, of `incumbent_kind`) of a pipeline serving `serving` models
    (None: the candidate's kind)."""
    if force:
        return Decision(True, "promotion forced")
    if serving is not None and kind != serving:
        return Decision(
            False, f"a {kind} model, and the pipeline serves {serving} models "
            "(FORECAST_MODEL): stored for comparison only",
        )
    if incumbent is None:
        return Decision(True, "no promoted model for this site yet")
    if incumbent_kind != kind:
        return Decision(
            True, f"the pipeline serves {kind} models now: replaces the promoted "
            f"{incumbent_kind} model without comparing their backtests",
        )
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


# What inference and the promotion rule read. Not the feature importances: only `train`
# writes them (the read API and the dashboards read them), so an inference pod of this
# version still loads models from a schema not yet migrated to 5.
_COLUMNS = (
    "version, site_id, created_at, trained_on_until, params, metrics, promoted, promoted_at"
)


def _record(
    row: tuple[Any, ...], artifact: str = "", shares: Sequence[Mapping[str, Any]] = ()
) -> ModelRecord:
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
        feature_importances=tuple(shares),
    )


def importance_rows(shares: Sequence[tuple[str, float]]) -> list[dict[str, Any]]:
    """(feature, gain share) pairs as the `feature_importances` column holds them."""
    return [{"feature": name, "gain": float(gain)} for name, gain in shares]


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
    feature_importances: Sequence[tuple[str, float]] = (),
    serving: str | None = None,
) -> tuple[ModelRecord, Decision]:
    """Store a new version and promote it if the rule allows, in the caller's transaction.

    The candidate's kind is `params["model"]`; `serving` is the kind the pipeline serves
    (FORECAST_MODEL; None: the candidate's). The per-site advisory lock makes concurrent
    registrations for one site take turns, so each compares itself with what is promoted
    when it commits.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK_NAMESPACE + site_id,))
        cur.execute("SELECT now()")
        now = cur.fetchone()[0]
    incumbent = promoted_model(conn, site_id, lock=True)
    decision = promotion_decision(
        metrics,
        incumbent.metrics if incumbent else None,
        force,
        kind=kind_of(params),
        incumbent_kind=incumbent.kind if incumbent else DEFAULT_KIND,
        serving=serving,
    )
    version = new_version(site_id, artifact, now)
    shares = importance_rows(feature_importances)
    with conn.cursor() as cur:
        if decision.promote:
            cur.execute(
                "UPDATE models SET promoted = false WHERE promoted AND site_id = %s", (site_id,)
            )
        cur.execute(
            f"""INSERT INTO models (version, site_id, created_at, trained_on_until, params,
                                    metrics, artifact, promoted, promoted_at,
                                    feature_importances)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
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
                json.dumps(json_safe(shares)),
            ),
        )
        record = _record(cur.fetchone(), artifact, shares)
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
