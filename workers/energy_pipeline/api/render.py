"""Content negotiation and the JSON / CSV bodies of a page (pure)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from energy_pipeline.api.paging import iso
from energy_pipeline.api.spec import CSV_TYPE, JSON_TYPE, Table

# Server preference when the client likes both equally: JSON, the documented default.
_OFFERS = (("json", JSON_TYPE), ("csv", CSV_TYPE))


class NotAcceptable(Exception):
    pass


def _ranges(accept: str) -> list[tuple[str, float]]:
    out = []
    for part in accept.split(","):
        media, *options = (piece.strip() for piece in part.split(";"))
        if not media:
            continue
        quality = 1.0
        for option in options:
            key, _, value = option.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 1.0  # a malformed weight is ignored, as most servers do
                if math.isnan(quality):
                    quality = 1.0
        out.append((media.lower(), quality))
    return out


def _quality(offer: str, ranges: list[tuple[str, float]]) -> float:
    """q of the most specific range matching `offer` (RFC 9110 12.5.1); 0 if none does."""
    kind = offer.split("/")[0]
    best_rank, best_q = -1, 0.0
    for media, quality in ranges:
        rank = 2 if media == offer else 1 if media == f"{kind}/*" else 0 if media == "*/*" else -1
        if rank > best_rank:
            best_rank, best_q = rank, quality
    return best_q if best_rank >= 0 else 0.0


def negotiate(format_param: str | None, accept: str | None) -> str:
    """"json" or "csv": `?format=` wins; then the Accept header; JSON when nothing is said."""
    if format_param:
        return format_param
    if not accept or not accept.strip():
        return "json"
    ranges = _ranges(accept)
    if not ranges:
        return "json"
    scored = [(_quality(media, ranges), -i, name) for i, (name, media) in enumerate(_OFFERS)]
    quality, _, name = max(scored)
    if quality <= 0:
        raise NotAcceptable(
            f"Accept {accept[:200]!r} allows neither {JSON_TYPE} nor {CSV_TYPE} "
            "(or use ?format=json|csv)"
        )
    return name


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; ingest rejects non-finite values anyway
    return value


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, bool):
        return "true" if value else "false"  # as JSON spells it, not Python
    if isinstance(value, Mapping | list):  # a JSON column (a model's metrics): its JSON text
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same double
    return str(value)


def json_page(
    table: Table, rows: Sequence[Sequence[Any]], envelope: Mapping[str, Any], next_link: str | None
) -> bytes:
    names = table.names
    body = {
        **{k: _json_value(v) for k, v in envelope.items()},
        "data": [{n: _json_value(v) for n, v in zip(names, row, strict=True)} for row in rows],
        "next": next_link,
    }
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def csv_page(table: Table, rows: Sequence[Sequence[Any]], envelope: Mapping[str, Any]) -> bytes:
    context = [_csv_value(envelope[name]) for name in table.csv_context]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180 line ends
    writer.writerow(table.csv_header)
    for row in rows:
        writer.writerow([*context, *(_csv_value(v) for v in row)])
    return out.getvalue().encode()


def problem(
    status: int, title: str, detail: str, errors: Sequence[Mapping[str, str]] = ()
) -> bytes:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "detail": detail}
    if errors:
        body["errors"] = list(errors)
    return json.dumps(body, separators=(",", ":")).encode()
